import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from bvae_tools.data import (
    DataConfig,
    find_images,
    load_folder,
    open_source,
    read_idx,
    split_indices,
)
from bvae_tools.errors import UserError


def write_idx(path, arr, compress=False):
    codes = {np.uint8: 0x08, np.int32: 0x0C}
    header = bytes([0, 0, codes[arr.dtype.type], arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_folder_is_recursive_resized_and_cropped(image_folder):
    files = find_images(image_folder)
    assert len(files) == 16 and any(p.suffix == ".jpg" for p in files)
    gray = load_folder(image_folder, 32, 1)
    rgb = load_folder(image_folder, 16, 3)
    assert len(gray) == 16 and gray.batch([0, 1]).shape == (2, 1, 32, 32)
    x = rgb.batch(np.arange(16))
    assert x.shape == (16, 3, 16, 16)
    assert 0 <= x.min() and x.max() <= 1 and x.max() > 0.4


def test_center_crop_keeps_the_middle(tmp_path):
    # 3 vertical bands: red | green | blue; a square crop of the middle is all green
    img = np.zeros((32, 96, 3), dtype=np.uint8)
    img[:, :32, 0] = img[:, 32:64, 1] = img[:, 64:, 2] = 255
    Image.fromarray(img).save(tmp_path / "bands.png")
    x = load_folder(tmp_path, 16, 3).batch([0])[0]
    assert x[1].mean() > 0.95 and x[0].mean() < 0.05 and x[2].mean() < 0.05


def test_missing_folder(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_images(tmp_path / "nope")


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    with pytest.raises(UserError, match="has no images"):
        find_images(tmp_path)


def test_folder_is_a_file(tmp_path):
    (tmp_path / "a.png").write_bytes(b"x")
    with pytest.raises(UserError, match="not a directory"):
        find_images(tmp_path / "a.png")


def test_unreadable_image_names_the_file(image_folder):
    (image_folder / "broken.png").write_text("this is not a PNG")
    with pytest.raises(UserError, match="cannot read image .*broken.png"):
        load_folder(image_folder, 32, 1)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_with_class_filter(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28)).astype(np.uint8)
    labels = (np.arange(20) % 4).astype(np.uint8)
    suffix = ".gz" if compress else ""
    write_idx(tmp_path / f"img{suffix}", images, compress)
    write_idx(tmp_path / f"lab{suffix}", labels, compress)
    assert np.array_equal(read_idx(tmp_path / f"img{suffix}"), images)
    src = open_source(
        DataConfig("idx", str(tmp_path / f"img{suffix}"), str(tmp_path / f"lab{suffix}"), (1, 3)),
        32,
        1,
    )
    assert len(src) == 10
    assert src.batch([0]).shape == (1, 1, 32, 32)
    rgb = open_source(DataConfig("idx", str(tmp_path / f"img{suffix}")), 16, 3)
    assert len(rgb) == 20 and rgb.batch([0]).shape == (1, 3, 16, 16)


def test_idx_errors(tmp_path):
    (tmp_path / "junk").write_bytes(b"\x89PNG\r\n")
    with pytest.raises(UserError, match="not an IDX file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(UserError, match="does not exist"):
        read_idx(tmp_path / "missing")
    write_idx(tmp_path / "img", np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(UserError, match="labels file"):
        open_source(DataConfig("idx", str(tmp_path / "img"), None, (1,)), 16, 1)
    write_idx(tmp_path / "lab", np.zeros(4, np.uint8))
    with pytest.raises(UserError, match="no images with classes"):
        open_source(DataConfig("idx", str(tmp_path / "img"), str(tmp_path / "lab"), (7,)), 16, 1)


def test_split_is_reproducible_and_disjoint():
    a, b = split_indices(100, 0.2, seed=1)
    a2, b2 = split_indices(100, 0.2, seed=1)
    assert np.array_equal(a, a2) and np.array_equal(b, b2)
    assert len(b) == 20 and len(a) == 80 and not set(a) & set(b)
    assert len(split_indices(3, 0.0, 0)[1]) == 0
    assert len(split_indices(2, 0.5, 0)[0]) >= 1


def test_letterbox_fit_pads_with_black(tmp_path):
    from PIL import Image

    from bvae_tools.data import load_image

    p = tmp_path / "wide.png"
    Image.new("L", (32, 16), 255).save(p)
    crop = load_image(p, 16, 1, "crop")
    assert (crop == 255).all()
    box = load_image(p, 16, 1, "letterbox")
    assert box.shape == (1, 16, 16)
    assert (box[0, :4] == 0).all() and (box[0, 12:] == 0).all()
    assert (box[0, 4:12] == 255).all()
    with pytest.raises(UserError, match="fit must be one of"):
        load_image(p, 16, 1, "stretch")


def test_decoded_images_are_cached_until_a_file_changes(image_folder, tmp_path, monkeypatch):
    import bvae_tools.data as data

    run = tmp_path / "run"
    first = load_folder(image_folder, 16, 1, cache=run)
    assert (run / data.CACHE_IMAGES).is_file() and (run / data.CACHE_KEY).is_file()
    decoded = []
    real = data.load_image
    monkeypatch.setattr(data, "load_image", lambda *a, **k: decoded.append(a) or real(*a, **k))
    again = load_folder(image_folder, 16, 1, cache=run)
    assert decoded == [] and torch.equal(first.images, again.images)
    # another size or fit is another cache
    load_folder(image_folder, 32, 1, cache=run)
    assert len(decoded) == len(first)
    # a changed file is decoded again
    decoded.clear()
    load_folder(image_folder, 16, 1, cache=run)
    assert len(decoded) == len(first)
    victim = sorted(image_folder.rglob("*.png"))[0]
    Image.new("L", (20, 20), 255).save(victim)
    decoded.clear()
    changed = load_folder(image_folder, 16, 1, cache=run)
    assert len(decoded) == len(first) and not torch.equal(changed.images, first.images)
    # a corrupt cache is ignored and rewritten
    (run / data.CACHE_IMAGES).write_bytes(b"not numpy")
    decoded.clear()
    assert torch.equal(load_folder(image_folder, 16, 1, cache=run).images, changed.images)
    assert len(decoded) == len(first)
