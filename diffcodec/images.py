"""Images in and out: what users pass (PIL images, arrays, tensors, files, folders) turned
into what the model codes, and back.

Policy (the model codes 8-bit RGB):
* RGB is coded as it is.
* Grayscale (L, 1-bit) is coded as RGB with equal channels and decoded to one channel.
* An alpha channel (RGBA, LA, PA) is kept exactly: colour is coded by the model, alpha is
  stored losslessly (zlib) in the header, or as one flag when it is fully opaque.
* Palette images are expanded to RGB(A); 16-bit and float images are refused with a
  clear message (convert them to 8 bits first), also where Pillow would quietly reduce
  them to 8 bits (16-bit RGB and gray-alpha PNG). Animated and multi-page files are
  refused (extract a frame first): coding the first frame alone would lose the rest.

Files are read by one reader (:func:`read_image`), which applies that policy; training and
benchmarks take the colour part (:func:`read_rgb`). Unreadable files in a folder are
reported to a handler, not fatal.
"""

from __future__ import annotations

import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .errors import DatasetError, DiffcodecError, ImageReadError
from .format.container import ALPHA_NONE, ALPHA_OPAQUE, ALPHA_ZLIB

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm", ".gif"}

SkipHandler = Callable[[Path, str], None]


@dataclass
class PreparedImage:
    rgb: np.ndarray  # (H, W, 3) uint8, what the model codes
    channels: int  # 1 (gray), 2 (gray + alpha), 3 (RGB) or 4 (RGBA)
    alpha_kind: int
    alpha: bytes


def _stored_bits_above_8(image: Image.Image) -> bool:
    """Whether the file stores more than 8 bits per sample, whatever mode Pillow presents
    (it opens 16-bit RGB PNGs as 8-bit RGB): read from the decoder's raw modes."""
    for tile in getattr(image, "tile", None) or []:
        args = tile[3] if isinstance(tile, tuple) and len(tile) > 3 else getattr(tile, "args", None)
        rawmode = args[0] if isinstance(args, tuple) and args else args
        if isinstance(rawmode, str) and ("16" in rawmode or "32" in rawmode or rawmode.startswith("F")):
            return True
    return False


def _refuse_unsupported_file(image: Image.Image) -> None:
    """What the mode does not show: frames beyond the first, samples of more than 8 bits.
    Checked before the pixels are decoded (Pillow forgets the raw modes once loaded)."""
    if getattr(image, "n_frames", 1) > 1:
        raise ImageReadError(f"animated or multi-page images are not supported ({image.n_frames} frames); "
                             "extract one frame first")
    if _stored_bits_above_8(image):
        raise ImageReadError("images with more than 8 bits per channel are not supported; "
                             "convert to 8 bits per channel first")


def _from_pil(image: Image.Image) -> np.ndarray:
    _refuse_unsupported_file(image)
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F") or mode.startswith("I;"):
        raise ImageReadError(f"{mode} images ({'16-bit' if '16' in mode else '32-bit'}) are not supported; "
                             "convert to 8 bits per channel first")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        raise ImageReadError(f"{mode} images are not supported; convert to RGB first")
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode == "PA":
        image = image.convert("RGBA")
    elif mode == "1":
        image = image.convert("L")
    elif mode not in ("L", "LA", "RGB", "RGBA"):
        image = image.convert("RGBA" if "A" in mode else "RGB")
    array = np.array(image, dtype=np.uint8)  # a writable copy
    return array[:, :, None] if array.ndim == 2 else array


def to_array(image) -> np.ndarray:
    """(H, W, C) uint8 from a PIL image, a numpy array (H, W[, C]) or a tensor (C, H, W)."""
    if isinstance(image, Image.Image):
        return _from_pil(image)
    try:
        import torch

        if isinstance(image, torch.Tensor):
            tensor = image.detach().cpu()
            if tensor.ndim == 4 and tensor.shape[0] == 1:
                tensor = tensor[0]
            if tensor.ndim == 3:
                tensor = tensor.permute(1, 2, 0)
            image = tensor.numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    array = np.asarray(image)
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 2, 3, 4):
        raise DiffcodecError(f"unsupported image shape {array.shape}: expected (H, W), (H, W, 1-4) or (C, H, W)")
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer) and array.size and (array.min() < 0 or array.max() > 255):
            raise DiffcodecError(f"pixel values outside 0..255 ({array.dtype}); convert to 8 bits first")
        if not np.issubdtype(array.dtype, np.integer):
            raise DiffcodecError(f"unsupported pixel type {array.dtype}: pass uint8 values 0..255")
        array = array.astype(np.uint8)
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise DiffcodecError("empty image")
    return np.ascontiguousarray(array)


def colour_of(array: np.ndarray) -> np.ndarray:
    """The (H, W, 3) colour the model codes: RGB as it is, gray repeated, alpha dropped."""
    colour = array[:, :, :3] if array.shape[2] >= 3 else np.repeat(array[:, :, :1], 3, axis=2)
    return np.ascontiguousarray(colour)


def prepare(image) -> PreparedImage:
    array = to_array(image)
    channels = array.shape[2]
    alpha_kind, alpha = ALPHA_NONE, b""
    if channels in (2, 4):
        plane = array[:, :, -1]
        if np.all(plane == 255):
            alpha_kind = ALPHA_OPAQUE
        else:
            alpha_kind, alpha = ALPHA_ZLIB, zlib.compress(plane.tobytes(), 9)
    return PreparedImage(colour_of(array), channels, alpha_kind, alpha)


def restore(rgb: np.ndarray, channels: int, alpha_kind: int, alpha: bytes) -> np.ndarray:
    """Inverse of :func:`prepare`: (H, W, channels) uint8 (2-D for grayscale)."""
    height, width = rgb.shape[:2]
    colour = rgb[:, :, :1] if channels in (1, 2) else rgb
    if channels in (2, 4):
        if alpha_kind == ALPHA_ZLIB:
            inflater = zlib.decompressobj()
            try:  # bounded: never more than the plane's size, whatever the payload claims
                plane = np.frombuffer(inflater.decompress(alpha, height * width + 1), dtype=np.uint8)
            except zlib.error:
                raise DiffcodecError("damaged file: the alpha channel cannot be decompressed") from None
            if plane.size != height * width or not inflater.eof or inflater.unused_data:
                raise DiffcodecError("damaged file: the alpha channel has the wrong size")
            plane = plane.reshape(height, width, 1)
        else:
            plane = np.full((height, width, 1), 255, dtype=np.uint8)
        colour = np.concatenate([colour, plane], axis=2)
    return colour[:, :, 0] if channels == 1 else np.ascontiguousarray(colour)


def to_pil(array: np.ndarray) -> Image.Image:
    if array.ndim == 2:
        return Image.fromarray(array, "L")
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[2]]
    return Image.fromarray(array, mode)


def _warn_skip(path: Path, reason: str) -> None:
    warnings.warn(f"skipping {path}: {reason}", stacklevel=3)


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as (H, W, C) uint8 under the coding policy (:func:`to_array`)."""
    path = Path(path)
    if path.is_dir():
        raise ImageReadError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise ImageReadError(f"file not found: {path}")
    try:
        with Image.open(path) as image:
            _refuse_unsupported_file(image)
            image.load()
            return to_array(image)
    except DiffcodecError:
        raise
    except MemoryError:
        raise ImageReadError(f"cannot read {path}: out of memory") from None
    except Exception as exc:  # Pillow raises many types for unreadable files (and decompression bombs)
        raise ImageReadError(f"cannot read {path} as an image: {exc}") from None


def read_rgb(path: str | Path) -> np.ndarray:
    """The colour part of an image file, (H, W, 3) uint8: what the model sees."""
    return colour_of(read_image(path))


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
    folders: str | Path | list, on_skip: SkipHandler | None = None
) -> Iterator[tuple[Path, np.ndarray]]:
    """Yield (path, RGB array) for every readable image; unreadable ones go to ``on_skip``."""
    on_skip = on_skip or _warn_skip
    paths = [p for folder in ([folders] if isinstance(folders, (str, Path)) else folders)
             for p in list_images(folder)]
    for path in paths:
        try:
            yield path, read_rgb(path)
        except ImageReadError as exc:
            on_skip(path, str(exc))


def load_folder_images(
    folders: str | Path | list, on_skip: SkipHandler | None = None
) -> list[tuple[Path, np.ndarray]]:
    """All readable images of one or more folders; an error if none could be read."""
    images = list(iter_folder_images(folders, on_skip))
    if not images:
        raise DatasetError(f"no readable images in {folders}")
    return images
