"""Stored mode: the pixels compressed with zlib, for the images where the model does worse
than deflate (noise, graphics far from its training data), so a lossless file never
costs more than zlib's."""

from __future__ import annotations

import zlib

import numpy as np

from ..errors import DiffcodecError
from ..format.container import CodedImage, DfcFile, LayerInfo, Mode
from . import entropy


def encode(rgb: np.ndarray) -> CodedImage:
    payload = zlib.compress(rgb.tobytes(), 9)
    layer = LayerInfo.of([payload], 0, 255, entropy.checksum(rgb.reshape(-1)), 8 * len(payload))
    return CodedImage(Mode.STORED, [layer], [[payload]])


def decode(f: DfcFile) -> np.ndarray:
    header = f.header  # fields validated by the container
    if not f.layer_complete(0):
        raise DiffcodecError("truncated or damaged file: a stored file only decodes when complete")
    size = header.height * header.width * 3
    try:
        pixels = zlib.decompressobj().decompress(b"".join(f.chunks[0]), size + 1)
    except zlib.error:
        raise DiffcodecError("damaged file: the stored pixels cannot be decompressed") from None
    if len(pixels) != size:
        raise DiffcodecError("damaged file: the stored pixels do not match the image size")
    rgb = np.frombuffer(pixels, dtype=np.uint8).reshape(header.height, header.width, 3).copy()
    if entropy.checksum(rgb.reshape(-1)) != header.layers[0].crc:
        raise DiffcodecError("image checksum mismatch: the stored file is damaged")
    return rgb
