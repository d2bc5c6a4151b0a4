"""Training objectives: the VDM NELBO (DiffusionModel.nelbo), the progressive code length
of universally quantized steps, which trains the progressive heads, and the lossless
chain's code length on its time grid (:func:`chain_loss`), which tunes a model for it.

A UQ step s < t sends z_s ~ U(mu_Q +- Delta/2) with a shared dither; the model's step is
g * U(+-Delta/2) centred on mu_P = b z_t + c x_hat, g Gaussian of scale sigma_g = c s_x;
the sent integer costs -log P(k | u), P(k | u) = Phi((k - u + 1/2)/r) - Phi((k - u - 1/2)/r),
r = sigma_g / Delta (the heads' training objective; coding/progressive.py now codes the
symbols with a Laplace whose scale the encoder fits per band and region).
"""

from __future__ import annotations

import torch
from torch import nn

from ..model import diffusion as dm
from ..model.diffusion import log_bin_probability, step_coefficients
from ..model.vdm import DiffusionModel

OBJECTIVES = ("elbo", "uq", "chain")


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


def chain_step_nats(error: torch.Tensor, snr_gap: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """KL per element (nats) of the lossless chain's step s <- t: q(z_s | z_t, x) against
    N(mu, sigma_Q^2 + c^2 s_x^2) (coding/chain.py with calibration factor 1), i.e.
    1/2 [ln(1 + r s_x^2) + (1 + r e^2) / (1 + r s_x^2) - 1], r = SNR(s) - SNR(t), e = x - x_eps.
    Its minimum over s_x is at s_x^2 = E[e^2 | z_t] for every r: the head learns the error
    of x_eps, the step sizes only weight the examples."""
    v = 1.0 + snr_gap * torch.exp(2.0 * log_scale)
    return 0.5 * (torch.log(v) + (1.0 + snr_gap * error.square()) / v - 1.0)


def _chain_step(model, x_scaled: torch.Tensor, gamma_t: torch.Tensor, gamma_s: torch.Tensor, noise: torch.Tensor):
    """One step s <- t of the lossless chain for each example: z_t, the trunk's features at
    z_t, SNR(s) - SNR(t) (N, 1, 1, 1), and the step KL per element (nats) with x_eps and
    the chain scale head."""
    z_t = dm.diffuse(x_scaled, gamma_t, noise)
    features = model.network.features(z_t, gamma_t)
    x_eps, _, _, chain_log_scale = model.chain_prediction(z_t, gamma_t, features)
    snr_gap = (torch.exp(-gamma_s.double()) - torch.exp(-gamma_t.double())).float().view(-1, 1, 1, 1)
    return z_t, features, snr_gap, chain_step_nats(x_scaled - x_eps, snr_gap, chain_log_scale.float())


def chain_loss(model, x: torch.Tensor, times: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example code length (bits/dim) of the lossless chain on the grid ``times``
    (t_0 = 0 < ... < t_T = 1), one random step each, times T: the diffusion term of the
    bound the bits-back coder reaches (coding/lossless.py), prior and pixel terms aside.

    The trunk, eps head and chain scale head learn the chain's step KL at exactly the
    grid's steps (VDM, and Watson et al., find that a model tuned for the few steps it is
    evaluated at does much better there than the continuous-time model). The progressive
    heads learn the same KL for their estimate from the trunk's features, detached, so the
    estimate the coder uses at band edges follows the new trunk (such a model is a lossless
    model: its progressive heads no longer serve the UQ layers). The schedule stays as it
    is: the grid is in t.
    """
    steps = len(times) - 1
    x_scaled = dm.scale_pixels(x)
    index = torch.randint(1, steps + 1, (x.shape[0],), generator=generator)
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    with torch.no_grad():
        gamma_t, _ = model.schedule(times[index].to(x.device))
        gamma_s, _ = model.schedule(times[index - 1].to(x.device))
    z_t, features, snr_gap, nats = _chain_step(model, x_scaled, gamma_t, gamma_s, noise)
    # the progressive heads, on detached features, learn the same step KL for their estimate:
    # the chain uses them at band edges (not counted in the loss reported)
    x_hat, log_scale = model.progressive_prediction(z_t.detach(), gamma_t, features.detach())
    edge = chain_step_nats(x_scaled - x_hat, snr_gap, log_scale.float()).flatten(1).sum(1) * steps
    return dm.nats_to_bpd(nats.flatten(1).sum(1) * steps + edge - edge.detach(), x[0].numel())


@torch.no_grad()
def chain_code_length(model, x: torch.Tensor, times: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Per-example diffusion term (bits/dim) of the lossless chain on ``times``, every step
    summed (one noise draw each), calibration factor 1: what :func:`chain_loss` estimates,
    without the progressive heads' part."""
    x_scaled = dm.scale_pixels(x)
    gammas, _ = model.schedule(times.to(x.device))
    total = torch.zeros(x.shape[0], dtype=torch.float64)
    for i in range(1, len(times)):
        noise = torch.randn(x.shape, generator=generator).to(x.device)
        *_, nats = _chain_step(model, x_scaled, gammas[i].expand(x.shape[0]), gammas[i - 1].expand(x.shape[0]), noise)
        total += nats.flatten(1).sum(1).double().cpu()
    return dm.nats_to_bpd(total, x[0].numel())


class Objective(nn.Module):
    """A model with a training objective as its forward, for the trainer and
    DistributedDataParallel: per-example loss in bits/dim.

    ``elbo``: the NELBO, with the variance-minimising schedule gradient when ``variance``;
    ``uq``: :func:`uq_loss` (with ``train_trunk`` the trunk learns too);
    ``chain``: :func:`chain_loss` on the grid ``chain_times``, plus ``elbo_weight`` times the
    continuous NELBO (tuning for the chain alone lets the continuous bound drift).
    """

    def __init__(self, model: DiffusionModel, objective: str, variance: bool = True, train_trunk: bool = False,
                 chain_times: torch.Tensor | None = None, elbo_weight: float = 0.0) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}: {', '.join(OBJECTIVES)}")
        if objective == "chain" and (chain_times is None or not model.config.chain_scale_head):
            raise ValueError("the chain objective needs a model with a chain scale head and a time grid")
        self.model, self.objective, self.train_trunk = model, objective, train_trunk
        self.chain_times, self.elbo_weight = chain_times, elbo_weight
        self.variance = variance and objective == "elbo" and model.config.schedule == "learned"

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, list | None]:
        """(loss per example, variance box): the caller fills the box with 2 L_i before backward."""
        if self.objective == "uq":
            return uq_loss(self.model, x, generator=generator, train_trunk=self.train_trunk), None
        if self.objective == "chain":
            loss = chain_loss(self.model, x, self.chain_times, generator=generator)
            if self.elbo_weight:
                loss = loss + self.elbo_weight * self.model.nelbo(x, generator=generator).total
            return loss, None
        box = [None] if self.variance else None
        return self.model.nelbo(x, generator=generator, variance_box=box).total, box
