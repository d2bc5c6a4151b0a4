"""Shared fixtures: tiny models and small images generated at run time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffcodec.model import ModelConfig
from diffcodec.model import DiffusionModel

TINY = dict(level_channels=(8, 16), time_embedding_dim=16, patch_size=1)
TINY_MODEL_OPTIONS = dict(level_channels=[8, 16], time_embedding_dim=16, patch_size=1)


def tiny_config(**overrides) -> ModelConfig:
    return ModelConfig(**{**TINY, **overrides})


def randomize_output(model: DiffusionModel, seed: int = 0) -> DiffusionModel:
    """Fresh models predict eps = 0 exactly (zero-initialised output); give them a real one."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.network.modules():
            if isinstance(module, torch.nn.Conv2d):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator) * 0.1)
    return model


@pytest.fixture
def tiny_model() -> DiffusionModel:
    torch.manual_seed(0)
    return randomize_output(DiffusionModel(tiny_config()))


def synthetic_image(height: int, width: int, kind: str, seed: int = 0, channels: int = 3) -> np.ndarray:
    """Small test images: smooth gradients, noise, or blocky 'natural-ish' shapes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    if kind == "noise":
        image = rng.integers(0, 256, (height, width, channels))
    elif kind == "gradient":
        base = (xx * 255 // max(1, width - 1) + yy * 128 // max(1, height - 1)) % 256
        image = np.stack([(base + 40 * c) % 256 for c in range(channels)], axis=-1)
    else:  # shapes: smooth background, a few rectangles and mild noise
        image = np.stack([(xx * 3 + yy * (c + 1)) % 200 + 20 for c in range(channels)], axis=-1).astype(float)
        for _ in range(4):
            top, left = rng.integers(0, max(1, height - 4)), rng.integers(0, max(1, width - 4))
            image[top : top + height // 3, left : left + width // 3] = rng.integers(0, 256, channels)
        image = image + rng.normal(0, 3, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """A folder with a few generated PNGs of different kinds and sizes."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i, (kind, h, w) in enumerate([("gradient", 40, 48), ("shapes", 36, 36), ("shapes", 48, 40), ("gradient", 33, 65)]):
        Image.fromarray(synthetic_image(h, w, kind, seed=i)).save(folder / f"img{i}.png")
    return folder


@pytest.fixture(scope="session")
def trained_tiny_model(tmp_path_factory):
    """A tiny model trained briefly on generated images: ELBO first, then its scale head on the
    progressive (UQ) objective, as the default model is made. A few seconds on a CPU."""
    from diffcodec.model.checkpoint import load_model
    from diffcodec.train import Trainer, TrainOptions

    root = tmp_path_factory.mktemp("trained")
    folder = root / "images"
    folder.mkdir()
    for i in range(6):
        Image.fromarray(synthetic_image(48, 48, "shapes" if i % 2 else "gradient", seed=i)).save(folder / f"{i}.png")
    common = dict(data=[str(folder)], model=TINY_MODEL_OPTIONS, batch_size=8, crop=24, lr=2e-3, warmup_steps=20, progress=False,
                  val_every_minutes=1e9, checkpoint_every_minutes=1e9)
    Trainer(TrainOptions(out=str(root / "elbo"), max_steps=150, **common),
            log=lambda m: None).run()
    Trainer(TrainOptions(out=str(root / "uq"), max_steps=150, objective="uq",
                                        init=str(root / "elbo" / "model.pt"), **common),
            log=lambda m: None).run()
    return load_model(root / "uq" / "model.pt")
