"""A dSprites-style generator with the exact factor grid of dSprites.

dSprites (Matthey et al. 2017) is every combination of 5 ground-truth factors:

====================  =====  ==============================
factor                count  values
====================  =====  ==============================
shape                 3      square, ellipse, heart
scale                 6      linspace(0.5, 1, 6)
orientation           40     linspace(0, 2π, 40) radians
pos_x                 32     linspace(0, 1, 32)
pos_y                 32     linspace(0, 1, 32)
====================  =====  ==============================

737,280 images of 64×64 binary pixels, indexed row-major in that order (shape
slowest, pos_y fastest), as in the original ``.npz``. The images are drawn
here procedurally, so nothing is downloaded; sprites look like, but are not
pixel-identical to, the original dataset.

For other sizes the 64×64 scene is supersampled and area-averaged (gray
levels at the edges). With ``channels=3`` each shape has its own colour
(square red, ellipse green, heart blue): "coloured dSprites".
"""

from __future__ import annotations

import numpy as np

FACTOR_NAMES = ("shape", "scale", "orientation", "pos_x", "pos_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPES = ("square", "ellipse", "heart")
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2.0 * np.pi, 40)
POSITIONS = np.linspace(0.0, 1.0, 32)
NUM_IMAGES = int(np.prod(FACTOR_SIZES))  # 737280

#: Side of the canvas the factors are defined on, in pixels.
CANVAS = 64
#: Half-extent of a sprite at scale 1, in canvas pixels.
SPRITE_RADIUS = 10.0
#: Sprite centres run over [POS_MIN, POS_MIN + POS_SPAN] canvas pixels.
POS_MIN = 14.0
POS_SPAN = 36.0
#: RGB colour of each shape in coloured (3-channel) mode.
SHAPE_COLOURS = np.array([[1.0, 0.3, 0.2], [0.2, 0.9, 0.3], [0.3, 0.5, 1.0]], dtype=np.float32)

_STRIDES = np.array(
    [int(np.prod(FACTOR_SIZES[i + 1 :])) for i in range(len(FACTOR_SIZES))], dtype=np.int64
)


def index_to_factors(indices) -> np.ndarray:
    """Flat indices ``[N]`` -> factor classes ``[N, 5]`` (int64)."""
    idx = np.asarray(indices, dtype=np.int64)
    if np.any(idx < 0) or np.any(idx >= NUM_IMAGES):
        raise IndexError(f"dSprites index out of range [0, {NUM_IMAGES})")
    return (idx[:, None] // _STRIDES[None, :]) % np.array(FACTOR_SIZES)[None, :]


def factors_to_index(factors) -> np.ndarray:
    """Factor classes ``[N, 5]`` -> flat indices ``[N]``."""
    f = np.asarray(factors, dtype=np.int64)
    return (f * _STRIDES[None, :]).sum(1)


def factor_values(factors) -> np.ndarray:
    """Factor classes ``[N, 5]`` -> values ``[N, 5]``: shape index, scale,
    orientation (radians), pos_x and pos_y in [0, 1]."""
    f = np.asarray(factors, dtype=np.int64)
    return np.stack(
        [
            f[:, 0].astype(np.float64),
            SCALES[f[:, 1]],
            ORIENTATIONS[f[:, 2]],
            POSITIONS[f[:, 3]],
            POSITIONS[f[:, 4]],
        ],
        axis=1,
    )


def _inside(shape: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Is the sprite-frame point (u right, v down; unit = radius) inside the shape?"""
    square = np.maximum(np.abs(u), np.abs(v)) <= 0.8
    ellipse = u**2 + (v / 0.5) ** 2 <= 1.0
    x, y = u * 1.15, -v * 1.15 + 0.1
    heart = (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0
    return np.where(shape == 0, square, np.where(shape == 1, ellipse, heart))


def render(factors, size: int = CANVAS, channels: int = 1) -> np.ndarray:
    """Draw sprites: factor classes ``[N, 5]`` -> float32 images ``[N, C, size, size]``
    in [0, 1]. At ``size=64`` gray, pixels are exactly 0 or 1."""
    f = np.asarray(factors, dtype=np.int64)
    n = f.shape[0]
    ss = max(1, -(-CANVAS // size))  # supersampling so that small sizes stay smooth
    fine = size * ss
    coords = (np.arange(fine, dtype=np.float64) + 0.5) * (CANVAS / fine)
    py, px = np.meshgrid(coords, coords, indexing="ij")
    vals = factor_values(f)
    shape = f[:, 0][:, None, None]
    scale = vals[:, 1][:, None, None] * SPRITE_RADIUS
    theta = vals[:, 2][:, None, None]
    cx = (POS_MIN + POS_SPAN * vals[:, 3])[:, None, None]
    cy = (POS_MIN + POS_SPAN * vals[:, 4])[:, None, None]
    dx, dy = px[None] - cx, py[None] - cy
    cos, sin = np.cos(theta), np.sin(theta)
    u = (cos * dx + sin * dy) / scale
    v = (-sin * dx + cos * dy) / scale
    mask = _inside(shape, u, v).astype(np.float32)
    if ss > 1:
        mask = mask.reshape(n, size, ss, size, ss).mean(axis=(2, 4))
    img = mask[:, None]
    if channels == 3:
        img = img * SHAPE_COLOURS[f[:, 0]][:, :, None, None]
    elif channels != 1:
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    return np.ascontiguousarray(img, dtype=np.float32)


def sample_factors(n: int, seed: int) -> np.ndarray:
    """``n`` factor combinations drawn uniformly (with replacement), reproducibly."""
    rng = np.random.default_rng(seed)
    return index_to_factors(rng.integers(0, NUM_IMAGES, size=n))
