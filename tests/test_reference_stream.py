"""Frozen streams: the bytes a tiny fixed model writes for a tiny image, in both modes.

The model is a small network with seeded weights and a fixed linear schedule, run by the
exact network: the bytes depend on the format, the coders' numerics and the network's
exact arithmetic alone, so they are the same on every machine (tests/test_portability.py
runs this file with no SIMD and one thread). A change to any of them fails here by name;
if it is intended, existing files no longer decode: bump the container version and update
these digests. A generative completion is frozen too: it is the same image everywhere.
"""

import hashlib

import numpy as np
import pytest
import torch

from diffcodec import Codec, DiffusionModel, ModelConfig
from diffcodec.format.container import parse_file

FROZEN = {
    "progressive": "f657045126130156",
    "lossless": "5383848bb9277c76",
}
FROZEN_COMPLETION = "ad3f6ee49ce7d212"


@pytest.fixture(scope="module")
def fixed_codec():
    """Weights from numpy's generator: PyTorch's random initialisation (uniform and normal
    draws) differs between instruction sets. Constant tensors (norm scales, zero outputs
    but the convolutions') keep their values."""
    config = ModelConfig(name="frozen", level_channels=(8, 16), time_embedding_dim=16, patch_size=1,
                         schedule="fixed_linear")
    model = DiffusionModel(config)
    rng = np.random.default_rng(0)
    convolutions = {id(m.weight) for m in model.network.modules() if isinstance(m, torch.nn.Conv2d)}
    with torch.no_grad():
        for parameter in model.parameters():
            if id(parameter) in convolutions:
                values = rng.standard_normal(parameter.shape) * 0.1
            elif parameter.numel() > 1 and bool((parameter != parameter.flatten()[0]).any()):
                fan_in = parameter[0].numel() if parameter.dim() > 1 else 100
                values = rng.uniform(-1, 1, parameter.shape) / np.sqrt(fan_in)
            else:
                continue
            parameter.copy_(torch.from_numpy(values.astype(np.float32)))
    return Codec(model, tile=64, chunk_symbols=64)


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


def test_frozen_completion(fixed_codec):
    data = fixed_codec.encode(_image(), steps=3, seed=11, stored_fallback=False)
    completed = fixed_codec.decode(data, layers=1, completion_steps=2)
    assert hashlib.sha256(completed.tobytes()).hexdigest()[:16] == FROZEN_COMPLETION
