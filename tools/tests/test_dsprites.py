import numpy as np
import pytest

from bvae_tools import dsprites
from bvae_tools.data import DSpritesSource


def test_factor_grid_is_exactly_dsprites():
    assert dsprites.FACTOR_SIZES == (3, 6, 40, 32, 32)
    assert dsprites.NUM_IMAGES == 737280
    assert dsprites.SHAPES == ("square", "ellipse", "heart")
    np.testing.assert_allclose(dsprites.SCALES, [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert len(dsprites.ORIENTATIONS) == 40
    assert dsprites.ORIENTATIONS[0] == 0 and dsprites.ORIENTATIONS[-1] == pytest.approx(2 * np.pi)
    assert len(dsprites.POSITIONS) == 32
    assert dsprites.POSITIONS[0] == 0 and dsprites.POSITIONS[-1] == 1
    assert len(DSpritesSource()) == 737280


def test_index_order_is_row_major():
    f = dsprites.index_to_factors(np.array([0, 1, 32, 1024, 40960, 245760, 737279]))
    assert f.tolist() == [
        [0, 0, 0, 0, 0],
        [0, 0, 0, 0, 1],
        [0, 0, 0, 1, 0],
        [0, 0, 1, 0, 0],
        [0, 1, 0, 0, 0],
        [1, 0, 0, 0, 0],
        [2, 5, 39, 31, 31],
    ]
    idx = np.random.default_rng(0).integers(0, dsprites.NUM_IMAGES, 1000)
    assert np.array_equal(dsprites.factors_to_index(dsprites.index_to_factors(idx)), idx)
    with pytest.raises(IndexError):
        dsprites.index_to_factors(np.array([737280]))


def test_rendering_is_deterministic_and_binary():
    f = dsprites.sample_factors(64, seed=3)
    assert np.array_equal(f, dsprites.sample_factors(64, seed=3))
    a, b = dsprites.render(f), dsprites.render(f)
    assert a.shape == (64, 1, 64, 64) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert set(np.unique(a)) <= {0.0, 1.0}
    assert (a.reshape(64, -1).sum(1) > 10).all(), "every image shows a sprite"


def test_factors_change_the_image_as_expected():
    base = np.array([[0, 5, 0, 16, 16]])

    def img(**change):
        f = base.copy()
        for k, v in change.items():
            f[0, dsprites.FACTOR_NAMES.index(k)] = v
        return dsprites.render(f)[0, 0]

    def centroid(im):
        ys, xs = np.nonzero(im)
        return xs.mean(), ys.mean()

    assert centroid(img(pos_x=31))[0] > centroid(img(pos_x=0))[0] + 30
    assert centroid(img(pos_y=31))[1] > centroid(img(pos_y=0))[1] + 30
    assert img(scale=5).sum() > 2 * img(scale=0).sum()
    shapes = [img(shape=s) for s in range(3)]
    assert not np.array_equal(shapes[0], shapes[1]) and not np.array_equal(shapes[1], shapes[2])
    # orientation: 0 and 2π are the same image, as in dSprites; 90° differs for the ellipse
    assert np.array_equal(img(shape=1, orientation=0), img(shape=1, orientation=39))
    assert not np.array_equal(img(shape=1, orientation=0), img(shape=1, orientation=10))


def test_colour_and_small_sizes():
    src = DSpritesSource(size=32, channels=3)
    x = src.batch(np.arange(0, 737280, 245760))  # one of each shape
    assert x.shape == (3, 3, 32, 32)
    assert 0 <= x.min() and x.max() <= 1
    assert (x.sum((2, 3)) > 0).all()
    assert src.factors([245760]).tolist() == [[1, 0, 0, 0, 0]]
