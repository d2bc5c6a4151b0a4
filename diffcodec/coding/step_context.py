"""Context inside a chain step: a step's latent coded in six groups, each predicted from the
residuals of the groups before it.

The reverse step's Gaussian (chain.reverse_step) treats a latent's elements as independent,
but what it misses, c (x - x_hat), is correlated between neighbouring pixels and between
colour channels. So a step's latent z_{i-1} is coded on a checkerboard in six groups: the
black pixels' red, green and blue, then the white pixels' (a white pixel's four neighbours
are black). A white pixel's mean moves by ``spatial`` times the mean residual z - mean of
its black neighbours in the same channel; green then moves by a multiple of the same
pixel's red residual, blue by multiples of red's and green's (each residual less its
spatial prediction); each group has its own factor on the error term of the variance,
sigma_Q^2 + (k c s_x)^2. The encoder fits all of it per step on pilot crops (it knows x,
:func:`fit`) and stores integers (:class:`StepContext`, ten per step in the header); both
sides evaluate every mean and std with the same elementwise float64 operations in the same
order, so they agree exactly on every machine.
"""

from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..format.container import CHAIN_GROUPS, CHAIN_PARAMS_PER_STEP, CHAIN_SCALE_RANGE, CHAIN_WEIGHT_RANGE
from ..model import exact
from .ans import AnsStack

WEIGHT_UNIT = 2.0**-5  # the spatial and colour weights are integer multiples of it (exact)
CALIBRATION_STEPS_PER_OCTAVE = 16  # a group's error-term factor is 2^(index / this)


def scale_factor(index: int) -> float:
    return float(exact.exp(index / CALIBRATION_STEPS_PER_OCTAVE * exact.LN2))


def step_std(sigma_q: float, c: float, scale: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """A reverse step's std sqrt(sigma_Q^2 + (k c s_x)^2), s_x = ``scale`` the predicted error
    of x_hat and k = ``factor``, in portable arithmetic (the chain's groups code with it,
    completion samples with it: chain.reverse_std)."""
    error = factor * c * scale
    return np.sqrt(sigma_q * sigma_q + error * error)


@dataclass(frozen=True)
class StepContext:
    """One step's coding parameters as the header stores them."""

    scales: tuple[int, ...] = (0,) * CHAIN_GROUPS  # per group: index of its error-term factor
    spatial: int = 0  # white pixels: weight (in WEIGHT_UNIT) of the black neighbours' mean residual
    colour: tuple[int, int, int] = (0, 0, 0)  # green from red; blue from red, from green

    @classmethod
    def from_params(cls, params: list[int]) -> StepContext:
        return cls(tuple(params[:CHAIN_GROUPS]), params[CHAIN_GROUPS], tuple(params[CHAIN_GROUPS + 1 :]))

    def params(self) -> list[int]:
        return [*self.scales, self.spatial, *self.colour]


def contexts_from_params(params: list[int], steps: int) -> list[StepContext]:
    """The header's flat list (CHAIN_PARAMS_PER_STEP per step; empty: no context, factor 1)."""
    if not params:
        return [StepContext()] * steps
    n = CHAIN_PARAMS_PER_STEP
    return [StepContext.from_params(params[k * n : (k + 1) * n]) for k in range(steps)]


@lru_cache(maxsize=16)
def _layout(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Black and white pixel indices (row-major) and each white pixel's neighbour count."""
    parity = (np.add.outer(np.arange(height), np.arange(width)) % 2).reshape(-1)
    ones = np.pad(np.ones((height, width)), 1)
    count = ((ones[:-2, 1:-1] + ones[2:, 1:-1]) + ones[1:-1, :-2]) + ones[1:-1, 2:]
    black, white = np.flatnonzero(parity == 0), np.flatnonzero(parity == 1)
    arrays = black, white, count.reshape(-1)[white]
    for array in arrays:  # cached: shared by every walk over this shape
        array.flags.writeable = False
    return arrays


class _Walk:
    """The groups of one latent in coding order: each group's mean and std from the
    residuals of the groups already done (:meth:`done`)."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray, c: float, sigma_q: float, shape: tuple,
                 context: StepContext) -> None:
        self.height, self.width = shape[0], shape[1]
        self.black, self.white, self.count = _layout(self.height, self.width)
        self.mean, self.scale = mean.reshape(-1, 3), scale.reshape(-1, 3)
        self.c, self.sigma_q, self.context = c, sigma_q, context
        self.residual = np.zeros_like(self.mean)  # z - mean, of the groups done
        self.corrected = np.zeros_like(self.mean)  # the residual less its spatial prediction
        self.spatial = None  # (white pixels, 3): the spatial prediction

    def group(self, g: int) -> tuple[np.ndarray, int, np.ndarray, np.ndarray]:
        """Group g's pixels, channel, means and stds."""
        pixels, channel = (self.black if g < 3 else self.white), g % 3
        mean = self.mean[pixels, channel]
        if g >= 3:
            if self.spatial is None:
                self.spatial = self._spatial()
            mean = mean + self.spatial[:, channel]
        colour = [w * WEIGHT_UNIT for w in self.context.colour]
        if channel == 1:
            mean = mean + colour[0] * self.corrected[pixels, 0]
        elif channel == 2:
            mean = (mean + colour[1] * self.corrected[pixels, 0]) + colour[2] * self.corrected[pixels, 1]
        return pixels, channel, mean, step_std(self.sigma_q, self.c, self.scale[pixels, channel],
                                               scale_factor(self.context.scales[g]))

    def done(self, g: int, z: np.ndarray) -> None:
        """Group g's latent values are known."""
        pixels, channel = (self.black if g < 3 else self.white), g % 3
        residual = z - self.mean[pixels, channel]
        self.residual[pixels, channel] = residual
        self.corrected[pixels, channel] = residual if g < 3 else residual - self.spatial[:, channel]

    def _spatial(self) -> np.ndarray:
        """spatial x the mean residual of each white pixel's black neighbours."""
        neighbours = _neighbour_mean(self.residual.reshape(self.height, self.width, 3), self.white, self.count)
        return (self.context.spatial * WEIGHT_UNIT) * neighbours


def _neighbour_mean(grid: np.ndarray, white: np.ndarray, count: np.ndarray) -> np.ndarray:
    """(white pixels, 3): each white pixel's mean of ``grid`` (h, w, 3) over its in-image
    neighbours, all black (the white entries are not read)."""
    padded = np.pad(grid, ((1, 1), (1, 1), (0, 0)))
    total = ((padded[:-2, 1:-1] + padded[2:, 1:-1]) + padded[1:-1, :-2]) + padded[1:-1, 2:]
    return total.reshape(-1, 3)[white] / count[:, None]


def push(stack: AnsStack, n: np.ndarray, mean: np.ndarray, scale: np.ndarray, c: float, sigma_q: float,
         delta: float, shape: tuple, context: StepContext) -> None:
    """Push a step's latent indices ``n`` (flat, (h, w, 3) row-major) whose model is the
    reverse step's N(mean, sigma_Q^2 + (c s_x)^2), ``scale`` = s_x, in groups (last group
    first: the decoder pops the first one first)."""
    walk = _Walk(mean, scale, c, sigma_q, shape, context)
    indices = n.reshape(-1, 3)
    groups = []
    for g in range(CHAIN_GROUPS):
        pixels, channel, group_mean, group_std = walk.group(g)
        values = indices[pixels, channel]
        walk.done(g, values * delta)
        groups.append((values, group_mean, group_std))
    for values, group_mean, group_std in reversed(groups):
        stack.push_latent(values, group_mean, group_std, delta)


def pop(stack: AnsStack, mean: np.ndarray, scale: np.ndarray, c: float, sigma_q: float, delta: float,
        shape: tuple, context: StepContext) -> np.ndarray:
    """Mirror of :func:`push`: the latent indices, flat."""
    walk = _Walk(mean, scale, c, sigma_q, shape, context)
    indices = np.empty((mean.size // 3, 3), dtype=np.int64)
    for g in range(CHAIN_GROUPS):
        pixels, channel, group_mean, group_std = walk.group(g)
        values = stack.pop_latent(group_mean, group_std, delta)
        walk.done(g, values * delta)
        indices[pixels, channel] = values
    return indices.reshape(-1)


# -- the encoder's fit, and the rate it gives ------------------------------------------------
def _residual_walks(samples, c: float, sigma_q: float, context: StepContext):
    """For each sample (residual r, s_x), both (h, w, 3): the walk over r as the latent (mean
    0), group by group: (group, r less its prediction, the group's std)."""
    for residual, scale in samples:
        walk = _Walk(np.zeros(residual.size), scale, c, sigma_q, residual.shape, context)
        flat = residual.reshape(-1, 3)
        for g in range(CHAIN_GROUPS):
            pixels, channel, prediction, std = walk.group(g)
            values = flat[pixels, channel]
            walk.done(g, values)
            yield g, values - prediction, std, scale.reshape(-1, 3)[pixels, channel]


def _weight(value: float) -> int:
    low, high = CHAIN_WEIGHT_RANGE
    return int(min(high, max(low, round(value / WEIGHT_UNIT)))) if math.isfinite(value) else 0


def fit(samples: list[tuple[np.ndarray, np.ndarray]], c: float, sigma_q: float) -> StepContext:
    """A step's parameters from samples of its residual r = c (x - x_hat) + sigma_Q eps and
    the predicted error scale s_x, each (h, w, 3), on pilot crops: the weights by least
    squares, then each group's factor by the expected code length. Sums are exact sums of
    rounded terms (exact.fixed_sum), so the fit, and with it the file, is the same on every machine."""
    dot = lambda a, b: exact.fixed_sum(a * b, 40)  # noqa: E731  residuals are at most about 2: no overflow
    # spatial: the white pixels' residuals against their black neighbours' mean residual
    whites, neighbours = [], []
    for residual, _ in samples:
        _, white, count = _layout(*residual.shape[:2])
        whites.append(white)
        neighbours.append(_neighbour_mean(residual, white, count))
    flats = [residual.reshape(-1, 3) for residual, _ in samples]
    num = sum(dot(flat[white], near) for flat, white, near in zip(flats, whites, neighbours))
    den = sum(dot(near, near) for near in neighbours)
    spatial = _weight(num / den) if den > 0 else 0
    # colour: each channel's residual less its spatial prediction against the earlier channels'
    corrected = []
    for flat, white, near in zip(flats, whites, neighbours):
        less = flat.copy()
        less[white] = flat[white] - (spatial * WEIGHT_UNIT) * near
        corrected.append(less)
    s = [[sum(dot(k[:, a], k[:, b]) for k in corrected) for b in range(3)] for a in range(3)]
    green = _weight(s[0][1] / s[0][0]) if s[0][0] > 0 else 0
    det = s[0][0] * s[1][1] - s[0][1] * s[0][1]
    blue = ((_weight((s[2][0] * s[1][1] - s[2][1] * s[0][1]) / det), _weight((s[2][1] * s[0][0] - s[2][0] * s[0][1]) / det))
            if det > 0 else (0, 0))
    weights = StepContext(spatial=spatial, colour=(green, *blue))
    # each group's factor: the one minimising the expected code length of its residuals
    errors = [[] for _ in range(CHAIN_GROUPS)]
    for g, d, _, scale in _residual_walks(samples, c, sigma_q, weights):
        errors[g].append((d * d, (c * scale) * (c * scale)))
    scales = tuple(_fit_factor(sigma_q, np.concatenate([e for e, _ in parts]), np.concatenate([m for _, m in parts]))
                   for parts in errors)
    return dataclasses.replace(weights, scales=scales)


def _fit_factor(sigma_q: float, spread: np.ndarray, model: np.ndarray) -> int:
    """The factor index k minimising mean(ln v + spread / v), v = sigma_q^2 + k^2 model."""
    if spread.size == 0:
        return 0

    def cost(index: int) -> float:
        factor = scale_factor(index)
        variance = sigma_q * sigma_q + (factor * factor) * model
        return exact.fixed_sum(exact.log(variance) + spread / variance, 16)

    low, high = CHAIN_SCALE_RANGE  # coarse, then fine: the cost is unimodal
    best = min(range(low, high + 1, 8), key=cost)
    return min(range(max(low, best - 7), min(high, best + 7) + 1), key=cost)


def bits(residual: np.ndarray, scale: np.ndarray, c: float, sigma_q: float, context: StepContext) -> float:
    """The net bits of coding one sample of a step's latent with this context, less the bits
    back of its q: sum of 1/2 (ln(v / sigma_Q^2) + d^2 / v - 1) / ln 2, d the residual less
    its prediction (the rate term of the coder's bound; its mean is the step's KL)."""
    total = 0.0
    for _, d, std, _ in _residual_walks([(residual, scale)], c, sigma_q, context):
        variance = std * std
        total += float(np.sum(np.log(variance / (sigma_q * sigma_q)) + d * d / variance - 1.0))
    return 0.5 * total / math.log(2)
