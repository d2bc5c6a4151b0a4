"""The lossless fallbacks that need no model, for images where the chain does worse:

* predictive: the whole image under the direct band's predictive pixel coder (direct.py),
  which beats a weak model on smooth photographs;
* stored: the pixels compressed with zlib, for noise and graphics, so a lossless file
  never costs much more than deflate.

The lossless encoder codes the chain and keeps the smallest of the three.
"""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import DiffcodecError, does_not_decode
from ..format.container import LayerInfo, Mode
from . import direct, entropy
from .ans import AnsStack
from .coded import CodedImage


def whole_image(mode: Mode, payload: bytes, rgb: np.ndarray, **fields) -> CodedImage:
    """A file of one layer of one chunk holding the whole (H, W, 3) image (lossless modes)."""
    layer = LayerInfo.of([payload], 0, 255, entropy.checksum(rgb.reshape(-1)), 8 * len(payload))
    height, width = rgb.shape[:2]
    return CodedImage(mode, [layer], [[payload]], height, width, **fields)


def fallbacks(rgb: np.ndarray) -> list[CodedImage]:
    """The image under the predictive coder, then zlib."""
    stack = AnsStack()
    direct.encode(stack, rgb)
    return [whole_image(Mode.PREDICTIVE, stack.to_bytes(), rgb),
            whole_image(Mode.STORED, zlib.compress(rgb.tobytes(), 9), rgb)]


def smallest(candidates: list[CodedImage]) -> CodedImage:
    """The smallest candidate, the first of equals. An empty ANS stack (black pixels push
    nothing) is no layer the container takes; zlib's payload never is empty."""
    return min((c for c in candidates if c.layers[0].size), key=lambda c: c.layers[0].size)


def or_fallback(coded: CodedImage, rgb: np.ndarray, allowed: bool = True) -> CodedImage:
    """A bits-back coding of the whole image (a lossless file or a progressive file's tail),
    or the smallest of the fallbacks where one is smaller and ``allowed``; an empty ANS
    stack, which no container takes, falls back even when not allowed."""
    if not allowed and coded.layers[0].size:
        return coded
    return smallest([coded, *fallbacks(rgb)])


def decode(coded: CodedImage) -> np.ndarray:
    """Mirror of :func:`whole_image` for the predictive and zlib coders: the (H, W, 3) pixels."""
    if not coded.complete(0):
        raise DiffcodecError(f"truncated or damaged file: a {coded.mode} file only decodes when complete")
    return decode_payload(coded.mode, b"".join(coded.chunks[0]), (coded.height, coded.width, 3), coded.layers[0].crc)


def decode_payload(mode: Mode, data: bytes, shape: tuple, crc: int) -> np.ndarray:
    """The (H, W, 3) pixels of a predictive or zlib payload (a whole file's, or a progressive
    file's tail), checked against the encoder's checksum."""
    rgb = _decode_predictive(data, shape) if mode == Mode.PREDICTIVE else _decode_zlib(data, shape)
    if entropy.checksum(rgb.reshape(-1)) != crc:
        raise does_not_decode(f"the {mode} payload fails its image checksum")
    return rgb


def _decode_predictive(data: bytes, shape: tuple) -> np.ndarray:
    # constriction rejects inconsistent data (it may panic): errors.boundary reports it
    stack = AnsStack.from_bytes(data)
    rgb = direct.decode(stack, shape)
    if not stack.is_empty():
        raise DiffcodecError("damaged file: the predictive payload has data left over")
    return rgb


def _decode_zlib(data: bytes, shape: tuple) -> np.ndarray:
    size = shape[0] * shape[1] * 3
    try:
        pixels = zlib.decompressobj().decompress(data, size + 1)
    except zlib.error:
        raise DiffcodecError("damaged file: the stored pixels cannot be decompressed") from None
    if len(pixels) != size:
        raise DiffcodecError("damaged file: the stored pixels do not match the image size")
    return np.frombuffer(pixels, dtype=np.uint8).reshape(shape).copy()
