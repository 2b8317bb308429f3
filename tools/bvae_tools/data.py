"""Training data sources: a folder of images, the dSprites generator, IDX files.

Every source is an :class:`ImageSource`: a length and ``batch(indices)``
returning float32 ``[N, C, H, W]`` in [0, 1] at the model's size. Folder and
IDX images are decoded once and kept in memory as uint8; dSprites images are
drawn on demand.
"""

from __future__ import annotations

import gzip
import json
import os
import struct
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from . import dsprites
from .errors import UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
DATA_KINDS = ("folder", "dsprites", "idx")
#: How a global brightness change is treated: kept (``none``) or normalised
#: away (``gain``: every image scaled to the training data's mean value).
ILLUMINATIONS = ("none", "gain")
#: Smallest image mean gain normalisation divides by, and the largest factor
#: it scales by (up or down): the runtime's ``MIN_GAIN_MEAN`` and ``MAX_GAIN``
#: in src/preprocess.rs.
MIN_GAIN_MEAN = 1e-3
MAX_GAIN = 8.0
#: Images whose mean gives the target of gain normalisation (evenly spread).
GAIN_SAMPLE = 10_000

# IDX type byte -> numpy dtype (big-endian where it matters).
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


@dataclass(frozen=True)
class DataConfig:
    """Where training images come from.

    ``kind`` is ``folder`` (``path`` = directory), ``dsprites`` (no path) or
    ``idx`` (``path`` = images file, ``labels`` = labels file, ``classes`` =
    labels to keep, empty = all).
    """

    kind: str
    path: str | None = None
    labels: str | None = None
    classes: tuple[int, ...] = ()
    fit: str = "crop"
    illumination: str = "none"
    #: ``"COLSxROWS"`` when every frame was cut into a grid of tiles, each
    #: one training image; ``""`` for whole frames.
    tiles: str = ""

    def describe(self) -> str:
        """Short dataset name for ``bvae.dataset`` metadata."""
        if self.kind == "dsprites":
            return "dsprites"
        name = Path(self.path or "").name
        if self.kind == "idx" and self.classes:
            return f"idx:{name}[classes={','.join(map(str, self.classes))}]"
        return f"{self.kind}:{name}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d

    @staticmethod
    def from_dict(d: dict) -> DataConfig:
        return DataConfig(
            d["kind"],
            d.get("path"),
            d.get("labels"),
            tuple(d.get("classes", ())),
            d.get("fit", "crop"),
            d.get("illumination", "none"),
            d.get("tiles", ""),
        )


class ImageSource:
    """A fixed, indexable set of images of one size and channel count."""

    channels: int
    size: int

    def __len__(self) -> int:
        raise NotImplementedError

    def batch(self, indices) -> torch.Tensor:
        """Images at ``indices`` as float32 ``[N, C, H, W]`` in [0, 1]."""
        raise NotImplementedError


class TensorSource(ImageSource):
    """Images held in memory as uint8 ``[N, C, H, W]``."""

    def __init__(self, images: torch.Tensor):
        assert images.dtype == torch.uint8 and images.dim() == 4
        self.images = images
        self.channels = images.shape[1]
        self.size = images.shape[2]

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, indices) -> torch.Tensor:
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        return self.images[idx].float().div_(255.0)


class DSpritesSource(ImageSource):
    """The whole dSprites factor grid (737,280 images), drawn on demand."""

    def __init__(self, size: int = 64, channels: int = 1):
        self.size = size
        self.channels = channels

    def __len__(self) -> int:
        return dsprites.NUM_IMAGES

    def factors(self, indices) -> np.ndarray:
        """Ground-truth factor classes ``[N, 5]`` of the images at ``indices``."""
        return dsprites.index_to_factors(indices)

    def batch(self, indices) -> torch.Tensor:
        f = dsprites.index_to_factors(np.asarray(indices))
        return torch.from_numpy(dsprites.render(f, self.size, self.channels))


def normalise_gain(x: torch.Tensor, target: float) -> torch.Tensor:
    """Scale each image of ``x`` (``[N, C, H, W]`` in [0, 1]) so that its mean
    becomes ``target``, by a factor in [1/MAX_GAIN, MAX_GAIN], clipping at 1:
    the runtime's ``normalise_gain`` (src/preprocess.rs), applied to every
    frame of a model exported with ``bvae.illumination = "gain"``."""
    mean = x.double().mean(dim=(1, 2, 3), keepdim=True).float().clamp_min(MIN_GAIN_MEAN)
    gain = (target / mean).clamp(1.0 / MAX_GAIN, MAX_GAIN)
    return (x * gain).clamp_max(1.0)


class GainNormalised(ImageSource):
    """Another source's images, each scaled to the mean value ``target`` (the
    mean over up to GAIN_SAMPLE of its images): a global brightness change is
    normalised away, in training as in the runtime."""

    def __init__(self, inner: ImageSource):
        self.inner = inner
        self.channels, self.size = inner.channels, inner.size
        n = len(inner)
        idx = np.unique(np.linspace(0, n - 1, min(n, GAIN_SAMPLE)).round().astype(np.int64))
        total = 0.0
        for i in range(0, len(idx), 512):
            total += float(inner.batch(idx[i : i + 512]).double().mean(dim=(1, 2, 3)).sum())
        self.target = min(1.0, max(MIN_GAIN_MEAN, total / len(idx)))

    def __len__(self) -> int:
        return len(self.inner)

    def batch(self, indices) -> torch.Tensor:
        return normalise_gain(self.inner.batch(indices), self.target)


def renormalise(source: ImageSource, x: torch.Tensor) -> torch.Tensor:
    """``x`` normalised as ``source``'s images are (after augmentation changed
    their brightness), or ``x`` itself for a source that does not normalise."""
    return normalise_gain(x, source.target) if isinstance(source, GainNormalised) else x


def find_images(folder: Path) -> list[Path]:
    """All PNG/JPEG files under ``folder`` (recursive), sorted, or a UserError."""
    if not folder.exists():
        raise UserError(f"data folder {folder} does not exist; pass a folder of PNG/JPEG images")
    if not folder.is_dir():
        raise UserError(f"data folder {folder} is not a directory; pass a folder of images")
    files = sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise UserError(
            f"data folder {folder} has no images: expected files ending in "
            f"{', '.join(IMAGE_SUFFIXES)} (searched recursively), found none"
        )
    return files


FITS = ("crop", "letterbox")


#: Largest number of columns or rows of a tile grid (the runtime's bound).
MAX_GRID_SIDE = 8


def parse_grid(text: str) -> tuple[int, int]:
    """``"4x3"`` -> (4, 3): columns and rows of a tile grid, each 1 to
    :data:`MAX_GRID_SIDE`."""
    parts = text.lower().replace("×", "x").split("x")
    try:
        cols, rows = (int(v) for v in parts)
    except ValueError:
        raise UserError(f"a tile grid is written COLSxROWS, e.g. 4x3; found {text!r}") from None
    if not (1 <= cols <= MAX_GRID_SIDE and 1 <= rows <= MAX_GRID_SIDE):
        raise UserError(f"a tile grid has 1 to {MAX_GRID_SIDE} columns and rows, found {text!r}")
    return cols, rows


def load_image(
    path: Path, size: int, channels: int, fit: str = "crop", tiles: str = ""
) -> np.ndarray:
    """One image file -> uint8 ``[C, size, size]``: resized so the shorter side
    is ``size``, then centre-cropped (``fit="crop"``), or resized so the longer
    side is ``size`` and centred on black (``fit="letterbox"``); converted to
    gray (C=1) or RGB (C=3).

    With ``tiles="COLSxROWS"`` the image is fitted the same way to a grid of
    COLS·size × ROWS·size and cut into its tiles, row by row: the result is
    ``[COLS·ROWS, C, size, size]``. The runtime cuts frames the same way."""
    if fit not in FITS:
        raise UserError(f"fit must be one of {FITS}, got {fit!r}")
    cols, rows = parse_grid(tiles) if tiles else (1, 1)
    target = (size * cols, size * rows)
    try:
        with Image.open(path) as im:
            im = im.convert("L" if channels == 1 else "RGB")
            if fit == "crop":
                im = ImageOps.fit(im, target, method=Image.Resampling.BILINEAR)
            else:
                im = ImageOps.pad(im, target, method=Image.Resampling.BILINEAR, color=0)
            arr = np.asarray(im, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise UserError(
            f"cannot read image {path}: {e}; remove or replace the file "
            "(only PNG and JPEG images are used)"
        ) from None
    if channels == 1:
        arr = arr[None]
    else:
        arr = arr.transpose(2, 0, 1)
    if not tiles:
        return np.ascontiguousarray(arr)
    cut = [
        arr[:, r * size : (r + 1) * size, c * size : (c + 1) * size]
        for r in range(rows)
        for c in range(cols)
    ]
    return np.ascontiguousarray(np.stack(cut))


#: File names of the decoded-image cache in a run directory.
CACHE_IMAGES = "images.cache.npy"
CACHE_KEY = "images.cache.json"


def folder_key(files: list[Path], size: int, channels: int, fit: str, tiles: str = "") -> dict:
    """What a folder's decoded images depend on: each file's path, size and
    modification time, and the model's size, channels, fit and tiles."""
    listing = []
    for p in files:
        st = p.stat()
        listing.append([str(p.resolve()), st.st_size, st.st_mtime_ns])
    key = {"size": size, "channels": channels, "fit": fit, "files": listing}
    if tiles:
        key["tiles"] = tiles
    return key


def load_folder(
    folder: str | Path,
    size: int,
    channels: int,
    fit: str = "crop",
    cache: Path | None = None,
    tiles: str = "",
) -> TensorSource:
    """Decode every image of ``folder`` (with ``tiles``, every tile of each
    image is one image, the tiles of a file in a row). With ``cache`` (a run
    directory), the decoded images are kept there and reused while no file
    changed, so ``train --resume``, ``export`` and ``report`` do not decode
    them again."""
    files = find_images(Path(folder))
    per_file = np.prod(parse_grid(tiles)) if tiles else 1
    key = folder_key(files, size, channels, fit, tiles) if cache is not None else None
    if cache is not None:
        images, key_file = cache / CACHE_IMAGES, cache / CACHE_KEY
        try:
            if json.loads(key_file.read_text()) == key:
                arr = np.load(images, allow_pickle=False)
                want = (len(files) * per_file, channels, size, size)
                if arr.dtype == np.uint8 and arr.shape == want:
                    return TensorSource(torch.from_numpy(np.ascontiguousarray(arr)))
        except (OSError, ValueError):
            pass  # no cache yet, or an unreadable one: decode again
    if tiles:
        arr = np.concatenate([load_image(p, size, channels, fit, tiles) for p in files])
    else:
        arr = np.stack([load_image(p, size, channels, fit) for p in files])
    if cache is not None:
        save_cache(cache, arr, key)
    return TensorSource(torch.from_numpy(arr))


def save_cache(cache: Path, arr: np.ndarray, key: dict) -> None:
    """Writes the cache atomically (temporary files, then renames; the key
    last, so a half-written cache is never taken for a valid one)."""
    cache.mkdir(parents=True, exist_ok=True)
    tmp_images = cache / (CACHE_IMAGES + ".tmp.npy")
    tmp_key = cache / (CACHE_KEY + ".tmp")
    try:
        (cache / CACHE_KEY).unlink(missing_ok=True)
        np.save(tmp_images, arr, allow_pickle=False)
        os.replace(tmp_images, cache / CACHE_IMAGES)
        tmp_key.write_text(json.dumps(key))
        os.replace(tmp_key, cache / CACHE_KEY)
    except OSError as e:
        print(f"warning: could not cache the decoded images in {cache}: {e}", file=sys.stderr)


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (MNIST format), gzip-compressed or raw."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"IDX file {p} does not exist")
    raw = p.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise UserError(f"IDX file {p} looks gzipped but cannot be decompressed: {e}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise UserError(
            f"{p} is not an IDX file: expected magic 00 00 <type> <ndim>, found {raw[:4].hex(' ')}"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise UserError(f"IDX file {p} is truncated in its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    count = int(np.prod(dims)) if dims else 1
    if len(raw) - header < count * dtype.itemsize:
        raise UserError(
            f"IDX file {p} is truncated: header says {dims}, "
            f"found {(len(raw) - header) // dtype.itemsize} values"
        )
    return np.frombuffer(raw, dtype=dtype, count=count, offset=header).reshape(dims)


def load_idx(
    images_path: str, labels_path: str | None, classes: tuple[int, ...], size: int, channels: int
) -> TensorSource:
    images = read_idx(images_path)
    if images.ndim != 3:
        raise UserError(f"IDX images {images_path} must be [N, H, W], found shape {images.shape}")
    if classes:
        if not labels_path:
            raise UserError("a class filter needs the labels file too (--idx-labels)")
        labels = read_idx(labels_path)
        if labels.shape != (images.shape[0],):
            raise UserError(
                f"IDX labels {labels_path} have shape {labels.shape}, "
                f"expected ({images.shape[0]},) to match the images"
            )
        keep = np.isin(labels, np.array(classes))
        images = images[keep]
        if images.shape[0] == 0:
            raise UserError(
                f"no images with classes {list(classes)}; labels present: "
                f"{sorted(set(labels.tolist()))}"
            )
    x = torch.from_numpy(images.astype(np.float32))[:, None]
    if x.max() > 1.0:
        x = x / 255.0
    out = []
    for chunk in x.split(4096):
        if chunk.shape[-1] != size or chunk.shape[-2] != size:
            chunk = F.interpolate(chunk, size=(size, size), mode="bilinear", antialias=True)
        out.append(chunk)
    x = torch.cat(out).clamp_(0, 1)
    if channels == 3:
        x = x.expand(-1, 3, -1, -1)
    return TensorSource((x * 255.0).round().to(torch.uint8).contiguous())


def open_source(
    data: DataConfig, size: int, channels: int, cache: Path | None = None
) -> ImageSource:
    """Build the image source that ``data`` describes, at the model's shape;
    a folder's decoded images are cached in ``cache`` (a run directory). With
    ``data.illumination == "gain"`` every image is gain-normalised."""
    if data.illumination not in ILLUMINATIONS:
        raise UserError(
            f"unknown illumination {data.illumination!r}; expected one of {ILLUMINATIONS}"
        )
    if data.tiles and data.kind != "folder":
        raise UserError("--tiles cuts camera frames: it needs --images")
    if data.tiles:
        parse_grid(data.tiles)
    if data.kind == "dsprites":
        source: ImageSource = DSpritesSource(size, channels)
    elif data.kind == "folder":
        source = load_folder(data.path, size, channels, data.fit, cache, data.tiles)
    elif data.kind == "idx":
        source = load_idx(data.path, data.labels, data.classes, size, channels)
    else:
        raise UserError(f"unknown data kind {data.kind!r}; expected one of {DATA_KINDS}")
    return GainNormalised(source) if data.illumination == "gain" else source


def split_indices(n: int, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Reproducible train / held-out split of ``range(n)``. At least one image
    stays in training; the held-out part is empty only when ``holdout`` is 0."""
    perm = np.random.default_rng(seed).permutation(n)
    n_hold = int(round(n * holdout))
    if holdout > 0:
        n_hold = max(1, n_hold)
    n_hold = min(n_hold, n - 1)
    return np.sort(perm[n_hold:]), np.sort(perm[:n_hold])
