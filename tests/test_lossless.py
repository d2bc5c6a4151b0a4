"""Lossless mode: bits-back over the diffusion chain, exact and robust."""

import numpy as np
import pytest
from PIL import Image

from diffcodec.codec import Codec
from diffcodec.container import parse_file
from diffcodec.errors import DiffcodecError

from conftest import synthetic_image


@pytest.fixture(scope="module")
def codec(trained_tiny_model):
    return Codec(trained_tiny_model)


@pytest.mark.parametrize("steps", [2, 6])
@pytest.mark.parametrize("shape, kind", [
    ((24, 24), "noise"), ((40, 30), "gradient"), ((48, 48), "shapes"),
    ((1, 1), "noise"), ((7, 13), "shapes"), ((33, 65), "shapes"),
])
def test_exact_round_trip(codec, shape, kind, steps):
    image = synthetic_image(*shape, kind, seed=sum(shape))
    data = codec.encode(image, steps=steps, mode="lossless")
    assert np.array_equal(codec.decode(data), image)


def test_bits_back_bands_are_used(codec):
    image = synthetic_image(64, 40, "shapes", seed=1)
    data = codec.encode(image, steps=4, mode="lossless")
    header = parse_file(data).header
    assert header.mode == "lossless" and sum(header.bands) == 64 and len(header.bands) > 2
    assert np.array_equal(codec.decode(data), image)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_gray_and_alpha(codec, mode):
    rgba = synthetic_image(20, 18, "shapes", channels=4)
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    out = codec.decode(codec.encode(image, steps=3, mode="lossless"))
    assert np.array_equal(out, np.asarray(image))


@pytest.mark.parametrize("damage", ["truncate", "flip", "flip_many"])
def test_damaged_lossless_files(codec, damage):
    image = synthetic_image(48, 32, "shapes", seed=3)
    data = bytearray(codec.encode(image, steps=3, mode="lossless"))
    header_size = parse_file(bytes(data)).header_size
    if damage == "truncate":
        data = data[:-8]
        message = "only decodes when complete"
    elif damage == "flip":
        data[(header_size + len(data)) // 2] ^= 0x10
        message = "damaged|checksum"
    else:
        for offset in range(header_size, len(data), 3):
            data[offset] ^= 0xFF
        message = "damaged|checksum"
    with pytest.raises(DiffcodecError, match=message):
        codec.decode(bytes(data))


def test_lossless_from_another_model(codec, tiny_model):
    data = codec.encode(synthetic_image(16, 16, "noise"), steps=2, mode="lossless")
    with pytest.raises(DiffcodecError, match="encoded with model"):
        Codec(tiny_model).decode(data)
