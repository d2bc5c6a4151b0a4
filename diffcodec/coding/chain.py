"""The Gaussian diffusion chain as the bits-back coder walks it (Bit-Swap ordering).

For a band of the image, the encoder (one ANS stack, last in first out):
  pop z_0 ~ q(z_0 | x); push x with p(x | z_0);
  for i = 1..T: pop z_i ~ q(z_i | z_{i-1}) (forward transition); push z_{i-1} with p(z_{i-1} | z_i);
  push z_T with the prior N(0, I).
The decoder runs the mirror image. The net length approaches the T-step NELBO, whose
terms (:func:`prior_kl_bits`, :func:`pixel_bits`, step_context.bits) are here too.

A bridged chain (the progressive stream's tail) ends at a latent z_T that both sides
already know (the last lossy layer's): the encoder pops z_0 ~ q(z_0 | x, z_T) and
z_i ~ q(z_i | z_{i-1}, z_T), the forward process conditioned on its known end, and pushes
z_{T-1} with p(z_{T-1} | z_T) instead of a prior. Its net length approaches the NELBO's
terms below t_T: the bits the lossy layers already sent are not paid again.

Latents live on grids, bin width delta_i = min(sigma_p, sigma_q) / GRID_FRACTION for
variable z_i, the same for its p and q, so the bin widths cancel in the net rate. Encoder
and decoder evaluate every model parameter with the same float64 expressions, in the same
order, so the rounded centres agree exactly.

What keeps the net length at the model's bound:
(1) Calibration and context. The step variance sigma_Q^2 + (k c s_x)^2 uses the network's
    error scale s_x: the chain scale head's, trained on this chain's step KL (train/losses.py
    chain_loss), where the model has one, else the progressive scale head's, trained for
    the progressive layers and off by a step-dependent factor. A step's latent is coded in
    six groups, later ones predicted from the residuals of earlier ones, each with its own
    factor k (step_context.py). The encoder fits them per step on a pilot sample of the
    image (it knows x; one sample of each step's latent) and stores them in the header.
(2) Fresh pops. An ANS pop reads the quantile of the symbol pushed just before, at the same
    position; with an imperfect model that quantile carries the local prediction error and
    the sample drawn from it is atypical. q-samples are popped in a strided order
    (:func:`pop_order`).
(3) Tight ranges for q-samples (ans.py).
(4) Coarse grids: a coarse grid makes pops cheaper, so a band needs fewer initial bits and
    the bands are fewer; the net rate does not change down to half a standard deviation.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import does_not_decode
from ..model import exact
from ..model.diffusion import NUM_LEVELS, alpha_sigma_of, pixel_window_model, scale_pixels_array, step_coefficients
from . import step_context
from .ans import AnsStack
from .step_context import StepContext

GRID_FRACTION = 2
# Band sizing: spare bits per dimension a band keeps on the stack beyond its deepest point.
BAND_MARGIN_BITS = 0.5
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0
_OFFSET_PRIME = 7919  # a large prime: each step's pop order starts at a different position
POP_EXTRA_BITS = 2.047095585180641  # 1/2 log2(2 pi e): a pop's cost beyond log2(std / delta)


def pop_order(count: int, step: int) -> np.ndarray:
    """The order in which the encoder pops a step's q-samples (the decoder pushes them back in
    the same order): a stride near count * 0.618, coprime with count, so that consecutive pops,
    which read the bits of consecutive pushes, land far from the positions pushed."""
    stride = max(1, int(round(count * _GOLDEN)))
    while math.gcd(stride, count) != 1:
        stride += 1
    offset = (step * _OFFSET_PRIME) % count
    return (np.arange(count, dtype=np.int64) * stride + offset) % count


class BitsBackChain:
    """Per-variable grids and coefficients of the T-step chain, identical on both sides.

    ``contexts``: each step's coding parameters (step_context.py; default: no context, factor 1).
    ``bridged``: the chain ends at a known z_T (see the module's docstring); its coded
    latents are z_0..z_{T-1}, else z_0..z_T."""

    def __init__(self, gammas: np.ndarray, contexts: list[StepContext] | None = None, bridged: bool = False) -> None:
        self.steps = len(gammas) - 1
        self.bridged = bridged
        self.latents = self.steps + (not bridged)  # coded latent variables
        # per step i >= 1 (a file's: validated by the container)
        self.contexts = [None] + (list(contexts) if contexts else [StepContext()] * self.steps)
        self.gammas = [float(g) for g in gammas]
        self.alpha, self.sigma = (list(v) for v in zip(*(alpha_sigma_of(g) for g in self.gammas)))
        # forward transition q(z_i | z_{i-1}) = N(a_i z_{i-1}, s_i^2), i >= 1
        self.fwd_scale = [None] + [self.alpha[i] / self.alpha[i - 1] for i in range(1, self.steps + 1)]
        self.fwd_std = [None] + [
            self.sigma[i] * math.sqrt(-float(exact.expm1(self.gammas[i - 1] - self.gammas[i])))
            for i in range(1, self.steps + 1)]
        # reverse step p(z_{i-1} | z_i): posterior coefficients of the step t_i -> t_{i-1}
        self.reverse = [None] + [step_coefficients(self.gammas[i], self.gammas[i - 1])
                                 for i in range(1, self.steps + 1)]
        # q of each coded latent: N(q_prev[i] * (x or z_{i-1}) + q_end[i] * z_T, q_std[i]^2)
        if bridged:
            self.q_prev, self.q_end, q_std = zip(*(self._bridge(i) for i in range(self.latents)))
        else:
            self.q_prev = [self.alpha[0]] + self.fwd_scale[1:]
            self.q_end = [0.0] * self.latents
            q_std = [self.sigma[0]] + self.fwd_std[1:]
        p_std = [float(self.reverse[i + 1].sigma_q) for i in range(self.steps)] + [1.0]
        self.delta = [min(q, p) / GRID_FRACTION for q, p in zip(q_std, p_std)]
        self.q_std, self.p_std = list(q_std), p_std
        # A band's stack is deepest after its first two pops (z_0, then z_1, before z_0 is
        # pushed back); a pop of a Gaussian on the grid costs about log2(std / delta) + 2.05 bits.
        pop_bits = [float(exact.log2(q / d)) + POP_EXTRA_BITS for q, d in zip(q_std, self.delta)]
        self.peak_bits = pop_bits[0] + (pop_bits[1] if self.latents > 1 else 0.0) + BAND_MARGIN_BITS

    def _bridge(self, i: int) -> tuple[float, float, float]:
        """q(z_i | z_{i-1}, z_T) (x in place of z_{i-1} for i = 0): the forward process from
        the earlier variable, conditioned on its end. With a | b the transition from b to a:
        mean = (a_{T|i} s2_{i|prev} z_T + a_{i|prev} s2_{T|i} prev) / s2_{T|prev},
        variance = s2_{i|prev} s2_{T|i} / s2_{T|prev}."""
        end, g = self.steps, self.gammas
        gain = lambda a, b: self.alpha[a] / (self.alpha[b] if b >= 0 else 1.0)  # noqa: E731
        spread = lambda a, b: self.sigma[a] * self.sigma[a] * (-float(exact.expm1(g[b] - g[a])) if b >= 0 else 1.0)  # noqa: E731
        to_end, from_prev, total = spread(end, i), spread(i, i - 1), spread(end, i - 1)
        return (gain(i, i - 1) * to_end / total, gain(end, i) * from_prev / total,
                math.sqrt(from_prev * to_end / total))

    def q_mean(self, i: int, prev: np.ndarray, end: np.ndarray | None) -> np.ndarray:
        """Mean of q for latent i given the earlier variable (x scaled, or z_{i-1}) and z_T."""
        if not self.bridged:
            return self.q_prev[i] * prev
        return self.q_prev[i] * prev + self.q_end[i] * end

    def pixel_model(self, z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """p(x | z_0): first level and probabilities of each element's window."""
        return pixel_window_model(z0, self.gammas[0])


def reverse_step(grid: BitsBackChain, z: np.ndarray, i: int, predict) -> tuple[np.ndarray, np.ndarray]:
    """Mean b z + c x_hat of the model's step p(z_{i-1} | z_i) and s_x = exp(log_scale), the
    predicted error of x_hat, flat arrays. The step's variance is sigma_Q^2 + (k c s_x)^2, k
    a calibration factor per context group (step_context.py). VDM's fixed sigma_Q^2 ignores
    that error, which makes the step overconfident (E[((z - mu) / sigma_Q)^2] well above 1):
    the pushed latents then sit in the model's tails, the bits they leave on the stack are
    not random, and the next bits-back pops draw atypical samples that cost more."""
    coef = grid.reverse[i]
    x_hat, log_scale = predict(z, i)
    return coef.b * z.reshape(-1) + coef.c * x_hat.reshape(-1), exact.exp(log_scale.reshape(-1))


def reverse_std(sigma_q: float, c: float, log_scale: np.ndarray) -> np.ndarray:
    """The model's reverse step std sqrt(sigma_Q^2 + (c s_x)^2), s_x = exp(log_scale) the
    predicted error of x_hat, uncalibrated (step_context.step_std from the log-scale, for
    completion)."""
    return step_context.step_std(sigma_q, c, exact.exp(log_scale))


def push_step(stack: AnsStack, grid: BitsBackChain, i: int, n: np.ndarray, z: np.ndarray, predict) -> None:
    """Push latent z_{i-1} (indices ``n``) with the model's step from ``z`` = z_i (h, w, 3)."""
    mean, scale = reverse_step(grid, z, i, predict)
    step_context.push(stack, n, mean, scale, grid.reverse[i].c, grid.p_std[i - 1], grid.delta[i - 1], z.shape,
                      grid.contexts[i])


def pop_step(stack: AnsStack, grid: BitsBackChain, i: int, z: np.ndarray, predict) -> np.ndarray:
    """Mirror of :func:`push_step`: the indices of z_{i-1}."""
    mean, scale = reverse_step(grid, z, i, predict)
    return step_context.pop(stack, mean, scale, grid.reverse[i].c, grid.p_std[i - 1], grid.delta[i - 1], z.shape,
                            grid.contexts[i])


def _pop_q(stack: AnsStack, mean: np.ndarray, std: float, delta: float, step: int) -> np.ndarray:
    """Pop q-samples (latent indices) in :func:`pop_order`."""
    order = pop_order(mean.size, step)
    n = np.empty(mean.size, dtype=np.int64)
    n[order] = stack.pop_sample(mean[order], std, delta)
    return n


def _push_q(stack: AnsStack, n: np.ndarray, mean: np.ndarray, std: float, delta: float, step: int) -> None:
    order = pop_order(mean.size, step)
    stack.push_sample(n[order], mean[order], std, delta)


def fixed_step_kl_bits(grid: BitsBackChain, i: int, error: np.ndarray) -> float:
    """KL(q(z_{i-1} | z_i, x) || p(z_{i-1} | z_i)) in bits, summed over elements, given the
    errors x - x_hat of the prediction at z_i, with VDM's fixed reverse variance sigma_Q^2
    (the coder's own steps: step_context.bits)."""
    coef = grid.reverse[i]
    return float(((coef.c * error) ** 2).sum() / (2.0 * grid.p_std[i - 1] ** 2) / math.log(2))


def prior_kl_bits(grid: BitsBackChain, x_scaled: np.ndarray) -> float:
    """KL(q(z_T | x) || N(0, I)) in bits, summed over elements."""
    alpha, sigma = grid.alpha[grid.steps], grid.sigma[grid.steps]
    nats = 0.5 * ((alpha * x_scaled) ** 2 + sigma ** 2 - 1.0 - 2.0 * math.log(sigma))
    return float(nats.sum() / math.log(2))


def pixel_bits(grid: BitsBackChain, x: np.ndarray, z0: np.ndarray) -> float:
    """-log2 p(x | z_0) under the coder's pixel model, summed over elements."""
    first, probabilities = grid.pixel_model(z0)
    chosen = probabilities[np.arange(first.size), x.reshape(-1) - first]
    return float(-np.log2(chosen / probabilities.sum(axis=1)).sum())


def encode_band(stack: AnsStack, grid: BitsBackChain, x: np.ndarray, predict, end: np.ndarray | None = None) -> None:
    """Bit-Swap encode one band ``x`` (h, w, 3 uint8); ``predict(z, i)`` -> (x_hat, log_scale)
    at time t_i; ``end``: the band's known z_T (h, w, 3) of a bridged chain."""
    shape = x.shape
    x_scaled = scale_pixels_array(x).reshape(-1)
    end_flat = None if end is None else end.reshape(-1)
    n = _pop_q(stack, grid.q_mean(0, x_scaled, end_flat), grid.q_std[0], grid.delta[0], 0)
    z = n * grid.delta[0]
    stack.push_window(x.reshape(-1), *grid.pixel_model(z))
    for i in range(1, grid.latents):
        n_next = _pop_q(stack, grid.q_mean(i, z, end_flat), grid.q_std[i], grid.delta[i], i)
        z_next = n_next * grid.delta[i]
        push_step(stack, grid, i, n, z_next.reshape(shape), predict)
        n, z = n_next, z_next
    if end is None:  # the last coded latent under the prior N(0, I), else p(z_{T-1} | z_T)
        stack.push_latent(n, np.zeros(n.size), 1.0, grid.delta[grid.latents - 1])
    else:
        push_step(stack, grid, grid.steps, n, end, predict)


def decode_band(stack: AnsStack, grid: BitsBackChain, shape: tuple, predict, end: np.ndarray | None = None) -> np.ndarray:
    """Mirror of :func:`encode_band`: returns the band's pixels (h, w, 3 uint8)."""
    end_flat = None if end is None else end.reshape(-1)
    last = grid.latents - 1
    n = (stack.pop_latent(np.zeros(int(np.prod(shape))), 1.0, grid.delta[last]) if end is None
         else pop_step(stack, grid, grid.steps, end, predict))
    for i in range(last, 0, -1):
        z = n * grid.delta[i]
        n_prev = pop_step(stack, grid, i, z.reshape(shape), predict)
        z_prev = n_prev * grid.delta[i - 1]  # evaluated exactly as the encoder did
        _push_q(stack, n, grid.q_mean(i, z_prev, end_flat), grid.q_std[i], grid.delta[i], i)
        n = n_prev
    z = n * grid.delta[0]
    x = stack.pop_window(*grid.pixel_model(z))
    if x.min(initial=0) < 0 or x.max(initial=0) >= NUM_LEVELS:
        raise does_not_decode("a decoded pixel is out of range")
    x_scaled = scale_pixels_array(x)
    _push_q(stack, n, grid.q_mean(0, x_scaled.reshape(-1), end_flat), grid.q_std[0], grid.delta[0], 0)
    return x.astype(np.uint8).reshape(shape)
