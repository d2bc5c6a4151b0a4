"""Progressive mode: one truncatable layer per universally quantized reverse step.

Layer j (j = 0..T-1) carries the reverse step from t = (T-j)/T to s = (T-j-1)/T; layer T
carries the pixels under p(x | z_0), after which the image is exact. z_1 comes from the
seed at zero bits.

A step sends z_s ~ U(mu_Q +- Delta/2), the uniform with the Gaussian posterior's mean and
variance (Delta = sqrt(12) sigma_Q). With a dither u shared through the seed, the encoder
sends k = round((mu_Q - mu_P)/Delta + u) and the decoder sets z_s = mu_P + (k - u) Delta,
an exact sample of that uniform. mu_P = b z_t + c x_hat comes from the model's denoised
estimate (DiffusionModel.progressive_prediction), and k is coded with a quantized
Gaussian of mean u and scale sigma_g / Delta, sigma_g = c s_x, s_x the scale head's
prediction of |x - x_hat|.

Determinism: the entropy model of every symbol is built from the seeded dither and an
integer index into entropy.SCALE_TABLE only, never directly from a network output, and
both sides run the same float64 recursion on the same tiled predictions (runner.py);
each layer carries a CRC of its symbols, so a platform that computes the network
differently is told, not fooled.

Decoding is split in three: :func:`walk` steps the chain through the layers present and
yields where it stands after each one; :func:`render` turns such a point into an image
(the denoised estimate, or a generative completion); :func:`fill_partial` makes the image
of a layer that is only partly present.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from ..errors import DiffcodecError
from ..format.container import CodedImage, DfcFile, LayerInfo, Mode
from ..model import diffusion as dm
from . import entropy, randomness
from .progress import progress_bar
from .runner import ModelRunner, Tiling

DEFAULT_STEPS = 8
# Noise index of the stand-in for the missing symbols of a cut layer (completion only).
_PARTIAL_FALLBACK = 10**6


def layer_estimate_bits(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, low: int, high: int) -> float:
    """Ideal code length (bits) of symbols under the model the coder uses: the Gaussian
    integrated over unit bins, the tails beyond [low, high] folded into the two edge bins
    and every probability at least 2^-24 (as constriction's QuantizedGaussian does). The
    model's estimate of a layer's size, stored in the header; the coder's rounding of
    probabilities is all that separates it from the real size."""
    k = torch.from_numpy(np.asarray(symbols, dtype=np.float64))
    m = torch.from_numpy(np.asarray(means, dtype=np.float64))
    s = torch.from_numpy(np.asarray(stds, dtype=np.float64))
    lower = torch.where(k <= low, -torch.inf, (k - m - 0.5) / s)
    upper = torch.where(k >= high, torch.inf, (k - m + 0.5) / s)
    bits = -dm.log_bin_probability(lower, upper) / math.log(2)
    return float(torch.clamp(bits, max=entropy.PROBABILITY_BITS).sum())


def _code_layer(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, low: int, high: int,
                chunk_symbols: int) -> tuple[LayerInfo, list[bytes]]:
    chunks = entropy.encode_chunks(symbols, means, stds, low, high, chunk_symbols)
    estimate = layer_estimate_bits(symbols, means, stds, low, high)
    return LayerInfo.of(chunks, low, high, entropy.checksum(symbols), estimate), chunks


@dataclass
class Step:
    """Everything about one UQ step that both sides derive identically."""

    index: int  # i: the step goes from t_i = i/T to t_{i-1}
    coef: dm.StepCoefficients
    mu_p: np.ndarray
    x_hat: np.ndarray  # denoised estimate at the step's start time
    dither: np.ndarray
    stds: np.ndarray  # entropy-model scale of every symbol (from the integer table)

    def latent(self, k: np.ndarray) -> np.ndarray:
        """z_s for the sent integers k."""
        return self.mu_p + (k - self.dither) * self.coef.delta


class Chain:
    """The UQ chain of one file: its time grid, start, and steps, the same on both sides."""

    def __init__(self, runner: ModelRunner, steps: int, seed: int, tiling: Tiling) -> None:
        self.runner, self.steps, self.seed, self.tiling = runner, steps, seed, tiling
        self.gammas = runner.uniform_gammas(steps)

    def start(self, height: int, width: int) -> np.ndarray:
        count = height * width * 3
        return randomness.shared_normal(self.seed, randomness.START, 0, count).reshape(height, width, 3)

    def step(self, z: np.ndarray, layer: int) -> Step:
        i = self.steps - layer
        coef = dm.step_coefficients(float(self.gammas[i]), float(self.gammas[i - 1]))
        x_hat, log_scale = self.runner.predict(z, float(self.gammas[i]), self.tiling)
        stds = entropy.SCALE_TABLE[entropy.scale_index(coef.c * np.exp(log_scale) / coef.delta)]
        dither = randomness.shared_uniform(self.seed, randomness.DITHER, layer, z.size).reshape(z.shape)
        return Step(i, coef, coef.b * z + coef.c * x_hat, x_hat, dither, stds)

    def pixel_model(self, z0: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return dm.pixel_coding_model(z0, float(self.gammas[0]))


# -- encoding ------------------------------------------------------------------------------
def encode(runner: ModelRunner, rgb: np.ndarray, steps: int, seed: int, tiling: Tiling,
           chunk_symbols: int, progress: bool = False) -> CodedImage:
    """The progressive layers of an (H, W, 3) uint8 image."""
    chain = Chain(runner, steps, seed, tiling)
    x = dm.scale_pixels_array(rgb)
    z = chain.start(*rgb.shape[:2])
    infos, chunks = [], []
    for layer in progress_bar(range(steps), progress, steps + 1, "encode", "layer"):
        step = chain.step(z, layer)
        mu_q = step.coef.b * z + step.coef.c * x
        k = np.rint((mu_q - step.mu_p) / step.coef.delta + step.dither).astype(np.int32)
        symbols = k.reshape(-1)
        info, data = _code_layer(symbols, step.dither.reshape(-1), step.stds.reshape(-1),
                                 *entropy.symbol_range(symbols), chunk_symbols)
        infos.append(info)
        chunks.append(data)
        z = step.latent(k)
    means, stds = chain.pixel_model(z)
    info, data = _code_layer(rgb.reshape(-1).astype(np.int32), means, stds, 0, 255, chunk_symbols)
    return CodedImage(Mode.PROGRESSIVE, infos + [info], chunks + [data])


# -- decoding ------------------------------------------------------------------------------
@dataclass
class Point:
    """Where the decoder stands after ``layers`` complete layers: the latent z at step
    index ``index`` (time index / T) and the model's estimate there (None at index 0)."""

    layers: int
    z: np.ndarray
    index: int
    x_hat: np.ndarray | None
    partial = False


@dataclass
class PartialStep:
    """A step layer that is only partly present: the symbols that arrived."""

    layers: int  # complete layers before it
    step: Step
    symbols: np.ndarray
    partial = True


@dataclass
class Pixels:
    """The pixel layer: exact when ``complete``, else the mode of p(x | z_0) where missing."""

    layers: int  # complete layers
    rgb: np.ndarray
    complete: bool

    @property
    def partial(self) -> bool:
        return not self.complete


def _decode_layer(f: DfcFile, layer: int, means: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, bool]:
    """Symbols of the chunks present of one layer, and whether the layer is complete."""
    info = f.header.layers[layer]
    symbols = entropy.decode_chunks(f.chunks[layer], means.size, means, stds, info.low, info.high,
                                    f.header.chunk_symbols)
    complete = f.layer_complete(layer)
    if complete and entropy.checksum(symbols) != info.crc:
        raise DiffcodecError(
            f"layer {layer + 1} failed its checksum: the file is damaged, or this machine computes "
            "the model differently from the one that encoded it")
    return symbols, complete


def chain_of(runner: ModelRunner, f: DfcFile) -> Chain:
    header = f.header
    if len(header.layers) != header.steps + 1:
        raise DiffcodecError("damaged file: the layer count does not match the step count")
    runner.check_model(header.model_name, header.model_hash)
    return Chain(runner, header.steps, header.seed, Tiling(header.tile, header.threads))


def walk(chain: Chain, f: DfcFile, progress: bool = False) -> Iterator[Point | PartialStep | Pixels]:
    """Step the chain through the layers present, yielding the point before each layer
    and, last, what the final layer present gave (a partial step, or the pixels)."""
    header = f.header
    steps = chain.steps
    z = chain.start(header.height, header.width)
    for layer in progress_bar(range(steps), progress, steps + 1, "decode", "layer"):
        step = chain.step(z, layer)
        yield Point(layer, z, step.index, step.x_hat)
        if not f.chunks[layer]:
            return
        symbols, complete = _decode_layer(f, layer, step.dither.reshape(-1), step.stds.reshape(-1))
        if not complete:
            yield PartialStep(layer, step, symbols)
            return
        z = step.latent(symbols.reshape(z.shape))
    yield Point(steps, z, 0, None)
    if not f.chunks[steps]:
        return
    symbols, complete = _decode_layer(f, steps, *chain.pixel_model(z))
    pixels = dm.pixel_mode(z, float(chain.gammas[0])).reshape(-1)
    pixels[: symbols.size] = symbols
    yield Pixels(steps + complete, pixels.reshape(z.shape), complete)


def complete_by_sampling(chain: Chain, z: np.ndarray, t: float, steps: int) -> np.ndarray:
    """Finish the image by ancestral sampling from time t to 0 in ``steps`` steps."""
    gammas = chain.runner.gammas(t * (1.0 - np.arange(steps + 1, dtype=np.float64) / steps))
    for n in range(steps):
        coef = dm.step_coefficients(float(gammas[n]), float(gammas[n + 1]))
        x_hat, _ = chain.runner.predict(z, float(gammas[n]), chain.tiling)
        noise = randomness.shared_normal(chain.seed, randomness.COMPLETION, n, z.size).reshape(z.shape)
        z = coef.b * z + coef.c * x_hat + coef.sigma_q * noise
    return dm.pixel_mode(z, float(gammas[-1]))


def fill_partial(chain: Chain, partial: PartialStep, completion_steps: int) -> np.ndarray:
    """The image of a step layer cut short: the received symbols place their elements of
    z_s; the rest keep the model's estimate (or, with a completion, a sample of the step)."""
    step = partial.step
    shape = step.mu_p.shape
    received = np.zeros(step.mu_p.size, dtype=bool)
    received[: partial.symbols.size] = True
    received = received.reshape(shape)
    k = np.zeros(step.mu_p.size)
    k[: partial.symbols.size] = partial.symbols
    z = step.latent(k.reshape(shape))
    i = step.index - 1
    if completion_steps > 0:
        noise = randomness.shared_normal(chain.seed, randomness.COMPLETION, _PARTIAL_FALLBACK, z.size)
        z = np.where(received, z, step.mu_p + step.coef.sigma_q * noise.reshape(shape))
        return complete_by_sampling(chain, z, i / chain.steps, completion_steps)
    if i == 0:
        new = dm.pixel_mode(z, float(chain.gammas[0]))
    else:
        new = dm.nearest_pixels(chain.runner.predict(z, float(chain.gammas[i]), chain.tiling)[0])
    return np.where(received, new, dm.nearest_pixels(step.x_hat))


def render(chain: Chain, point: Point | PartialStep | Pixels, completion_steps: int = 0) -> np.ndarray:
    """The (H, W, 3) image at a point of the walk: the pixels when decoded, else the denoised
    estimate (``completion_steps`` = 0) or a completion by ancestral sampling."""
    if isinstance(point, Pixels):
        return point.rgb
    if isinstance(point, PartialStep):
        return fill_partial(chain, point, completion_steps)
    if point.index == 0:
        return dm.pixel_mode(point.z, float(chain.gammas[0]))
    if completion_steps > 0:
        return complete_by_sampling(chain, point.z, point.index / chain.steps, completion_steps)
    return dm.nearest_pixels(point.x_hat)


def is_exact(point: Point | PartialStep | Pixels) -> bool:
    return isinstance(point, Pixels) and point.complete
