"""Progressive mode: truncatable layers, each a universally quantized reverse step.

Layer j carries the reverse step from t_j to t_{j+1} < t_j; z_1 comes from the seed at
zero bits. The step layers are placed by rate (placement.py): each ends where the file's
size reaches the next rung of a geometric ladder, so a prefix of any useful size ends near
a layer boundary. The last layer is the tail (tail.py): the exact image by bits-back
coding from the last step layer's latent, which costs about what the rest of the chain's
NELBO says, so the whole file costs about a lossless file. The time grid (the step
layers', then the tail's) goes into the header; its number of steps is the header's ``steps``.

A step sends z_s ~ U(mu_Q +- Delta/2), the uniform with the Gaussian posterior's mean and
variance (Delta = sqrt(12) sigma_Q), in the orthonormal block transform of transform.py:
with a dither u shared through the seed, the encoder sends k = round(o + u) for every
coefficient o of (mu_Q - mu_P)/Delta, and the decoder sets z_s = mu_P + T^-1(k - u) Delta,
an exact sample of that uniform. mu_P = b z_t + c x_hat, x_hat the eps-based estimate
blended towards the direct head by a weight the encoder picks per layer (the blend
nearest to x: it is both the best display and the cheapest mean), then projected into
the box the symbols so far put x in (uq_step.py). k is coded with a quantized Laplace of mean u
and a scale the encoder fits per band and layer, shifted per region (indices into
entropy.SCALE_TABLE). Where a band's code would cost more than
layer_plan.SKIP_COST_RATIO times its Gaussian KL, in a whole band or in a region of it, it
is skipped: k = round(u), zero bits, its error left for later steps, its noise scaled by
SKIP_NOISE (layer_plan.py; the plan is the layer's first chunk).

Determinism: the entropy model of every symbol is the seeded dither and a header index,
nothing computed by the network, so the symbols decode the same on any machine; each
layer carries a CRC of its symbols.

Decoding is split in three: :func:`walk` steps the chain through the layers present and
yields where it stands after each one (the exact pixels after a complete tail);
:func:`render` turns such a point into an image (the denoised estimate, or a generative
completion, its detail matched to the original's energy: detail.py); a partly present
layer is finished with its missing coefficients skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np

from ..errors import DiffcodecError, does_not_decode
from ..format.container import BLEND_LEVELS, MAX_SYMBOL, NO_TAIL, TIME_UNITS, LayerInfo, Mode, chunk_count
from ..model import diffusion as dm
from ..model import exact
from . import detail, entropy, layer_plan, randomness, tail, transform
from .chain import reverse_std
from .coded import CodedImage, Context
from .placement import PLACEMENT_TOLERANCE, PLACEMENT_TRIALS, Placer, layer_targets, next_target
from .progress import progress_bar
from .uq_step import Box, Step

# Rate-placed layers by default: previews at 0.05 and 0.2 bpp (0.05-0.1 bpp is about
# the first percent of a photograph's file). Each layer costs more than the KL the tail
# refunds for it, so more layers make the whole file larger
# (docs/experiments.md#default-layer-count).
DEFAULT_STEPS = 2


def layer_estimate_bits(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, low: int, high: int) -> float:
    """The model's estimate of a layer's size, stored in the header: the coder's rounding of
    probabilities is all that separates it from the real size."""
    return float(layer_plan.symbol_bits(symbols, means, stds, low, high).sum())


def _code_layer(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, low: int, high: int,
                chunk_symbols: int, plan: bytes) -> tuple[LayerInfo, list[bytes]]:
    """A step layer's chunks (its plan first) and its description."""
    chunks = entropy.encode_chunks(symbols, means, stds, low, high, chunk_symbols)
    estimate = layer_estimate_bits(symbols, means, stds, low, high) + 8 * len(plan)
    chunks = [plan] + chunks
    return LayerInfo.of(chunks, low, high, entropy.checksum(symbols), estimate), chunks




class LayerChain:
    """The UQ chain of one file: its time grid, start and step layers, the same on both sides."""

    def __init__(self, context: Context, times: list[int], blends: list[int],
                 detail_index: int = detail.NO_DETAIL) -> None:
        self.context = context
        self.times, self.blends = list(times), list(blends)
        self.detail_index = detail_index  # the original's detail energy, which completion matches (detail.py)
        self.gammas = [self.gamma(t) for t in self.times]

    def gamma(self, t_index: int) -> float:
        """gamma at a grid time, evaluated alone (the same float on both sides)."""
        return float(self.context.runner.gammas(np.array([t_index / TIME_UNITS]))[0])

    @property
    def step_layers(self) -> int:
        """Step layers: one per step of the time grid so far."""
        return len(self.times) - 1

    def start(self, height: int, width: int) -> np.ndarray:
        count = height * width * 3
        return randomness.shared_normal(self.context.seed, randomness.START, 0, count).reshape(height, width, 3)

    def predict(self, z: np.ndarray, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """The eps-based and the direct-head estimates at the start of a step layer."""
        x_eps, x_progressive, *_ = self.context.runner.predict(z, self.gammas[layer], self.context.tiling, chain=True)
        return x_eps, x_progressive

    def dither(self, layer: int, count: int) -> np.ndarray:
        return randomness.shared_uniform(self.context.seed, randomness.DITHER, layer, count)

    def step(self, z: np.ndarray, layer: int, x_hat: np.ndarray, plan: layer_plan.LayerPlan,
             dither: np.ndarray) -> Step:
        coef = dm.step_coefficients(self.gammas[layer], self.gammas[layer + 1])
        return Step(coef, x_hat, coef.b * z + coef.c * x_hat, dither, plan.coded,
                    plan.stds(*z.shape[:2]))


def blend_estimate(x_eps: np.ndarray, x_progressive: np.ndarray, blend: int) -> np.ndarray:
    return x_eps + (blend / BLEND_LEVELS) * (x_progressive - x_eps)


def best_blend(x: np.ndarray, x_eps: np.ndarray, x_progressive: np.ndarray) -> int:
    """The blend weight (in 1/BLEND_LEVELS) whose estimate is nearest to x."""
    d = x_progressive - x_eps
    weight = float(np.sum((x - x_eps) * d) / max(float(np.sum(d * d)), 1e-30))
    return int(np.clip(np.rint(weight * BLEND_LEVELS), 0, BLEND_LEVELS))


# -- encoding ------------------------------------------------------------------------------
def encode(context: Context, rgb: np.ndarray, step_layers: int, chunk_symbols: int, progress: bool = False,
           stored_fallback: bool = True, target_bits: float | None = None) -> CodedImage:
    """The progressive layers of an (H, W, 3) uint8 image: ``step_layers`` rate-placed step
    layers, then the tail (bits-back, or a fallback coder where smaller and ``stored_fallback``).
    With ``target_bits``: a lossy file, its step layers on the rate ladder below the target
    and the last placed to end at it (placement.layer_targets), and no tail."""
    height, width = rgb.shape[:2]
    pixels = height * width
    targets = None if target_bits is None else layer_targets(target_bits / pixels)
    step_layers = step_layers if targets is None else len(targets)
    x = dm.scale_pixels_array(rgb)
    sample = layer_plan.FitSample(height, width)
    placer = Placer(context.runner)
    chain = LayerChain(context, [TIME_UNITS], [])
    z = chain.start(height, width)
    box = Box()
    infos, chunks, spent = [], [], 0.0
    for layer in progress_bar(range(step_layers), progress, step_layers + (targets is None), "encode", "layer"):
        x_eps, x_progressive = chain.predict(z, layer)
        blend = best_blend(x, x_eps, x_progressive)
        x_hat = box.project(blend_estimate(x_eps, x_progressive, blend))
        t_index = chain.times[layer]
        dither = chain.dither(layer, z.size)
        error = transform.forward_coded(x - x_hat)  # the offsets of any step from t, up to c / Delta

        def trial(s_index: int) -> tuple[np.ndarray, layer_plan.LayerPlan, float]:
            coef = dm.step_coefficients(chain.gammas[layer], chain.gamma(s_index))
            offsets = (coef.c / coef.delta) * error
            return offsets, *layer_plan.fit(offsets, dither, sample)

        half_error = 0.5 * float(np.sum(error * error))  # KL per unit of SNR
        if targets is None:
            want = (next_target(spent / pixels) * pixels - spent) * exact.LN2
        else:  # (a layer that overshot may leave the next little: it still aims at a byte)
            want = max(targets[layer] * pixels - spent, 8.0) * exact.LN2
        room = step_layers - layer  # the later layers and the tail: at least MIN_STEP each
        s_index = placer.time_for(t_index, want / max(half_error, 1e-30), room)  # the KL's guess
        costs: dict[int, float] = {}  # nats of each time tried
        best = None  # the trial nearest to the target, in ratio (only it is kept: offsets are image-sized)
        for _ in range(PLACEMENT_TRIALS):
            result = trial(s_index)
            costs[s_index] = result[2] * exact.LN2
            miss = abs(float(exact.log(max(costs[s_index], 1e-9) / want)))
            if best is None or miss < best[0]:
                best = (miss, s_index, result)
            if costs[s_index] <= 0 or abs(costs[s_index] / want - 1) <= PLACEMENT_TOLERANCE:
                break
            s_index = placer.next_guess(t_index, list(costs.items()), want, room)
            if s_index in costs:
                break
        _, s_index, (offsets, plan, _) = best
        chain.times.append(s_index)
        chain.gammas.append(chain.gamma(s_index))
        chain.blends.append(blend)
        step = chain.step(z, layer, x_hat, plan, dither)
        symbols = np.rint(offsets[step.coded] + dither[step.coded]).astype(np.int64)
        if symbols.size and np.abs(symbols).max() > MAX_SYMBOL:
            raise DiffcodecError("progressive coding failed: a symbol is absurdly large (is the model broken?)")
        symbols = symbols.astype(np.int32)
        info, data = _code_layer(symbols, dither[step.coded], step.stds,
                                 *entropy.symbol_range(symbols), chunk_symbols,
                                 layer_plan.write(plan, height, width))
        infos.append(info)
        chunks.append(data)
        spent += 8 * info.size
        z = step.latent(symbols)
        box = box.narrowed(step.bounds(symbols))
    x_eps, x_progressive = chain.predict(z, step_layers)  # the display at the tail's start (or the file's end)
    chain.blends.append(best_blend(x, x_eps, x_progressive))
    detail_index = detail.energy_index(rgb)  # what completion matches (detail.py)
    if targets is not None:
        return CodedImage(Mode.PROGRESSIVE, infos, chunks, height, width, steps=step_layers,
                          chunk_symbols=chunk_symbols, times=chain.times, blends=chain.blends, lossy_steps=step_layers,
                          tail_mode=NO_TAIL, detail_index=detail_index)
    end = tail.encode(context, rgb, z, chain.times[-1], stored_fallback)
    times = chain.times + (end.times[1:] if end.mode == Mode.LOSSLESS else [0])
    return CodedImage(Mode.PROGRESSIVE, infos + end.layers, chunks + end.chunks, height, width,
                      steps=len(times) - 1, chunk_symbols=chunk_symbols, bands=end.bands,
                      chain_params=end.chain_params, times=times, blends=chain.blends, lossy_steps=step_layers,
                      tail_mode=end.mode, detail_index=detail_index)


# -- decoding ------------------------------------------------------------------------------
@dataclass
class Point:
    """Where the decoder stands after ``layers`` complete step layers: the latent z at the
    start of step layer ``layers`` (or of the tail) and the estimate there (None at the
    tail's start until shown)."""

    layers: int
    z: np.ndarray
    x_hat: np.ndarray | None
    box: Box  # the bounds on x from the layers so far
    partial: bool = False  # z includes a layer that was only partly present

    @property
    def complete_layers(self) -> int:
        return self.layers - self.partial


@dataclass
class Pixels:
    """The exact image, after the step layers and the tail."""

    layers: int
    rgb: np.ndarray
    partial: bool = False

    @property
    def complete_layers(self) -> int:
        return self.layers


def _decode_layer(coded: CodedImage, layer: int, means: np.ndarray, stds: np.ndarray) -> tuple[np.ndarray, bool]:
    """Symbols of the chunks present of one step layer (after its plan), and whether
    the layer is complete."""
    info = coded.layers[layer]
    symbols = entropy.decode_chunks(coded.chunks[layer][1:], means.size, means, stds, info.low, info.high,
                                    coded.chunk_symbols)
    complete = coded.complete(layer)
    if complete and entropy.checksum(symbols) != info.crc:
        raise does_not_decode(f"layer {layer + 1} fails its checksum")
    return symbols, complete


def chain_of(context: Context, coded: CodedImage) -> LayerChain:
    """The chain of a coded image: the step layers' times (the tail's are its own) and the
    blend at the start of each step layer and of the tail."""
    return LayerChain(context, coded.times[: coded.lossy_steps + 1], coded.blends, coded.detail_index)


def _point(chain: LayerChain, z: np.ndarray, layer: int, box: Box, partial: bool = False) -> Point:
    """The point before step layer ``layer``, with the estimate its step needs; at the tail's
    start that estimate is only the display, computed when shown (:func:`display`): a
    complete tail makes it unnecessary."""
    if layer == chain.step_layers:
        return Point(layer, z, None, box, partial)
    return Point(layer, z, display(chain, z, layer, box), box, partial)


def display(chain: LayerChain, z: np.ndarray, layer: int, box: Box) -> np.ndarray:
    """The estimate of x from the latent at the start of step layer ``layer`` (or of the
    tail): the blend of the eps-based and direct estimates the encoder picked there,
    projected into the bounds the layers so far put on x."""
    x_eps, x_progressive = chain.predict(z, layer)
    return box.project(blend_estimate(x_eps, x_progressive, chain.blends[layer]))


def walk(chain: LayerChain, coded: CodedImage, progress: bool = False) -> Iterator[Point | Pixels]:
    """Mirror of :func:`encode`: step the chain through the layers present, yielding the
    point before each layer and after the last one used: a cut layer's missing
    coefficients are taken as skipped; a complete tail gives the exact pixels."""
    step_layers = chain.step_layers
    point = _point(chain, chain.start(coded.height, coded.width), 0, Box())
    for layer in progress_bar(range(step_layers), progress, step_layers + (coded.tail_mode != NO_TAIL), "decode",
                              "layer"):
        yield point
        complete = coded.complete(layer)
        if len(coded.chunks[layer]) < 2 and not complete:  # nothing but the plan
            return
        plan = layer_plan.read(coded.chunks[layer][0], coded.height, coded.width)
        step = chain.step(point.z, layer, point.x_hat, plan, chain.dither(layer, point.z.size))
        if len(coded.layers[layer].chunk_lengths) != 1 + chunk_count(int(step.coded.sum()), coded.chunk_symbols):
            raise DiffcodecError(f"damaged file: layer {layer + 1} has the wrong number of chunks")
        symbols, complete = _decode_layer(coded, layer, step.dither[step.coded], step.stds)
        point = _point(chain, step.latent(symbols), layer + 1, point.box.narrowed(step.bounds(symbols)),
                       partial=not complete)
        if not complete:
            yield point
            return
    yield point
    if coded.tail_mode == NO_TAIL or not coded.complete(step_layers):
        return
    yield Pixels(step_layers + 1, tail.decode(chain.context, coded, point.z))


def complete_by_sampling(chain: LayerChain, z: np.ndarray, t: float, steps: int, box: Box,
                         progress: bool = False) -> np.ndarray:
    """Finish the image by ancestral sampling from time t to 0 in ``steps`` steps with the
    model's reverse step (chain.reverse_std; without the tail's per-file calibration, which a
    lossy file does not carry): the mean from the eps-based estimate, the denoiser the ELBO
    trains, projected into the bounds the layers put on x; the variance includes the
    network's predicted error of that estimate, without which samples come out smooth
    (docs/experiments.md#generative-completion). Last, the sample's detail is scaled to the
    original's energy, which the file carries (detail.py)."""
    runner, tiling = chain.context.runner, chain.context.tiling
    gammas = runner.gammas(t * (1.0 - np.arange(steps + 1, dtype=np.float64) / steps))
    for n in progress_bar(range(steps), progress, steps, "complete", "step"):
        coef = dm.step_coefficients(float(gammas[n]), float(gammas[n + 1]))
        x_eps, _, _, log_scale = runner.predict(z, float(gammas[n]), tiling, chain=True, edge_rows=0)
        noise = randomness.shared_normal(chain.context.seed, randomness.COMPLETION, n, z.size).reshape(z.shape)
        z = coef.b * z + coef.c * box.project(x_eps) + reverse_std(coef.sigma_q, coef.c, log_scale) * noise
    alpha0, _ = dm.alpha_sigma_of(float(gammas[-1]))
    return detail.match(z / alpha0, chain.detail_index, box)


def render(chain: LayerChain, point: Point | Pixels, completion_steps: int = 0, progress: bool = False) -> np.ndarray:
    """The (H, W, 3) image at a point of the walk: the pixels when decoded, else the display
    estimate (``completion_steps`` = 0) or a completion by ancestral sampling."""
    if isinstance(point, Pixels):
        return point.rgb
    if completion_steps > 0:
        t = chain.times[point.layers] / TIME_UNITS
        return complete_by_sampling(chain, point.z, t, completion_steps, point.box, progress)
    x_hat = point.x_hat if point.x_hat is not None else display(chain, point.z, point.layers, point.box)
    return dm.nearest_pixels(x_hat)


def is_exact(point: Point | Pixels) -> bool:
    return isinstance(point, Pixels)
