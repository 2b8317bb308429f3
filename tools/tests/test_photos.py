import numpy as np
import pytest
from PIL import Image

from bvae_tools.__main__ import main
from bvae_tools.errors import UserError
from bvae_tools.photos import PHOTOS, README_NAME, write_photos


def test_every_bundled_photo_is_written_as_skimage_loads_it(tmp_path):
    import skimage.data

    out = tmp_path / "photos"
    written = write_photos(out)
    assert [p.name for p in written] == [f"{ph.name}.png" for ph in PHOTOS]
    for ph, path in zip(PHOTOS, written, strict=True):
        png = np.asarray(Image.open(path))
        want = getattr(skimage.data, ph.name)()
        assert png.dtype == np.uint8 and png.shape == want.shape, ph.name
        assert np.array_equal(png, want), ph.name
        assert min(png.shape[:2]) >= 256, ph.name
    note = (out / README_NAME).read_text(encoding="utf-8")
    for ph in PHOTOS:
        assert f"`{ph.name}.png`" in note and ph.licence in note
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [README_NAME] + [p.name for p in written]
    )


def test_a_subset_and_the_command_line(tmp_path, capsys):
    out = tmp_path / "two"
    assert main(["photos", "--out", str(out), "--only", "coffee,chelsea"]) == 0
    assert "wrote 2 photos" in capsys.readouterr().out
    assert sorted(p.name for p in out.glob("*.png")) == ["chelsea.png", "coffee.png"]
    assert Image.open(out / "coffee.png").mode == "RGB"
    # a gray photo stays gray
    write_photos(tmp_path / "gray", only="camera")
    assert Image.open(tmp_path / "gray" / "camera.png").mode == "L"


def test_bad_requests_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="unknown photo lena"):
        write_photos(tmp_path / "x", only="lena,coffee")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not empty"):
        write_photos(full, only="coffee")
    write_photos(full, only="coffee", force=True)
    assert (full / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(UserError, match="not a folder"):
        write_photos(a_file)
    assert main(["photos", "--out", str(full)]) == 2
