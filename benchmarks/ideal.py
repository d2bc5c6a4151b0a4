"""The model's ideal-channel curve: the yardstick of the progressive coder.

R(t) = prior KL + 1/2 * integral_t^1 gamma'(tau) E|eps - eps_hat(z_tau)|^2 dtau is what a
perfect channel coder would spend to hand the decoder z_t; the distortion at t is that of
the best estimate from z_t. A real stream above this curve wastes rate in its coder; the
curve itself is the model's quality. The integral is the sum of the Gaussian steps'
KLs 1/2 (SNR(s) - SNR(t)) |x - x_hat(z_t)|^2 on a fine grid, one noise sample per t.
"""

from __future__ import annotations

import math

import numpy as np

import diffcodec  # noqa: F401  (before torch: it sets OpenMP's wait policy, which torch reads as it loads)
import torch
from diffcodec.coding import randomness
from diffcodec.coding.coded import Context
from diffcodec.coding.progressive import best_blend, blend_estimate
from diffcodec.metrics import psnr
from diffcodec.model import diffusion as dm


def ideal_curve(context: Context, rgb: np.ndarray, points: int = 28, t_min: float = 0.3) -> dict:
    """Rate (bits per pixel) and PSNR of the best estimate at ``points`` times evenly spaced
    from 1 down to ``t_min``, for an (H, W, 3) uint8 image."""
    runner = context.runner
    x = dm.scale_pixels_array(rgb)
    pixels = rgb.shape[0] * rgb.shape[1]
    times = np.linspace(1.0, t_min, points + 1)
    gammas = [float(runner.gammas(np.array([t]))[0]) for t in times]
    snr = [math.exp(-g) for g in gammas]
    nats = float(dm.prior_kl(torch.from_numpy(x)[None], torch.tensor([gammas[0]], dtype=torch.float64))[0])
    curve = dict(times=[], bpp=[], psnr=[], psnr_eps=[])
    for j in range(points):
        alpha, sigma = dm.alpha_sigma_of(gammas[j])
        noise = randomness.shared_normal(context.seed, randomness.BOUND, j, x.size).reshape(x.shape)
        x_eps, x_progressive, *_ = runner.predict(alpha * x + sigma * noise, gammas[j], context.tiling, chain=True)
        best = blend_estimate(x_eps, x_progressive, best_blend(x, x_eps, x_progressive))
        if j:  # the point at t_j: the rate to reach z_{t_j}, the estimate from it
            curve["times"].append(float(times[j]))
            curve["bpp"].append(nats / math.log(2) / pixels)
            curve["psnr"].append(psnr(rgb, dm.nearest_pixels(best)))
            curve["psnr_eps"].append(psnr(rgb, dm.nearest_pixels(x_eps)))
        nats += 0.5 * (snr[j + 1] - snr[j]) * float(np.sum((x - x_eps) ** 2))
    return curve
