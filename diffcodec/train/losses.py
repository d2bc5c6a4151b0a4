"""Training objectives: the VDM NELBO (DiffusionModel.nelbo) and the progressive code
length of universally quantized steps, which trains the progressive heads.

A UQ step s < t sends z_s ~ U(mu_Q +- Delta/2) with a shared dither; the model's step is
g * U(+-Delta/2) centred on mu_P = b z_t + c x_hat, g Gaussian of scale sigma_g = c s_x;
the sent integer costs -log P(k | u), P(k | u) = Phi((k - u + 1/2)/r) - Phi((k - u - 1/2)/r),
r = sigma_g / Delta (coding/progressive.py codes exactly this).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import diffusion as dm
from ..model.diffusion import log_bin_probability, step_coefficients
from ..model.vdm import DiffusionModel

OBJECTIVES = ("elbo", "uq")


def uq_step_bits(offset: torch.Tensor, ratio: torch.Tensor, dither: torch.Tensor) -> torch.Tensor:
    """One-sample estimate of a UQ step's KL per coordinate, in nats.

    ``offset`` = (mu_Q - mu_P)/Delta, ``ratio`` = sigma_g/Delta, ``dither`` ~ U(-1/2, 1/2):
    the cost of the sent integer is -log P_cont(offset + dither) with
    P_cont(v) = Phi((v + 1/2)/r) - Phi((v - 1/2)/r); its mean over the dither is the KL.
    """
    v = offset + dither
    return -log_bin_probability((v - 0.5) / ratio, (v + 0.5) / ratio)


def uq_loss(model, x: torch.Tensor, steps_choices: tuple[int, ...] = (4, 6, 8, 10, 12, 16),
            generator: torch.Generator | None = None, train_trunk: bool = False) -> torch.Tensor:
    """Per-example progressive code length (bits/dim) of the UQ chain, one random step each.

    For each example a step count T and a step i are drawn; z_t comes from the Gaussian
    marginal q(z_t | x) (which the UQ chain matches in mean and variance) and the loss is
    T times that step's UQ KL, so it estimates the sum over the chain. Training on several
    T makes the heads usable at any step count. With ``train_trunk=False`` only the
    progressive heads get gradients, and the eps-prediction stays the lossless model's.
    """
    n, device = x.shape[0], x.device
    x_scaled = dm.scale_pixels(x)
    choice = torch.randint(len(steps_choices), (n,), generator=generator)
    steps = torch.tensor(steps_choices, dtype=torch.float32)[choice]
    index = torch.floor(torch.rand(n, generator=generator) * steps) + 1  # 1..T
    t, s = (index / steps).to(device), ((index - 1) / steps).to(device)
    noise = torch.randn(x.shape, generator=generator).to(device)
    dither = (torch.rand(x.shape, generator=generator) - 0.5).to(device)
    gamma_t, _ = model.schedule(t)
    gamma_s, _ = model.schedule(s)
    z_t = dm.diffuse(x_scaled, gamma_t, noise)
    with torch.set_grad_enabled(train_trunk and torch.is_grad_enabled()):
        features = model.network.features(z_t, gamma_t)
    x_hat, log_scale = model.progressive_prediction(z_t, gamma_t, features)
    coef = step_coefficients(gamma_t.view(-1, 1, 1, 1).double(), gamma_s.view(-1, 1, 1, 1).double())
    c_over_delta = (coef.c / coef.delta).float()
    offset = c_over_delta * (x_scaled - x_hat)
    ratio = c_over_delta * torch.exp(log_scale.float())
    nats = uq_step_bits(offset, ratio, dither).flatten(1).sum(1) * steps.to(device)
    return dm.nats_to_bpd(nats, x[0].numel())


class Objective(nn.Module):
    """A model with a training objective as its forward, for the trainer and
    DistributedDataParallel: per-example loss in bits/dim.

    ``elbo``: the NELBO, with the variance-minimising schedule gradient when ``variance``;
    ``uq``: :func:`uq_loss` (with ``train_trunk`` the trunk learns too).
    """

    def __init__(self, model: DiffusionModel, objective: str, variance: bool = True, train_trunk: bool = False) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: {', '.join(OBJECTIVES)}")
        self.model, self.objective, self.train_trunk = model, objective, train_trunk
        self.variance = variance and objective == "elbo" and model.config.schedule == "learned"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list | None]:
        """(loss per example, variance box): the caller fills the box with 2 L_i before backward."""
        if self.objective == "uq":
            return uq_loss(self.model, x, generator=generator, train_trunk=self.train_trunk), None
        box = [None] if self.variance else None
        return self.model.nelbo(x, generator=generator, variance_box=box).total, box
