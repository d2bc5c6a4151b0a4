"""Universally quantized reverse steps: the math of one progressive layer.

A reverse step s < t sends z_s ~ U(mu_Q +- Delta/2), the uniform with the Gaussian
posterior's mean and variance (Delta = sqrt(12) sigma_Q). The model's step is
g * U(+-Delta/2) centred on mu_P = b z_t + c x_hat (x_hat: DiffusionModel.
progressive_prediction), with g Gaussian of scale sigma_g = c * s_x, s_x the scale
head's prediction of |x - x_hat|. With a shared dither u
the encoder sends k = round((mu_Q - mu_P)/Delta + u), the decoder sets
z_s = mu_P + (k - u) Delta, an exact sample of the posterior; k costs
-log P(k | u), P(k | u) = Phi((k - u + 1/2)/r) - Phi((k - u - 1/2)/r), r = sigma_g / Delta.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from . import diffusion as dm
from .entropy import log_bin_probability

SQRT12 = math.sqrt(12.0)


@dataclass(frozen=True)
class StepCoefficients:
    """mu = b z_t + c x, and the posterior's sigma_Q, for one step s < t."""

    b: float | torch.Tensor
    c: float | torch.Tensor
    sigma_q: float | torch.Tensor

    @property
    def delta(self):
        return SQRT12 * self.sigma_q


def step_coefficients(gamma_t, gamma_s) -> StepCoefficients:
    """Gaussian posterior q(z_s | z_t, x) coefficients; floats or tensors, any precision.

    With e = -expm1(gamma_s - gamma_t) = 1 - SNR(t)/SNR(s):
    b = alpha_t/alpha_s * sigma_s^2/sigma_t^2, c = alpha_s e, sigma_Q^2 = sigma_s^2 e.
    """
    if isinstance(gamma_t, torch.Tensor):
        sig, sqrt, expm1 = torch.sigmoid, torch.sqrt, torch.expm1
    else:
        sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
        sqrt, expm1 = math.sqrt, math.expm1
    alpha_t2, sigma_t2 = sig(-gamma_t), sig(gamma_t)
    alpha_s2, sigma_s2 = sig(-gamma_s), sig(gamma_s)
    e = -expm1(gamma_s - gamma_t)
    b = sqrt(alpha_t2 / alpha_s2) * sigma_s2 / sigma_t2
    return StepCoefficients(b=b, c=sqrt(alpha_s2) * e, sigma_q=sqrt(sigma_s2 * e))


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
