"""Diffusion math of the variance-preserving process, independent of any network.

Torch functions work on float tensors in NCHW layout and return per-example sums in nats;
conversion to bits per dimension happens in one place (:func:`nats_to_bpd`). The coders
use the float64 numpy twins (``*_array``, :func:`pixel_window_model`, ...) and
:func:`step_coefficients`, which takes floats or tensors, so that training and coding
share one definition of every formula.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from . import exact

NUM_LEVELS = 256
_LN2 = math.log(2.0)


def scale_pixels(x: torch.Tensor) -> torch.Tensor:
    """Map 8-bit integers 0..255 to bin centres in [-1, 1]: (x + 0.5) / 128 - 1."""
    return (x.to(torch.float32) + 0.5) / 128.0 - 1.0


def scale_pixels_array(x: np.ndarray) -> np.ndarray:
    """:func:`scale_pixels` for the coders, in float64 numpy."""
    return (np.asarray(x).astype(np.float64) + 0.5) / 128.0 - 1.0


def alpha_sigma_of(gamma: float) -> tuple[float, float]:
    """alpha and sigma of the variance-preserving process at a float gamma (the coders' twin
    of :func:`alpha_sigma`, portable: exact.py)."""
    return math.sqrt(float(exact.sigmoid(-gamma))), math.sqrt(float(exact.sigmoid(gamma)))


def pixel_window_model(z0: np.ndarray, gamma_0: float) -> tuple[np.ndarray, np.ndarray]:
    """p(x | z_0) exactly as the NELBO has it (VDM's decoder, :func:`reconstruction_nll`), for
    the lossless coder: per element the first level of a window of 2h+1 levels around
    z_0 / alpha_0 (h = :func:`decoder_window`, beyond which the mass is negligible) and the
    unnormalised probabilities of those levels (0 outside 0..255). Sharper than a
    quantized Gaussian (docs/experiments.md#pixel-decoder)."""
    alpha0, _ = alpha_sigma_of(gamma_0)
    half = decoder_window(gamma_0)
    u = z0.reshape(-1) / alpha0
    nearest = np.clip(np.rint((u + 1.0) * 128.0 - 0.5), 0, NUM_LEVELS - 1)
    first = nearest - half
    levels = first[:, None] + np.arange(2 * half + 1)
    distance = u[:, None] - ((levels + 0.5) / 128.0 - 1.0)
    logits = -0.5 * float(exact.exp(-gamma_0)) * (distance * distance)
    logits[(levels < 0) | (levels >= NUM_LEVELS)] = -np.inf
    probabilities = exact.exp(logits - logits.max(axis=1, keepdims=True))
    return first.astype(np.int64), probabilities


def nearest_pixels(x_scaled: np.ndarray) -> np.ndarray:
    """The nearest 8-bit levels of model-space values (inverse of :func:`scale_pixels_array`)."""
    return np.clip(np.rint((x_scaled + 1.0) * 128.0 - 0.5), 0, 255).astype(np.uint8)


def pixel_levels(device: torch.device | str = "cpu") -> torch.Tensor:
    """The 256 bin centres, in model space."""
    return scale_pixels(torch.arange(NUM_LEVELS, device=device))


def alpha_sigma(gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t, sigma_t of the variance-preserving process from gamma_t."""
    return torch.sigmoid(-gamma).sqrt(), torch.sigmoid(gamma).sqrt()


def _per_example(gamma: torch.Tensor, ndim: int) -> torch.Tensor:
    """Broadcast a (N,) gamma against an N-first tensor with ``ndim`` dims."""
    return gamma.reshape(gamma.shape + (1,) * (ndim - gamma.ndim))


def diffuse(x_scaled: torch.Tensor, gamma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Sample z_t = alpha_t x + sigma_t eps from q(z_t | x)."""
    alpha, sigma = alpha_sigma(_per_example(gamma, x_scaled.ndim))
    return alpha * x_scaled + sigma * noise


def prior_kl(x_scaled: torch.Tensor, gamma_1: torch.Tensor) -> torch.Tensor:
    """KL(q(z_1 | x) || N(0, I)) per example, in nats."""
    g = _per_example(gamma_1, x_scaled.ndim)
    alpha2, sigma2 = torch.sigmoid(-g), torch.sigmoid(g)
    kl = 0.5 * (sigma2 + alpha2 * x_scaled.square() - 1.0 - torch.log(sigma2))
    return kl.flatten(1).sum(1)


def decoder_logits(z0: torch.Tensor, gamma_0: torch.Tensor) -> torch.Tensor:
    """Logits of the discrete decoder p(x | z_0) over all 256 values, in a new last dim.

    VDM's decoder: logit_k = -1/2 exp(-gamma_0) (z_0 / alpha_0 - x_k)^2.
    """
    g = _per_example(gamma_0, z0.ndim)
    alpha0 = torch.sigmoid(-g).sqrt()
    precision = torch.exp(-g).unsqueeze(-1)
    levels = pixel_levels(z0.device)
    return -0.5 * precision * (z0.unsqueeze(-1) / alpha0.unsqueeze(-1) - levels).square()


# Logits more than this far below the largest add less than exp(-60) to the normaliser.
_NEGLIGIBLE_LOGIT = 60.0


def decoder_window(gamma_0: float) -> int:
    """Half-width in bins of the part of p(x | z_0) that carries any mass.

    The logits fall off as -1/2 exp(-gamma_0) d^2 with the distance d from z_0/alpha_0,
    so bins further than sqrt(2 * 60 exp(gamma_0)) are negligible (bins are 1/128 wide).
    """
    reach = math.sqrt(2.0 * _NEGLIGIBLE_LOGIT * float(exact.exp(float(gamma_0)))) * 128.0
    return min(NUM_LEVELS, int(math.ceil(reach)) + 1)


def reconstruction_nll(
    x: torch.Tensor, z0: torch.Tensor, gamma_0: torch.Tensor, chunk_elements: int = 1 << 20
) -> torch.Tensor:
    """-log p(x | z_0) per example in nats, for integer images ``x``.

    The normaliser is a log-sum-exp over the bins within :func:`decoder_window` of
    z_0/alpha_0 (exact to float precision, and about 40x cheaper than all 256 for the
    usual gamma_0), evaluated in chunks so memory stays bounded on large images.
    """
    n = x.shape[0]
    g0 = gamma_0.reshape(n, 1)
    alpha0 = torch.sigmoid(-g0).sqrt()
    precision = torch.exp(-g0).unsqueeze(-1)
    half = decoder_window(float(gamma_0.detach().max()))
    offsets = torch.arange(-half, half + 1, device=z0.device)
    flat_x = x.reshape(n, -1).long()
    flat_u = z0.reshape(n, -1) / alpha0  # position of z_0 on the data scale
    rows = max(1, chunk_elements // (n * offsets.numel()))
    total = torch.zeros(n, device=z0.device, dtype=torch.float32)
    for start in range(0, flat_x.shape[1], rows):
        u = flat_u[:, start : start + rows]
        target = scale_pixels(flat_x[:, start : start + rows])
        nearest = torch.clamp(torch.round((u + 1.0) * 128.0 - 0.5), 0, NUM_LEVELS - 1)
        bins = nearest.unsqueeze(-1) + offsets
        logits = -0.5 * precision * (u.unsqueeze(-1) - scale_pixels(bins)).square()
        logits = logits.masked_fill((bins < 0) | (bins >= NUM_LEVELS), float("-inf"))
        log_norm = torch.logsumexp(logits, dim=-1)
        target_logit = -0.5 * precision.squeeze(-1) * (u - target).square()
        total = total + (log_norm - target_logit).sum(1)
    return total


def squared_error(noise: torch.Tensor, noise_pred: torch.Tensor) -> torch.Tensor:
    """||eps - eps_hat||^2 per example."""
    return (noise - noise_pred).square().flatten(1).sum(1)


def continuous_diffusion_loss(dgamma_dt: torch.Tensor, sq_err: torch.Tensor) -> torch.Tensor:
    """Continuous-time diffusion loss estimate 1/2 gamma'(t) ||eps - eps_hat||^2 (nats)."""
    return 0.5 * dgamma_dt * sq_err


def discrete_diffusion_loss(
    gamma_t: torch.Tensor, gamma_s: torch.Tensor, steps: int, sq_err: torch.Tensor
) -> torch.Tensor:
    """T-step diffusion loss estimate (T/2) (exp(gamma_t - gamma_s) - 1) ||eps - eps_hat||^2."""
    return 0.5 * steps * torch.expm1(gamma_t - gamma_s) * sq_err


def nats_to_bpd(nats: torch.Tensor, num_dims: int) -> torch.Tensor:
    return nats / (num_dims * _LN2)


def stratified_times(count: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Low-discrepancy times t_i = (u_0 + i / count) mod 1, one per example."""
    u0 = torch.rand((), generator=generator)
    return torch.remainder(u0 + torch.arange(count, dtype=torch.float32) / count, 1.0)


def discretise_times(t: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Map t in [0, 1) to step ends t = i/T (i in 1..T) and their starts s = t - 1/T."""
    i = torch.clamp(torch.floor(t * steps) + 1, 1, steps)
    return i / steps, (i - 1) / steps


# -- one reverse step s < t -------------------------------------------------------------
SQRT12 = math.sqrt(12.0)


@dataclass(frozen=True)
class StepCoefficients:
    """mu = b z_t + c x, and the posterior's sigma_Q, for one step s < t."""

    b: float | torch.Tensor
    c: float | torch.Tensor
    sigma_q: float | torch.Tensor

    @property
    def delta(self):
        """Width of the uniform with the posterior's variance (universal quantization)."""
        return SQRT12 * self.sigma_q


def step_coefficients(gamma_t, gamma_s) -> StepCoefficients:
    """Gaussian posterior q(z_s | z_t, x) coefficients; floats or tensors, any precision.

    With e = -expm1(gamma_s - gamma_t) = 1 - SNR(t)/SNR(s):
    b = alpha_t/alpha_s * sigma_s^2/sigma_t^2, c = alpha_s e, sigma_Q^2 = sigma_s^2 e.
    """
    if isinstance(gamma_t, torch.Tensor):
        sig, sqrt, expm1 = torch.sigmoid, torch.sqrt, torch.expm1
    else:  # the coders': portable (exact.py)
        sig = lambda v: float(exact.sigmoid(v))  # noqa: E731
        expm1 = lambda v: float(exact.expm1(v))  # noqa: E731
        sqrt = math.sqrt
    alpha_t2, sigma_t2 = sig(-gamma_t), sig(gamma_t)
    alpha_s2, sigma_s2 = sig(-gamma_s), sig(gamma_s)
    e = -expm1(gamma_s - gamma_t)
    b = sqrt(alpha_t2 / alpha_s2) * sigma_s2 / sigma_t2
    return StepCoefficients(b=b, c=sqrt(alpha_s2) * e, sigma_q=sqrt(sigma_s2 * e))


def log_bin_probability(lower: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """log(Phi(upper) - Phi(lower)) for lower < upper, stable in both tails: the log
    probability of a Gaussian bin, for the UQ objective and the coder's size estimates."""
    flip = (lower + upper) > 0  # work in the lower tail, where log_ndtr is accurate
    a = torch.where(flip, -upper, lower)
    b = torch.where(flip, -lower, upper)
    log_b = torch.special.log_ndtr(b)
    log_a = torch.special.log_ndtr(a)
    return log_b + torch.log1p(-torch.exp(torch.clamp(log_a - log_b, max=-1e-12)))
