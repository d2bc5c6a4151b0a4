"""Reading images and image folders, with unreadable files reported, not fatal."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import DatasetError, ImageReadError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}

SkipHandler = Callable[[Path, str], None]


def _warn_skip(path: Path, reason: str) -> None:
    warnings.warn(f"skipping {path}: {reason}", stacklevel=3)


def read_image(path: str | Path, mode: str = "RGB") -> np.ndarray:
    """Read an image file as a uint8 array (H, W, C), converted to ``mode``."""
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"image not found: {path}")
    try:
        with Image.open(path) as image:
            image.load()
            return np.array(image.convert(mode), dtype=np.uint8).reshape(image.height, image.width, -1)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise ImageReadError(f"cannot read {path} as an image: {exc}") from None


def list_images(folder: str | Path) -> list[Path]:
    """Image files directly in ``folder`` (by suffix), sorted; clear errors when there are none."""
    folder = Path(folder)
    if not folder.exists():
        raise DatasetError(f"folder not found: {folder}")
    if not folder.is_dir():
        raise DatasetError(f"not a folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DatasetError(f"no image files in {folder}")
    return files


def iter_folder_images(
    folders: str | Path | list, mode: str = "RGB", on_skip: SkipHandler | None = None
) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (path, array) for every readable image; unreadable ones go to ``on_skip``."""
    on_skip = on_skip or _warn_skip
    paths = [p for folder in ([folders] if isinstance(folders, (str, Path)) else folders)
             for p in list_images(folder)]
    for path in paths:
        try:
            yield path, read_image(path, mode)
        except ImageReadError as exc:
            on_skip(path, str(exc))


def load_folder_images(
    folders: str | Path | list, mode: str = "RGB", on_skip: SkipHandler | None = None
) -> list[tuple[Path, np.ndarray]]:
    """All readable images of one or more folders; an error if none could be read."""
    images = list(iter_folder_images(folders, mode, on_skip))
    if not images:
        raise DatasetError(f"no readable images in {folders}")
    return images
