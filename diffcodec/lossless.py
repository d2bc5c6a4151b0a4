"""Lossless mode: bits-back ANS over the Gaussian diffusion chain (Bit-Swap ordering).

For a band of the image, the encoder (one ANS stack, last in first out):
  pop z_0 ~ q(z_0 | x); push x with p(x | z_0);
  for i = 1..T: pop z_i ~ q(z_i | z_{i-1}) (forward transition); push z_{i-1} with p(z_{i-1} | z_i);
  push z_T with the prior N(0, I).
The decoder runs the mirror image. The net length approaches the T-step NELBO.

Latents live on grids, bin width delta_i = min(sigma_p, sigma_q) / GRID_FRACTION for
variable z_i, the same for its p and q, so the bin widths cancel in the net rate. Symbols
are coded relative to the rounded model mean. Encoder and decoder evaluate every model
parameter with the same float64 expressions, in the same order, so the rounded centres
agree exactly.

What keeps the net length at the model's bound (each measured on Kodak crops):
(1) Calibration. The step variance sigma_Q^2 + (k_i c s_x)^2 uses the network's error scale
    s_x, trained for the progressive layers and off by a step-dependent factor; the encoder
    fits k_i per step on a pilot sample of the image (it knows x, so the fit is exact) and
    stores its index in the header. At T=16 this cut the bound by 16%.
(2) Fresh pops. An ANS pop reads the quantile of the symbol pushed just before, at the same
    position; with an imperfect model that quantile carries the local prediction error and
    the sample drawn from it is atypical. q-samples are popped in a strided order.
(3) Tight ranges. constriction gives every symbol in range a floor probability, so pops
    from bits that are not perfectly random land in the far tails now and then; q-samples
    are coded within +-Q_RANGE_SIGMAS standard deviations. Values under p are coded within
    +-RANGE bins and escaped beyond (only a badly wrong prediction gets there).
(4) Coarse grids. The net rate is the same within noise for grids of 1/32 to 1/2 standard
    deviation (worse at 1/1); a coarse grid makes pops cheaper, so a band needs fewer
    initial bits and the bands are fewer.

Initial bits: the first pop needs bits on the stack. The image is cut into horizontal
bands; band 0 (a few rows) is pushed directly with a simple row predictor, and every later
band pops from what the earlier ones pushed, as large as the stack then allows (the
heights go into the header). The network sees a band together with the rows below it
(decoded before it, since the decoder runs the bands in reverse), noised to the current
step with shared noise. The rows above are not available: each band's top edge costs
some rate, which is why bands are made as tall as possible.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from .diffusion import NUM_LEVELS, pixel_window_model, scale_pixels_array
from .errors import DiffcodecError
from .progressive import step_coefficients

_Ans = constriction.stream.stack.AnsCoder
_QuantizedGaussian = constriction.stream.model.QuantizedGaussian

GRID_FRACTION = 2
RANGE = 512
ESCAPE_HALF_BITS = 16  # an escaped excess is sent as two uniform 16-bit halves
DIRECT_ROWS = 8
# Band sizing: spare bits per dimension a band keeps on the stack beyond its deepest point.
BAND_MARGIN_BITS = 0.5

Q_RANGE_SIGMAS = 6.0
CONTEXT_ROWS = 16
EDGE_ROWS = 4
# Per-step calibration of the reverse step's error term: factor 2^(index / SCALE_STEPS_PER_OCTAVE).
SCALE_STEPS_PER_OCTAVE = 16
SCALE_INDEX_RANGE = (-128, 48)
PILOT_TILE = 128
PILOT_PIXELS = 4 * PILOT_TILE * PILOT_TILE
PILOT_MAX_CROPS = 16
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0

_LATENT_MODEL = _QuantizedGaussian(-RANGE, RANGE)
_ESCAPE_HALF = constriction.stream.model.Uniform(1 << ESCAPE_HALF_BITS)
_PIXEL_MODEL = _QuantizedGaussian(0, NUM_LEVELS - 1)
_WINDOW_MODEL = constriction.stream.model.Categorical(perfect=False)
_sample_models: dict[int, object] = {}


def _sample_model(std: float, delta: float) -> tuple[object, int]:
    """The q-sample model for a std of std / delta bins, over +-Q_RANGE_SIGMAS std, and its
    half range in bins (models cached by range)."""
    half = int(math.ceil(Q_RANGE_SIGMAS * std / delta))
    if half not in _sample_models:
        _sample_models[half] = _QuantizedGaussian(-half, half)
    return _sample_models[half], half


def next_band_rows(stack_bits: int, width: int, rows_left: int, peak_bits: float) -> int:
    """Rows of the next bits-back band: as many as the bits on the stack can serve, a band
    taking up to ``peak_bits`` per dimension (ChainGrid.peak_bits). Fewer, taller bands
    code better: a band's top rows lack the context of the rows above (measured on a 256^2
    crop: about 5 bits per column and channel for each band boundary)."""
    return min(rows_left, max(1, int(stack_bits // (peak_bits * 3 * width))))


def _bins(std, delta: float, count: int) -> np.ndarray:
    """Scale(s) in bins, as the per-symbol float64 array constriction takes."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(std, dtype=np.float64) / delta, (count,)))


def scale_factor(index: int) -> float:
    return 2.0 ** (index / SCALE_STEPS_PER_OCTAVE)


def fit_scale_index(c: float, sigma_q: float, error: np.ndarray, log_scale: np.ndarray) -> int:
    """Scale index minimising the expected cost of coding z_{i-1} ~ q(z_{i-1} | z_i, x) with
    N(b z_i + c x_hat, sigma_q^2 + (k c s_x)^2), given the true errors x - x_hat of a sample.

    E[-ln p] = ln(v) / 2 + (c^2 err^2 + sigma_q^2) / (2 v) + const, v = sigma_q^2 + k^2 c^2 s_x^2.
    """
    spread = (c * error.reshape(-1)) ** 2 + sigma_q ** 2
    model = (c * np.exp(log_scale.reshape(-1))) ** 2

    def cost(index: int) -> float:
        variance = sigma_q ** 2 + scale_factor(index) ** 2 * model
        return float(np.mean(np.log(variance) + spread / variance))

    low, high = SCALE_INDEX_RANGE
    best = min(range(low, high + 1, 8), key=cost)  # coarse, then fine: the cost is unimodal
    return min(range(max(low, best - 7), min(high, best + 7) + 1), key=cost)


def pilot_crops(rgb: np.ndarray) -> list[np.ndarray]:
    """Crops of the image the encoder calibrates the chain on: the whole image when small,
    else PILOT_PIXELS worth of PILOT_TILE squares spread evenly over it."""
    height, width = rgb.shape[:2]
    if height * width <= PILOT_PIXELS:
        return [rgb]
    tile_h = min(PILOT_TILE, height)  # thin images get wider crops, at most PILOT_MAX_CROPS
    tile_w = min(width, max(PILOT_TILE, PILOT_PIXELS // (PILOT_MAX_CROPS * tile_h)))
    count = PILOT_PIXELS // (tile_h * tile_w)
    rows = max(1, min(count, round(math.sqrt(count * height / width))))
    cols = max(1, count // rows)
    crops = []
    for r in range(rows):
        for c in range(cols):
            top = (2 * r + 1) * height // (2 * rows) - tile_h // 2
            left = (2 * c + 1) * width // (2 * cols) - tile_w // 2
            top, left = min(max(0, top), height - tile_h), min(max(0, left), width - tile_w)
            crops.append(rgb[top : top + tile_h, left : left + tile_w])
    return crops


def pop_order(count: int, step: int) -> np.ndarray:
    """The order in which the encoder pops a step's q-samples (the decoder pushes them back in
    the same order): a stride near count * 0.618, coprime with count, so that consecutive pops,
    which read the bits of consecutive pushes, land far from the positions pushed."""
    stride = max(1, int(round(count * _GOLDEN)))
    while math.gcd(stride, count) != 1:
        stride += 1
    offset = (step * 7919) % count
    return (np.arange(count, dtype=np.int64) * stride + offset) % count


class AnsStack:
    """An ANS stack with the push/pop forms the chain needs, on whole arrays."""

    def __init__(self, words: np.ndarray | None = None) -> None:
        self.coder = _Ans(words) if words is not None and words.size else _Ans()

    def words(self) -> np.ndarray:
        return self.coder.get_compressed()

    # Gaussian latents on a grid: symbol = n - round(mean / delta).
    #
    # Samples of q (popped by the encoder, pushed back by the decoder) are coded within
    # +-Q_RANGE_SIGMAS standard deviations. The range must be tight: constriction gives every
    # symbol in range a floor probability, so a pop from bits that are not perfectly random
    # lands in the far tails now and then (measured: 33 per million pops at +-16 sigma), and
    # such a sample costs ~100 bits at the next push. q-samples never escape: a pop can then
    # never blow up, and a decoder that pushes one outside the range is reading a damaged file.
    #
    # Values pushed under p (the model's prediction) may be far off: they are coded within
    # +-RANGE bins, and beyond it sent as the edge value and then the excess (escaped); the
    # decoder pops them in the mirror order.
    def pop_sample(self, mean: np.ndarray, std: float, delta: float) -> np.ndarray:
        centre = np.rint(mean / delta)
        model, _ = _sample_model(std, delta)
        offset = self.coder.decode(model, mean / delta - centre, _bins(std, delta, mean.size))
        return centre.astype(np.int64) + offset.astype(np.int64)

    def push_sample(self, n: np.ndarray, mean: np.ndarray, std: float, delta: float) -> None:
        centre = np.rint(mean / delta)
        offset = n - centre
        model, half = _sample_model(std, delta)
        if np.abs(offset).max(initial=0) > half:
            raise DiffcodecError("damaged file: a latent left its range")
        self.coder.encode_reverse(offset.astype(np.int32), model, mean / delta - centre, _bins(std, delta, n.size))

    def push_latent(self, n: np.ndarray, mean: np.ndarray, std, delta: float) -> None:
        centre = np.rint(mean / delta)
        offset = (n - centre).astype(np.int64)
        escaped = np.abs(offset) >= RANGE
        if escaped.any():  # pushed first, so popped after the edge values that announce them
            excess = np.abs(offset[escaped]) - RANGE
            if excess.max() >= 1 << (2 * ESCAPE_HALF_BITS):
                raise DiffcodecError("lossless coding failed: a latent is absurdly far from its model "
                                     "(is the model broken?)")
            mask = (1 << ESCAPE_HALF_BITS) - 1
            self.coder.encode_reverse((excess & mask).astype(np.int32), _ESCAPE_HALF)
            self.coder.encode_reverse((excess >> ESCAPE_HALF_BITS).astype(np.int32), _ESCAPE_HALF)
        clipped = np.clip(offset, -RANGE, RANGE).astype(np.int32)
        self.coder.encode_reverse(clipped, _LATENT_MODEL, mean / delta - centre, _bins(std, delta, n.size))

    def pop_latent(self, mean: np.ndarray, std, delta: float) -> np.ndarray:
        centre = np.rint(mean / delta)
        offset = self.coder.decode(_LATENT_MODEL, mean / delta - centre, _bins(std, delta, mean.size))
        offset = offset.astype(np.int64)
        escaped = np.abs(offset) >= RANGE
        if escaped.any():
            count = int(escaped.sum())
            high = self.coder.decode(_ESCAPE_HALF, count).astype(np.int64)
            low = self.coder.decode(_ESCAPE_HALF, count).astype(np.int64)
            offset[escaped] = np.sign(offset[escaped]) * (RANGE + (high << ESCAPE_HALF_BITS) + low)
        return centre.astype(np.int64) + offset

    def push_pixels(self, x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
        self.coder.encode_reverse(x.astype(np.int32), _PIXEL_MODEL, mean, std)

    def pop_pixels(self, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
        return self.coder.decode(_PIXEL_MODEL, mean, std)

    # Pixels given z_0: a categorical over a window of levels starting at ``first``.
    def push_window(self, x: np.ndarray, first: np.ndarray, probabilities: np.ndarray) -> None:
        symbols = x.astype(np.int64) - first
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= probabilities.shape[1]:
            raise DiffcodecError("lossless coding failed: a pixel is outside its decoder window")
        self.coder.encode_reverse(symbols.astype(np.int32), _WINDOW_MODEL, probabilities)

    def pop_window(self, first: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        return first + self.coder.decode(_WINDOW_MODEL, probabilities).astype(np.int64)


def _direct_model(rows: list[np.ndarray], width: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of the next row of the direct band, from the rows before it.

    The prediction is the row above, with a spread measured on the rows above: a model
    that fits keeps the bits on the stack random-looking, which the first bits-back pops
    of the next band need (ANS pops read the last pushed symbols' quantiles).
    """
    count = 3 * width
    if not rows:
        return np.full(count, 127.5), np.full(count, 64.0)
    means = rows[-1].reshape(-1).astype(np.float64)
    if len(rows) < 2:
        return means, np.full(count, 32.0)
    spread = np.mean(np.abs(rows[-1].astype(np.float64) - rows[-2].astype(np.float64)))
    return means, np.full(count, max(1.0, 1.25 * spread))


class ChainGrid:
    """Per-variable grids and coefficients of the T-step chain, identical on both sides."""

    def __init__(self, gammas: np.ndarray, scale_indices: list[int] | None = None) -> None:
        self.steps = len(gammas) - 1
        indices = list(scale_indices) if scale_indices else [0] * self.steps
        if len(indices) != self.steps or not all(
                SCALE_INDEX_RANGE[0] <= i <= SCALE_INDEX_RANGE[1] for i in indices):
            raise DiffcodecError("damaged file: invalid chain scale indices")
        self.scale_indices = indices
        # per step i >= 1, the calibration factor on the reverse step's error term
        self.error_factor = [None] + [scale_factor(i) for i in indices]
        sig = lambda v: 1.0 / (1.0 + math.exp(-v))  # noqa: E731
        self.gammas = [float(g) for g in gammas]
        self.alpha = [math.sqrt(sig(-g)) for g in self.gammas]
        self.sigma = [math.sqrt(sig(g)) for g in self.gammas]
        # forward transition q(z_i | z_{i-1}) = N(a_i z_{i-1}, s_i^2), i >= 1
        self.fwd_scale = [None] + [self.alpha[i] / self.alpha[i - 1] for i in range(1, self.steps + 1)]
        self.fwd_std = [None] + [
            self.sigma[i] * math.sqrt(-math.expm1(self.gammas[i - 1] - self.gammas[i]))
            for i in range(1, self.steps + 1)]
        # reverse step p(z_{i-1} | z_i): posterior coefficients of the step t_i -> t_{i-1}
        self.reverse = [None] + [step_coefficients(self.gammas[i], self.gammas[i - 1])
                                 for i in range(1, self.steps + 1)]
        q_std = [self.sigma[0]] + self.fwd_std[1:]
        p_std = [float(self.reverse[i + 1].sigma_q) for i in range(self.steps)] + [1.0]
        self.delta = [min(q, p) / GRID_FRACTION for q, p in zip(q_std, p_std)]
        self.p_std = p_std
        # A band's stack is deepest after its first two pops (z_0, then z_1, before z_0 is
        # pushed back); a pop of a Gaussian on the grid costs about log2(std / delta) + 2.05 bits.
        pop_bits = [math.log2(q / d) + 0.5 * math.log2(2 * math.pi * math.e) for q, d in zip(q_std, self.delta)]
        self.peak_bits = pop_bits[0] + (pop_bits[1] if self.steps else 0.0) + BAND_MARGIN_BITS

    def pixel_model(self, z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(x | z_0): first level and probabilities of each element's window."""
        return pixel_window_model(z0, self.gammas[0])


def band_estimate(x_eps: np.ndarray, x_progressive: np.ndarray) -> np.ndarray:
    """The chain's x_hat for a band (rows first): the eps-based estimate, blended towards the
    progressive one over the band's top EDGE_ROWS rows. Those rows lack the context above
    (decoded later); there x_eps, which divides the noise estimate by alpha, is poor, and the
    direct head is robust (measured on a 256^2 Kodak crop at T=16: a band boundary cost 0.018
    bits/dim with x_eps, 0.0065 with the progressive estimate; the interior codes better with
    x_eps; the blend took full kodim01 from 5.423 to 5.389 bits/dim)."""
    weight = np.clip(1.0 - np.arange(x_eps.shape[0]) / EDGE_ROWS, 0.0, 1.0)[:, None, None]
    return x_eps + weight * (x_progressive - x_eps)


def reverse_step(grid: ChainGrid, z: np.ndarray, i: int, predict) -> tuple[np.ndarray, np.ndarray]:
    """Mean and per-element std of the model's step p(z_{i-1} | z_i), flat arrays.

    The mean is b z + c x_hat; the variance is sigma_Q^2 + (k_i c s_x)^2, where s_x is the
    predicted error of x_hat and k_i the step's calibration factor. VDM's fixed sigma_Q^2 ignores that error, which makes the
    step overconfident (measured: E[((z - mu) / sigma_Q)^2] of 1.5-1.9 on Kodak): the
    pushed latents then sit in the model's tails, the bits they leave on the stack are not
    random, and the next bits-back pops draw atypical samples that cost 10-25% more.
    """
    coef = grid.reverse[i]
    x_hat, log_scale = predict(z, i)
    mean = coef.b * z.reshape(-1) + coef.c * x_hat.reshape(-1)
    std = np.sqrt(grid.p_std[i - 1] ** 2 + (grid.error_factor[i] * coef.c * np.exp(log_scale.reshape(-1))) ** 2)
    return mean, std


def _pop_q(stack: AnsStack, mean: np.ndarray, std: float, delta: float, step: int) -> np.ndarray:
    """Pop q-samples (latent indices) in :func:`pop_order`."""
    order = pop_order(mean.size, step)
    n = np.empty(mean.size, dtype=np.int64)
    n[order] = stack.pop_sample(mean[order], std, delta)
    return n


def _push_q(stack: AnsStack, n: np.ndarray, mean: np.ndarray, std: float, delta: float, step: int) -> None:
    order = pop_order(mean.size, step)
    stack.push_sample(n[order], mean[order], std, delta)


def step_kl_bits(grid: ChainGrid, i: int, error: np.ndarray, log_scale: np.ndarray,
                 calibrated: bool = True) -> float:
    """KL(q(z_{i-1} | z_i, x) || p(z_{i-1} | z_i)) in bits, summed over elements, given the
    errors x - x_hat of the prediction at z_i: the diffusion term of the coder's bound
    (``calibrated=False``: with VDM's fixed reverse variance sigma_Q^2 instead)."""
    coef = grid.reverse[i]
    var_q = grid.p_std[i - 1] ** 2
    var_p = var_q + (grid.error_factor[i] * coef.c * np.exp(log_scale)) ** 2 if calibrated else var_q
    nats = 0.5 * (np.log(var_p / var_q) + (var_q + (coef.c * error) ** 2) / var_p - 1.0)
    return float(nats.sum() / math.log(2))


def prior_kl_bits(grid: ChainGrid, x_scaled: np.ndarray) -> float:
    """KL(q(z_T | x) || N(0, I)) in bits, summed over elements."""
    alpha, sigma = grid.alpha[grid.steps], grid.sigma[grid.steps]
    nats = 0.5 * ((alpha * x_scaled) ** 2 + sigma ** 2 - 1.0 - 2.0 * math.log(sigma))
    return float(nats.sum() / math.log(2))


def pixel_bits(grid: ChainGrid, x: np.ndarray, z0: np.ndarray) -> float:
    """-log2 p(x | z_0) under the coder's pixel model, summed over elements."""
    first, probabilities = grid.pixel_model(z0)
    chosen = probabilities[np.arange(first.size), x.reshape(-1) - first]
    return float(-np.log2(chosen / probabilities.sum(axis=1)).sum())


def encode_band(stack: AnsStack, grid: ChainGrid, x: np.ndarray, predict) -> None:
    """Bit-Swap encode one band ``x`` (h, w, 3 uint8); ``predict(z, i)`` -> (x_hat, log_scale)
    at time t_i."""
    shape = x.shape
    x_scaled = scale_pixels_array(x).reshape(-1)
    n = _pop_q(stack, grid.alpha[0] * x_scaled, grid.sigma[0], grid.delta[0], 0)
    z = n * grid.delta[0]
    stack.push_window(x.reshape(-1), *grid.pixel_model(z))
    for i in range(1, grid.steps + 1):
        n_next = _pop_q(stack, grid.fwd_scale[i] * z, grid.fwd_std[i], grid.delta[i], i)
        z_next = n_next * grid.delta[i]
        mean, std = reverse_step(grid, z_next.reshape(shape), i, predict)
        stack.push_latent(n, mean, std, grid.delta[i - 1])
        n, z = n_next, z_next
    stack.push_latent(n, np.zeros(n.size), 1.0, grid.delta[grid.steps])


def decode_band(stack: AnsStack, grid: ChainGrid, shape: tuple, predict) -> np.ndarray:
    """Mirror of :func:`encode_band`: returns the band's pixels (h, w, 3 uint8)."""
    count = int(np.prod(shape))
    n = stack.pop_latent(np.zeros(count), 1.0, grid.delta[grid.steps])
    for i in range(grid.steps, 0, -1):
        z = n * grid.delta[i]
        mean, std = reverse_step(grid, z.reshape(shape), i, predict)
        n_prev = stack.pop_latent(mean, std, grid.delta[i - 1])
        z_prev = n_prev * grid.delta[i - 1]  # evaluated exactly as the encoder did
        _push_q(stack, n, grid.fwd_scale[i] * z_prev, grid.fwd_std[i], grid.delta[i], i)
        n = n_prev
    z = n * grid.delta[0]
    x = stack.pop_window(*grid.pixel_model(z))
    if x.min(initial=0) < 0 or x.max(initial=0) >= NUM_LEVELS:
        raise DiffcodecError("damaged file: a decoded pixel is out of range")
    x_scaled = scale_pixels_array(x)
    _push_q(stack, n, grid.alpha[0] * x_scaled.reshape(-1), grid.sigma[0], grid.delta[0], 0)
    return x.astype(np.uint8).reshape(shape)


def encode_direct(stack: AnsStack, x: np.ndarray) -> None:
    """Push the direct band row by row (last row first, so the decoder pops row 0 first)."""
    rows = list(x)
    for row in range(x.shape[0] - 1, -1, -1):
        stack.push_pixels(x[row].reshape(-1), *_direct_model(rows[:row], x.shape[1]))


def decode_direct(stack: AnsStack, shape: tuple) -> np.ndarray:
    rows: list[np.ndarray] = []
    for _ in range(shape[0]):
        rows.append(stack.pop_pixels(*_direct_model(rows, shape[1])).astype(np.uint8).reshape(shape[1:]))
    return np.stack(rows)
