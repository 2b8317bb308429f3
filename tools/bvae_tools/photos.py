"""Real photographs for bvae's photos scene: ``python -m bvae_tools photos --out DIR``.

Writes the photographs that scikit-image ships inside its package (nothing is
downloaded) as PNG files into DIR, with a README.md naming each photo's
source and licence as scikit-image documents it. The folder is what the Rust
source ``photos:DIR`` renders its camera scene from::

    python -m bvae_tools photos --out photos
    bvae record --source photos:photos --frames 4000 --every 2 -o frames/

Only photographs are taken (no drawings, scans or microscopy), and only those
whose scikit-image documentation states a public-domain or CC0 licence, or
"no known copyright restrictions".
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UserError


@dataclass(frozen=True)
class Photo:
    """One photograph bundled with scikit-image."""

    name: str  #: the ``skimage.data`` function that loads it, and the PNG's stem
    file: str  #: the file inside the ``skimage/data`` package folder
    title: str
    source: str  #: where scikit-image says it comes from
    licence: str  #: as scikit-image's documentation of the function states it


PHOTOS: tuple[Photo, ...] = (
    Photo(
        "astronaut",
        "astronaut.png",
        "Eileen Collins, an American astronaut",
        "NASA Great Images database, https://flic.kr/p/r9qvLn",
        "No known copyright restrictions, released into the public domain.",
    ),
    Photo(
        "camera",
        "camera.png",
        'Gray-level "camera" image (a photographer with a camera)',
        "Lav Varshney",
        "No copyright restrictions. CC0 by the photographer (Lav Varshney).",
    ),
    Photo(
        "chelsea",
        "chelsea.png",
        "Chelsea the cat",
        "Stefan van der Walt",
        "No copyright restrictions. CC0 by the photographer (Stefan van der Walt).",
    ),
    Photo(
        "coffee",
        "coffee.png",
        "Coffee cup, courtesy of Pikolo Espresso Bar",
        "Rachel Michetti",
        "No copyright restrictions. CC0 by the photographer (Rachel Michetti).",
    ),
    Photo(
        "coins",
        "coins.png",
        "Greek coins from Pompeii",
        "Brooklyn Museum Collection, "
        "https://www.brooklynmuseum.org/opencollection/archives/image/51611",
        "No known copyright restrictions.",
    ),
    Photo(
        "rocket",
        "rocket.jpg",
        "Launch photo of DSCOVR on Falcon 9 by SpaceX",
        "SpaceX Photos, https://www.flickr.com/photos/spacexphotos/16511594820/",
        "Captured by SpaceX and released in the public domain.",
    ),
    Photo(
        "hubble_deep_field",
        "hubble_deep_field.jpg",
        "Hubble eXtreme Deep Field",
        "HubbleSite, http://hubblesite.org/newscenter/archive/releases/2012/37/image/a/",
        "Captured by NASA; may be freely used in the public domain.",
    ),
    Photo(
        "brick",
        "brick.png",
        "A small section of a brick wall (perspective-corrected, rotated, cropped)",
        "CC0Textures, https://cc0textures.com/view.php?tex=Bricks25",
        "Creative Commons CC0 License.",
    ),
    Photo(
        "grass",
        "grass.png",
        "Grass (cropped, converted to grayscale)",
        "DeviantArt, https://www.deviantart.com/linolafett/art/Grass-01-434853879",
        "Creative Commons CC0 License.",
    ),
    Photo(
        "gravel",
        "gravel.png",
        "Gravel (rescaled, cropped, converted to grayscale)",
        "CC0Textures, https://cc0textures.com/view.php?tex=Gravel04",
        "Creative Commons CC0 License.",
    ),
)

#: The note written beside the photos.
README_NAME = "README.md"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", required=True, type=Path, help="folder to write the PNG photos into")
    p.add_argument(
        "--only",
        default="",
        help="comma-separated names of the photos to write (default: all of "
        + ", ".join(ph.name for ph in PHOTOS)
        + ")",
    )
    p.add_argument(
        "--force", action="store_true", help="write into a folder that already holds files"
    )


def bundled_folder() -> Path:
    """The folder of photographs inside the installed scikit-image package."""
    try:
        import skimage.data
    except ImportError as e:
        raise UserError(
            "the photos command needs scikit-image: pip install -r tools/requirements.txt"
        ) from e
    return Path(skimage.data.__file__).parent


def select(only: str) -> list[Photo]:
    """The photos named in ``only`` (comma-separated; empty = all)."""
    names = [n.strip() for n in only.split(",") if n.strip()]
    if not names:
        return list(PHOTOS)
    known = {ph.name: ph for ph in PHOTOS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise UserError(f"unknown photo {', '.join(unknown)}: expected some of {', '.join(known)}")
    return [known[n] for n in dict.fromkeys(names)]


def load(photo: Photo, folder: Path) -> np.ndarray:
    """The photo as uint8 ``[H, W]`` (gray) or ``[H, W, 3]`` (RGB)."""
    path = folder / photo.file
    if not path.is_file():
        raise UserError(
            f"{path} is missing: this scikit-image does not bundle {photo.name!r} "
            "(the pinned version in tools/requirements.txt does)"
        )
    with Image.open(path) as img:
        mode = "L" if img.mode in ("L", "I;16", "I", "1") else "RGB"
        return np.asarray(img.convert(mode), dtype=np.uint8)


def readme(photos: list[Photo], version: str) -> str:
    """The README.md written beside the photos: where each one comes from."""
    lines = [
        "# Photographs for bvae's photos scene",
        "",
        f"Written by `python -m bvae_tools photos` from the sample data bundled with "
        f"scikit-image {version} (`skimage.data`; nothing was downloaded). Use them as "
        "`--source photos:THIS_FOLDER`.",
        "",
        "Sources and licences as scikit-image documents them (the docstring of each "
        "`skimage.data` function):",
        "",
        "| file | photo | source | licence |",
        "| --- | --- | --- | --- |",
    ]
    for ph in photos:
        lines.append(f"| `{ph.name}.png` | {ph.title} | {ph.source} | {ph.licence} |")
    lines += [
        "",
        "scikit-image itself is BSD-3-Clause licensed; see its documentation of "
        "`skimage.data` for the full notes.",
        "",
    ]
    return "\n".join(lines)


def write_photos(out: Path, only: str = "", force: bool = False) -> list[Path]:
    """Writes the selected photos as PNG and the README.md into ``out``."""
    photos = select(only)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise UserError(
            f"{out} is not empty: choose a new folder, or pass --force to write into it"
        )
    folder = bundled_folder()
    import skimage

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ph in photos:
        path = out / f"{ph.name}.png"
        Image.fromarray(load(ph, folder)).save(path)
        written.append(path)
    (out / README_NAME).write_text(readme(photos, skimage.__version__), encoding="utf-8")
    return written


def run(args: argparse.Namespace) -> int:
    written = write_photos(args.out, args.only, args.force)
    print(f"wrote {len(written)} photos and {README_NAME} to {args.out}")
    return 0
