"""One universally quantized reverse step of a progressive layer, as both sides derive it.

A step sends z_s ~ U(mu_Q +- Delta/2) in the orthonormal block transform of transform.py:
the decoder rebuilds z_s from the sent integers k and the shared dither u (:meth:`Step.latent`),
and every sent k bounds x to a box in the transform domain (:meth:`Step.bounds`), into which
later estimates are projected (:class:`Box`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import diffusion as dm
from ..model import exact
from . import transform

# A skipped coefficient (or one a cut file lacks) gets this fraction of the reverse step's
# noise: full noise puts detail the encoder never sent into the next estimate, none leaves
# the latent too clean for its noise level; chosen on CID22 validation images
# (docs/experiments.md#skip-noise).
SKIP_NOISE = 0.8
# Inside the box, the estimate moves to the mean of a Gaussian belief around it, cut to the
# box: its width BOX_BELIEF times the box's half width, at most BOX_CAP times the layer's
# own scale there (the typical error of the estimate it predicted from), so that a wide
# early box does not pull a good estimate towards its middle. Chosen on CID22 validation
# images (docs/experiments.md#box-projection-and-belief).
BOX_BELIEF = 0.3
BOX_CAP = 0.5
PIXEL_LOW, PIXEL_HIGH = float(dm.scale_pixels_array(0)), float(dm.scale_pixels_array(255))
SQRT_2PI = 2.5066282746310002


@dataclass
class Step:
    """Everything about one UQ step that both sides derive identically."""

    coef: dm.StepCoefficients
    x_hat: np.ndarray  # the estimate the step predicts from
    mu_p: np.ndarray
    dither: np.ndarray  # per coefficient, flat in coding order
    coded: np.ndarray  # bool per coefficient (coding order): the layer's plan codes it
    stds: np.ndarray  # entropy-model scale of every coded symbol

    def _sent(self, symbols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Which coefficients have a symbol (the first len(symbols) coded ones), and k - u
        for them."""
        known = np.zeros(self.dither.size, dtype=bool)
        known[np.flatnonzero(self.coded)[: symbols.size]] = True
        offsets = np.zeros(self.dither.size)
        offsets[known] = symbols - self.dither[known]
        return known, offsets

    def latent(self, symbols: np.ndarray) -> np.ndarray:
        """z_s for the sent integers of the coded coefficients; the rest (skipped, or cut
        off) take k = round(u) = 0, as |u| <= 1/2, with their noise -u scaled by SKIP_NOISE."""
        known, offsets = self._sent(symbols)
        offsets[~known] = -SKIP_NOISE * self.dither[~known]
        return self.mu_p + transform.inverse_coded(offsets, self.mu_p.shape) * self.coef.delta

    def bounds(self, symbols: np.ndarray) -> "Box":
        """Where x lies, from this step's symbols: k = round(o + u) puts every sent
        coefficient of x within Delta / (2c) of x_hat + (k - u) Delta / c (transform domain)."""
        known, offsets = self._sent(symbols)
        width = self.coef.delta / self.coef.c
        centre = transform.forward_coded(self.x_hat) + offsets * width
        scale = np.full(self.dither.size, np.inf, dtype=np.float32)
        scale[known] = self.stds[: symbols.size] * width  # the layer's scale, in units of x
        return Box(np.where(known, centre - width / 2, -np.inf).astype(np.float32),
                   np.where(known, centre + width / 2, np.inf).astype(np.float32), scale)


@dataclass
class Box:
    """Bounds on x's transform coefficients from the step layers so far, and the smallest
    scale of the layers that set them (coding order, float32 to spare memory on large
    images; None before any). A Gaussian denoiser does not know UQ noise is bounded:
    moving its estimate into the box brings it nearer to x, which is inside."""

    low: np.ndarray | None = None
    high: np.ndarray | None = None
    scale: np.ndarray | None = None

    def narrowed(self, other: "Box") -> "Box":
        if self.low is None:
            return other
        return Box(np.maximum(self.low, other.low), np.minimum(self.high, other.high),
                   np.minimum(self.scale, other.scale))

    def project(self, x_hat: np.ndarray) -> np.ndarray:
        """x_hat moved into the box (the mean of the belief cut to it: BOX_BELIEF), then into
        the pixel range."""
        if self.low is None:
            return x_hat
        coefficients = transform.forward_coded(x_hat)
        bounded = np.flatnonzero(np.isfinite(self.low))  # sent coefficients: both bounds finite
        low, high = self.low[bounded].astype(np.float64), self.high[bounded].astype(np.float64)
        mean = coefficients[bounded]
        spread = np.maximum(np.minimum(BOX_BELIEF * 0.5 * (high - low), BOX_CAP * self.scale[bounded]), 1e-30)
        a, b = (low - mean) / spread, (high - mean) / spread
        mass = exact.ndtr(b) - exact.ndtr(a)
        density = (exact.exp(-0.5 * (a * a)) - exact.exp(-0.5 * (b * b))) / SQRT_2PI
        shift = np.divide(density, mass, out=np.zeros_like(mass), where=mass > 1e-9)
        # where the belief has no mass in the box to speak of: the box's nearest point
        coefficients[bounded] = np.clip(np.where(mass > 1e-9, mean + spread * shift, mean), low, high)
        return np.clip(transform.inverse_coded(coefficients, x_hat.shape), PIXEL_LOW, PIXEL_HIGH)

