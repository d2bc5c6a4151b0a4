"""The diffusion model: a noise schedule and a denoiser, and its NELBO in bits/dim."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import diffusion as dm
from .config import ModelConfig
from .network import SCALE_HEAD_INIT, UNet
from .schedule import build_schedule, variance_gradient


@dataclass
class Nelbo:
    """Per-example NELBO terms in bits per dimension (each a tensor of shape (N,))."""

    prior: torch.Tensor
    reconstruction: torch.Tensor
    diffusion: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.reconstruction + self.diffusion

    def detach(self) -> "Nelbo":
        return Nelbo(self.prior.detach(), self.reconstruction.detach(), self.diffusion.detach())


class DiffusionModel(nn.Module):
    """Variational diffusion model (VDM) with eps-prediction and a discrete decoder."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.schedule = build_schedule(config)
        self.network = UNet(config)
        self.use_bf16 = False  # autocast the network to bf16 (CUDA training only)

    def forward(self, x: torch.Tensor, **kwargs) -> Nelbo:
        """The NELBO terms (:meth:`nelbo`); training objectives wrap the model (train/losses.py)."""
        return self.nelbo(x, **kwargs)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def gamma(self, t: torch.Tensor) -> torch.Tensor:
        return self.schedule(t)[0]

    def predict_noise(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """eps_hat(z_t, gamma_t), always in float32 (the network may run in bf16)."""
        with torch.autocast(z.device.type, dtype=torch.bfloat16, enabled=self.use_bf16):
            out = self.network(z, gamma)
        eps = out[0] if isinstance(out, tuple) else out
        return eps.float()

    def progressive_prediction(self, z: torch.Tensor, gamma: torch.Tensor, features=None):
        """The progressive coder's denoised estimate and the log-scale of its error
        (the last two of :meth:`chain_prediction`).

        x_hat = alpha^2 x_eps + (1 - alpha^2) x_direct, each clipped to [-1, 1]: the eps-based
        estimate where the noise is low (it is excellent there), the direct head where the
        noise is high (dividing by a small alpha makes eps-prediction useless there).
        Without progressive heads: the clipped eps-based estimate and a fixed scale.
        """
        _, x_hat, log_scale, _ = self.chain_prediction(z, gamma, features)
        return x_hat, log_scale

    def chain_prediction(self, z: torch.Tensor, gamma: torch.Tensor, features=None):
        """From one network pass: the clipped eps-based estimate the ELBO trains (the lossless
        chain's mean; never farther from x than unclipped), the progressive estimate (the
        chain uses it at band tops, where context is missing), the log-scale of its error
        (fixed without progressive heads), and the log-scale of the eps-based estimate's
        error from the chain head (the progressive one without it)."""
        if features is None:
            features = self.network.features(z, gamma)
        out = self.network.heads(features, z.shape[-2:])
        alpha, sigma = dm.alpha_sigma(gamma.reshape(-1, 1, 1, 1).to(z.dtype))
        eps = (out[0] if isinstance(out, tuple) else out).to(z.dtype)
        x_eps = torch.clamp((z - sigma * eps) / alpha, -1.0, 1.0)
        if not isinstance(out, tuple):
            log_scale = torch.full_like(z, SCALE_HEAD_INIT)
            return x_eps, x_eps, log_scale, log_scale
        x_direct, log_scale = torch.clamp(out[1].to(z.dtype), -1.0, 1.0), out[2].to(z.dtype)
        chain_log_scale = out[3].to(z.dtype) if len(out) > 3 else log_scale
        weight = alpha.square()
        return x_eps, weight * x_eps + (1 - weight) * x_direct, log_scale, chain_log_scale

    def predict_image(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """Denoised estimate x_hat = (z_t - sigma_t eps_hat) / alpha_t in model space."""
        alpha, sigma = dm.alpha_sigma(gamma.reshape(-1, 1, 1, 1))
        return (z - sigma * self.predict_noise(z, gamma)) / alpha

    def nelbo(
        self,
        x: torch.Tensor,
        t: torch.Tensor | None = None,
        steps: int | None = None,
        noise: torch.Tensor | None = None,
        decoder_noise: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        variance_box: list | None = None,
    ) -> Nelbo:
        """One-sample estimate of the NELBO of integer images ``x`` (N, C, H, W) in 0..255.

        ``steps=None`` gives the continuous-time bound, an integer T the T-step bound.
        ``t`` (N,) defaults to low-discrepancy times. Noise comes from ``generator`` on
        the CPU (so results do not depend on the device) unless given explicitly.
        ``variance_box`` switches on the variance-minimising schedule gradient: the
        caller fills it with 2 L_i after computing the loss (see schedule.py).
        """
        n, device = x.shape[0], x.device
        num_dims = x[0].numel()
        x_scaled = dm.scale_pixels(x)
        if t is None:
            t = dm.stratified_times(n, generator)
        if noise is None:
            noise = torch.randn(x.shape, generator=generator)
        if decoder_noise is None:
            decoder_noise = torch.randn(x.shape, generator=generator)
        t, noise, decoder_noise = t.to(device), noise.to(device), decoder_noise.to(device)

        ends = torch.tensor([0.0, 1.0], device=device)
        gamma_ends, _ = self.schedule(ends)
        gamma_0 = gamma_ends[0].expand(n)
        gamma_1 = gamma_ends[1].expand(n)

        prior = dm.prior_kl(x_scaled, gamma_1)
        z0 = dm.diffuse(x_scaled, gamma_0, decoder_noise)
        reconstruction = dm.reconstruction_nll(x, z0, gamma_0)

        if steps is None:
            gamma_t, dgamma = self.schedule(t)
        else:
            t, s = dm.discretise_times(t, steps)
            gamma_t, _ = self.schedule(t)
            gamma_s, _ = self.schedule(s)
        if variance_box is not None:
            gamma_t = variance_gradient(gamma_t, variance_box)
            if steps is None:
                dgamma = variance_gradient(dgamma, variance_box)
            else:
                gamma_s = variance_gradient(gamma_s, variance_box)
        z_t = dm.diffuse(x_scaled, gamma_t, noise)
        sq_err = dm.squared_error(noise, self.predict_noise(z_t, gamma_t))
        if steps is None:
            diffusion = dm.continuous_diffusion_loss(dgamma, sq_err)
        else:
            diffusion = dm.discrete_diffusion_loss(gamma_t, gamma_s, steps, sq_err)

        return Nelbo(
            prior=dm.nats_to_bpd(prior, num_dims),
            reconstruction=dm.nats_to_bpd(reconstruction, num_dims),
            diffusion=dm.nats_to_bpd(diffusion, num_dims),
        )
