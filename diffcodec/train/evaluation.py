"""Reproducible measurement of whole images in bits per dimension: the NELBO, the
progressive code length the heads train on, and the lossless chain's code length."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from ..model import diffusion as dm
from ..model import DiffusionModel
from .losses import chain_code_length, uq_loss


@dataclass
class NelboReport:
    """Mean NELBO terms (bits/dim) of one image or of a set."""

    prior: float
    reconstruction: float
    diffusion: float
    total: float
    num_dims: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def to_tensor(image: np.ndarray) -> torch.Tensor:
    """uint8 H W C array -> uint8 1 C H W tensor."""
    if image.ndim == 2:
        image = image[:, :, None]
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)


@torch.no_grad()
def image_nelbo(
    model: DiffusionModel,
    image: np.ndarray | torch.Tensor,
    samples: int = 8,
    steps: int | None = None,
    seed: int = 0,
    max_batch_pixels: int = 1 << 20,
) -> NelboReport:
    """NELBO of one image averaged over ``samples`` (t, eps) draws.

    Times are low-discrepancy over the samples and all noise comes from a CPU generator
    seeded with ``seed``, so the figure is the same on every run and device. Samples are
    batched up to ``max_batch_pixels`` pixels to bound memory on large images.
    """
    x = image if isinstance(image, torch.Tensor) else to_tensor(image)
    if x.ndim == 3:
        x = x.unsqueeze(0)
    x = x.to(model.device)
    generator = torch.Generator().manual_seed(seed)
    times = dm.stratified_times(samples, generator)
    pixels = x.shape[-1] * x.shape[-2]
    per_batch = max(1, max_batch_pixels // pixels)
    sums = {"prior": 0.0, "reconstruction": 0.0, "diffusion": 0.0}
    shape = x.shape[1:]
    for start in range(0, samples, per_batch):
        t = times[start : start + per_batch]
        # Noise is drawn sample by sample so the result does not depend on the batching.
        draws = [torch.randn((2,) + shape, generator=generator) for _ in range(len(t))]
        noise = torch.stack([d[0] for d in draws])
        decoder_noise = torch.stack([d[1] for d in draws])
        batch = x.expand(len(t), -1, -1, -1)
        terms = model.nelbo(batch, t=t, steps=steps, noise=noise, decoder_noise=decoder_noise)
        for name in sums:
            sums[name] += float(getattr(terms, name).double().sum())
    means = {name: value / samples for name, value in sums.items()}
    return NelboReport(total=sum(means.values()), num_dims=x[0].numel(), **means)


def mean_report(reports: list[NelboReport]) -> NelboReport:
    """Mean over images, each weighted by its number of dimensions (bits / total dims)."""
    dims = np.array([r.num_dims for r in reports], dtype=np.float64)
    weights = dims / dims.sum()

    def avg(name: str) -> float:
        return float(sum(w * getattr(r, name) for w, r in zip(weights, reports)))

    return NelboReport(avg("prior"), avg("reconstruction"), avg("diffusion"), avg("total"), int(dims.sum()))


def mean_nelbo(model: DiffusionModel, images: list[np.ndarray], samples: int, seed: int = 0) -> dict:
    """Mean NELBO terms (bits/dim) of the images, each with its own fixed seed."""
    reports = [image_nelbo(model, image, samples=samples, seed=seed + i) for i, image in enumerate(images)]
    return mean_report(reports).to_dict()


@torch.no_grad()
def progressive_code_length(model: DiffusionModel, images: list[np.ndarray], samples: int, seed: int = 0) -> dict:
    """Mean progressive code length (bits/dim, random T and step) of the images, fixed seed."""
    generator = torch.Generator().manual_seed(seed)
    total, dims = 0.0, 0
    for image in images:
        x = to_tensor(image).to(model.device).expand(samples, -1, -1, -1)
        total += float(uq_loss(model, x, generator=generator).mean()) * image.size
        dims += image.size
    return {"total": total / dims, "num_dims": dims}


@torch.no_grad()
def chain_validation(model: DiffusionModel, images: list[np.ndarray], times: torch.Tensor, seed: int = 0) -> dict:
    """Mean diffusion term (bits/dim) of the lossless chain on ``times`` over the images,
    every step summed, fixed seed (losses.chain_code_length)."""
    generator = torch.Generator().manual_seed(seed)
    total, dims = 0.0, 0
    for image in images:
        x = to_tensor(image).to(model.device)
        total += float(chain_code_length(model, x, times, generator=generator)[0]) * image.size
        dims += image.size
    return {"total": total / dims, "num_dims": dims}
