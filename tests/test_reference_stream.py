"""Frozen streams: the bytes a tiny fixed model writes for a tiny image, in both modes.

The model is a small network with seeded weights and a fixed linear schedule, run by the
exact network: the bytes depend on the format, the coders' numerics and the network's
exact arithmetic alone, so they are the same on every machine (tests/test_portability.py
runs this test under other instruction sets). A change to any of them fails here by name;
if it is intended, existing files no longer decode: bump the container version and update
these digests.
"""

import hashlib

import numpy as np
import pytest
import torch

from diffcodec import Codec, DiffusionModel, ModelConfig
from diffcodec.format.container import parse_file

from conftest import randomize_output

FROZEN = {
    "progressive": "9529f9f61551153f",
    "lossless": "5cc116fd7e3a8c6a",
}


@pytest.fixture(scope="module")
def fixed_codec():
    torch.manual_seed(0)
    config = ModelConfig(name="frozen", level_channels=(8, 16), time_embedding_dim=16, patch_size=1,
                         schedule="fixed_linear")
    return Codec(randomize_output(DiffusionModel(config)), tile=64, chunk_symbols=64)


def _image():
    yy, xx = np.mgrid[0:13, 0:9]  # taller than the lossless direct band: a bits-back band too
    return np.stack([(xx * 29 + yy * 7) % 256, (yy * 31) % 256, (xx * yy * 5 + 40) % 256], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("mode, steps", [("progressive", 3), ("lossless", 3)])
def test_frozen_stream(fixed_codec, mode, steps):
    image = _image()
    data = fixed_codec.encode(image, steps=steps, seed=11, mode=mode, stored_fallback=False)
    assert np.array_equal(fixed_codec.decode(data), image)
    assert hashlib.sha256(data).hexdigest()[:16] == FROZEN[mode], len(data)
    assert parse_file(data).header.bands  # a bits-back chain in both (the progressive file's tail)
