"""Image quality and rate-distortion metrics: PSNR, MS-SSIM, Bjøntegaard delta rate.

Plain numpy and torch, so the figures can be recomputed and checked without extra
dependencies; benchmarks and tests import them from here.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """RGB PSNR in dB for 8-bit images, from the MSE over all pixels and channels
    (not a mean of per-channel PSNRs); ``inf`` for identical images."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over (N, C, H, W), 'valid' borders as in Wang et al."""
    channels = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and mean contrast-structure term, for data range 255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(dim=(0, 2, 3)), cs_map.mean(dim=(0, 2, 3))


def ms_ssim_scales(height: int, width: int, window: int = SSIM_WINDOW) -> int:
    """Number of scales used: the standard 5 when every scale is at least the window wide,
    fewer for small images (each scale halves the sides)."""
    side = min(height, width)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2**scales >= window:
        scales += 1
    return scales


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of two RGB uint8 images.

    Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, 2x2 average
    pooling between scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); negative
    contrast-structure terms are clamped to 0 before the weighted product. Each channel
    gets its own MS-SSIM and the result is their mean.

    Small images: 5 scales need a shorter side of at least 176 pixels (11 * 16). Below
    that only the first M scales whose sides are still >= 11 are used, with their weights
    renormalised to sum to 1 (M = 1 is plain SSIM); below 11 pixels the window shrinks to
    the largest odd size that fits. Figures on such images are comparable between methods
    of one run, not with 5-scale MS-SSIM published elsewhere.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")

    def tensor(a: np.ndarray) -> torch.Tensor:
        a = a if a.ndim == 3 else a[:, :, None]
        return torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)

    x, y = tensor(reference), tensor(test)
    height, width = x.shape[-2:]
    size = min(SSIM_WINDOW, min(height, width))
    size -= 1 - size % 2  # odd
    window = _gaussian_window(size, SSIM_SIGMA)
    scales = ms_ssim_scales(height, width, size)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_and_cs(x, y, window)
        if scale == scales - 1:
            terms.append(torch.relu(ssim))
        else:
            terms.append(torch.relu(cs))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    per_channel = torch.prod(torch.stack(terms) ** weights[:, None], dim=0)
    return float(per_channel.mean())


# -- Bjøntegaard delta rate ---------------------------------------------------------------
def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes of the monotone piecewise cubic Hermite interpolant (as SciPy's
    PchipInterpolator): no overshoot between rate points, unlike one global cubic."""
    h, delta = np.diff(x), np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d[1:-1] = np.where(same_sign, (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:]), 0.0)

    def edge(h0, h1, m0, m1):
        s = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(s) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(s) > 3 * abs(m0):
            return 3 * m0
        return s

    d[0] = edge(h[0], h[1], delta[0], delta[1])
    d[-1] = edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (at - x[k]) / h
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _rd_points(bpp, quality) -> tuple[np.ndarray, np.ndarray]:
    """(quality, log rate) of the curve's efficient points, by increasing quality.

    Non-finite points are dropped, and so is any point that another beats or matches in
    quality at no more rate (e.g. a generative prefix that scores below a shorter one), so
    that log(rate) is a function of quality, as the Bjøntegaard fit assumes.
    """
    r, q = np.asarray(bpp, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    r, q = r[order], q[order]
    efficient = q > np.maximum.accumulate(np.concatenate(([-np.inf], q[:-1])))
    return q[efficient], np.log(r[efficient])


def bd_rate(anchor_bpp, anchor_psnr, test_bpp, test_psnr, samples: int = 2001) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent (negative: the
    test method needs less rate for the same PSNR).

    log(rate) is interpolated as a function of PSNR with a monotone piecewise cubic
    (PCHIP, as in later revisions of VCEG-M33) and the difference is averaged over the
    PSNR interval both curves cover. None when a curve has fewer than two distinct points
    or the PSNR ranges do not overlap.
    """
    qa, la = _rd_points(anchor_bpp, anchor_psnr)
    qt, lt = _rd_points(test_bpp, test_psnr)
    if len(qa) < 2 or len(qt) < 2:
        return None
    low, high = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not high > low:
        return None
    grid = np.linspace(low, high, samples)
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has trapz only
    mean_diff = integrate(_pchip(qt, lt, grid) - _pchip(qa, la, grid), grid) / (high - low)
    return float((math.exp(mean_diff) - 1.0) * 100.0)


def interpolate_at(bpp, values, target: float) -> float | None:
    """Value of a rate curve at ``target`` bpp, linear in log(bpp); None outside its range."""
    r, v = np.asarray(bpp, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(v) & (r > 0)
    r, v = r[keep], v[keep]
    if len(r) == 0 or not r.min() <= target <= r.max():
        return None
    order = np.argsort(r, kind="stable")
    return float(np.interp(math.log(target), np.log(r[order]), v[order]))
