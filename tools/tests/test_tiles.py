"""Tiles: a frame cut into a grid of training images, the way the runtime
cuts camera frames (``bvae calibrate`` reads the grid from ``bvae.tiles``)."""

import argparse

import numpy as np
import pytest
from PIL import Image

from bvae_tools.data import DataConfig, load_folder, load_image, open_source, parse_grid
from bvae_tools.errors import UserError
from bvae_tools.export import metadata
from bvae_tools.train import add_arguments, config_from_args


def build_parser():
    p = argparse.ArgumentParser()
    add_arguments(p)
    return p


def grid_frame(path, cols=4, rows=3, cell=16):
    """A frame of ``cols`` x ``rows`` flat cells, cell k at gray level 20 k."""
    img = np.zeros((rows * cell, cols * cell), dtype=np.uint8)
    for r in range(rows):
        for c in range(cols):
            img[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = 20 * (r * cols + c)
    Image.fromarray(img).save(path)


def test_a_frame_becomes_its_tiles_row_by_row(tmp_path):
    grid_frame(tmp_path / "a.png")
    tiles = load_image(tmp_path / "a.png", 16, 1, tiles="4x3")
    assert tiles.shape == (12, 1, 16, 16)
    for k in range(12):
        # away from the edges the cell's level is kept exactly
        assert np.all(tiles[k, 0, 2:-2, 2:-2] == 20 * k), k
    # a frame of another size is fitted to the grid first: 128x96 -> 64x48
    big = Image.open(tmp_path / "a.png").resize((128, 96), Image.Resampling.NEAREST)
    big.save(tmp_path / "b.png")
    t2 = load_image(tmp_path / "b.png", 16, 1, tiles="4x3")
    assert np.abs(t2[:, :, 3:-3, 3:-3].astype(int) - tiles[:, :, 3:-3, 3:-3]).max() <= 1


def test_a_folder_of_frames_gives_every_tile_and_caches_them(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        grid_frame(frames / f"{i}.png")
    run = tmp_path / "run"
    src = load_folder(frames, 16, 1, cache=run, tiles="4x3")
    assert len(src) == 36
    again = load_folder(frames, 16, 1, cache=run, tiles="4x3")
    assert len(again) == 36
    # a cache of whole frames is not taken for tiles
    assert len(load_folder(frames, 16, 1, cache=run)) == 3
    data = DataConfig("folder", str(frames), tiles="2x2")
    assert len(open_source(data, 16, 1)) == 12


def test_grids_are_bounded_and_need_frames(tmp_path):
    assert parse_grid("4x3") == (4, 3) and parse_grid("2X2") == (2, 2)
    for bad in ("4", "0x3", "9x1", "axb"):
        with pytest.raises(UserError, match="tile grid"):
            parse_grid(bad)
    with pytest.raises(UserError, match="needs --images"):
        open_source(DataConfig("dsprites", tiles="2x2"), 16, 1)
    parser = build_parser()
    with pytest.raises(UserError, match="needs --images"):
        config_from_args(parser.parse_args(["--dsprites", "--tiles", "2x2", "--out", "x"]))


def test_the_grid_is_in_the_model_metadata(tmp_path, make_config):
    grid_frame(tmp_path / "a.png")
    args = build_parser().parse_args(
        ["--images", str(tmp_path), "--tiles", "4X3", "--size", "16", "--out", str(tmp_path / "r")]
    )
    cfg = config_from_args(args)
    assert cfg.data.tiles == "4x3"
    meta = metadata(cfg, 10, np.zeros(cfg.model.latent_dim))
    assert meta["bvae.tiles"] == "4x3"
    whole = make_config(DataConfig("folder", str(tmp_path)))
    assert "bvae.tiles" not in metadata(whole, 10, np.zeros(3))
