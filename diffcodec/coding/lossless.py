"""Lossless mode: bits-back coding of the image over the diffusion chain (chain.py), band
by band, with fallbacks that need no model (the predictive pixel coder, zlib: stored.py) for
the images where the chain loses to them.

Initial bits: the first pop needs bits on the stack. The image is cut into horizontal
bands; band 0 (a few rows) is pushed directly with a small predictive coder (direct.py), and every later
band pops from what the earlier ones pushed, as tall as the stack then allows (the
heights go into the header). The network sees a band together with the rows below it
(decoded before it, since the decoder runs the bands in reverse), noised to the current
step with shared noise. The rows above are not available: each band's top edge costs
some rate, which is why bands are made as tall as possible, and why the top rows use the
progressive estimate, whose direct head copes better with missing context.

The time grid is the model's optimised one for T steps where its checkpoint has one
(model/time_grid.py; stored in the header), else uniform. The encoder calibrates the
chain's step parameters (reverse variances and context weights, step_context.py) on
pilot crops of the image (it knows x; one sample of each step's latent) and stores them
in the header.
:func:`bound` computes the T-step NELBO of the model the coder uses: the rate it aims at.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import DiffcodecError, does_not_decode
from ..format.container import Mode
from ..model import exact
from ..model.diffusion import scale_pixels_array
from . import chain, direct, entropy, randomness, step_context, stored
from .ans import AnsStack
from .chain import BitsBackChain
from .coded import CodedImage, Context
from .progress import counter_bar, progress_bar
from .runner import ModelRunner

# 16: the shipped model was tuned for a 16-step chain; its 32-step files are larger (docs/experiments.md)
DEFAULT_STEPS = 16
DIRECT_ROWS = 8
CONTEXT_ROWS = 16
EDGE_ROWS = 4
PILOT_TILE = 128
PILOT_PIXELS = 4 * PILOT_TILE * PILOT_TILE
PILOT_MAX_CROPS = 16


def next_band_rows(stack_bits: int, width: int, rows_left: int, peak_bits: float) -> int:
    """Rows of the next bits-back band: as many as the bits on the stack can serve, a band
    taking up to ``peak_bits`` per dimension (BitsBackChain.peak_bits). Fewer, taller bands
    code better: a band's top rows lack the context of the rows above."""
    return min(rows_left, max(1, int(stack_bits // (peak_bits * 3 * width))))


def network_rows(bands: list[int]) -> int:
    """Rows the network sees per step over a band plan: each bits-back band with the context
    rows below it (a plan of one-row bands costs up to 1 + CONTEXT_ROWS times the image)."""
    rows, below = 0, 0
    for height in reversed(bands[1:]):
        rows += height + min(CONTEXT_ROWS, below)
        below += height
    return rows


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


def band_estimate(interior: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The chain's x_hat (or log-scale) for a band (rows first): the eps-based estimate,
    blended towards the progressive one over the band's top EDGE_ROWS rows. Those rows lack
    the context above (decoded later); there x_eps, which divides the noise estimate by
    alpha, is poor, and the direct head is robust; the interior codes better with x_eps
    (docs/experiments.md#band-edges-and-the-direct-band). The log-scales of their errors
    are blended alike. ``edge`` may hold only those rows: below them the weight is 0."""
    rows = min(EDGE_ROWS, len(interior))
    weight = (1.0 - np.arange(rows) / EDGE_ROWS)[:, None, None]
    out = interior.copy()
    out[:rows] = interior[:rows] + weight * (edge[:rows] - interior[:rows])
    return out


# -- the chain of one image ----------------------------------------------------------------
def chain_grid(runner: ModelRunner, steps: int, times: list[int], params: list[int] | None = None,
               bridged: bool = False) -> BitsBackChain:
    """The chain on the file's time grid (explicit ``times``, t_T first, or uniform) with the
    header's step parameters (none: no context, factor 1)."""
    return BitsBackChain(runner.chain_gammas(steps, times), step_context.contexts_from_params(params or [], steps),
                         bridged)


def band_predictor(context: Context, grid: BitsBackChain, below: np.ndarray, band: int):
    """(x_hat, log_scale) for a band at step i, the network seeing ``below`` (pixels of the
    rows under the band, known to both sides) noised to step i with shared noise as context."""
    below_scaled = scale_pixels_array(below)
    noise = randomness.shared_normal(context.seed, randomness.CONTEXT, band, below.size).reshape(below.shape)

    def predict(z: np.ndarray, i: int) -> tuple[np.ndarray, np.ndarray]:
        rows = z.shape[0]
        if below.size:
            z = np.concatenate([z, grid.alpha[i] * below_scaled + grid.sigma[i] * noise], axis=0)
        x_eps, x_progressive, log_scale, chain_log_scale = context.runner.predict(z, grid.gammas[i], context.tiling,
                                                                                  chain=True, edge_rows=EDGE_ROWS)
        return (band_estimate(x_eps[:rows], x_progressive[:rows]),
                band_estimate(chain_log_scale[:rows], log_scale[:rows]))

    return predict


def _noised_predictions(context: Context, x_scaled: np.ndarray, grid: BitsBackChain, i: int,
                        purpose: int, index: int) -> tuple[np.ndarray, np.ndarray]:
    """The errors x - x_hat at step i for z_i ~ q(z_i | x) and their predicted scale s_x, both
    shaped as x_scaled (encoder side only: calibration and the bound; the noise comes from a
    shared stream for reproducibility)."""
    noise = randomness.shared_normal(context.seed, purpose, index, x_scaled.size).reshape(x_scaled.shape)
    x_hat, _, _, log_scale = context.runner.predict(grid.alpha[i] * x_scaled + grid.sigma[i] * noise,
                                                    grid.gammas[i], context.tiling, chain=True, edge_rows=0)
    return x_scaled - x_hat, exact.exp(log_scale)


def _step_residual(context: Context, grid: BitsBackChain, i: int, error: np.ndarray, purpose: int,
                   index: int) -> np.ndarray:
    """A sample of z_{i-1} ~ q(z_{i-1} | z_i, x) less the model's mean: c (x - x_hat) + sigma_Q eps."""
    eps = randomness.shared_normal(context.seed, randomness.RESIDUAL, (purpose << 32) + index, error.size)
    return grid.reverse[i].c * error + grid.p_std[i - 1] * eps.reshape(error.shape)


def calibrate(context: Context, rgb: np.ndarray, steps: int, times: list[int]) -> list[int]:
    """The header's step parameters (step_context.fit per step), fitted on pilot crops of the
    image noised to each step."""
    grid = chain_grid(context.runner, steps, times)
    crops = [scale_pixels_array(crop) for crop in pilot_crops(rgb)]
    params = []
    for i in range(1, grid.steps + 1):
        samples = []
        for k, crop in enumerate(crops):
            error, scale = _noised_predictions(context, crop, grid, i, randomness.PILOT, i * len(crops) + k)
            samples.append((_step_residual(context, grid, i, error, randomness.PILOT, i * len(crops) + k), scale))
        params += step_context.fit(samples, grid.reverse[i].c, grid.p_std[i - 1]).params()
    return params


def bound(context: Context, rgb: np.ndarray, steps: int, times: list[int] | None = None) -> dict:
    """The T-step NELBO of the model the lossless coder uses (its calibrated steps with their
    context, the coder's x_hat), in bits per dimension: the rate :func:`encode` aims at.
    The prior term is an exact Gaussian KL, each step's term one sample of the step's
    latent (step_context.bits), the reconstruction term one sample of z_0; the whole image
    is one band. ``fixed_variance_total``: the same with VDM's fixed reverse variance and no
    context (exact KLs), i.e. VDM's T-step NELBO (with x_eps clipped) summed over all T steps
    rather than sampled. On the grid :func:`encode` uses, or on explicit ``times`` ([] = uniform)."""
    times = context.runner.chain_times(steps) if times is None else times
    grid = chain_grid(context.runner, steps, times, calibrate(context, rgb, steps, times))
    x_scaled = scale_pixels_array(rgb)
    diffusion, fixed = [], []
    for i in range(1, steps + 1):
        error, scale = _noised_predictions(context, x_scaled, grid, i, randomness.BOUND, i)
        residual = _step_residual(context, grid, i, error, randomness.BOUND, i)
        diffusion.append(step_context.bits(residual, scale, grid.reverse[i].c, grid.p_std[i - 1], grid.contexts[i]))
        fixed.append(chain.fixed_step_kl_bits(grid, i, error))
    z0 = grid.alpha[0] * x_scaled.reshape(-1) + grid.sigma[0] * randomness.shared_normal(
        context.seed, randomness.BOUND, 0, rgb.size)
    terms = dict(prior=chain.prior_kl_bits(grid, x_scaled), reconstruction=chain.pixel_bits(grid, rgb, z0),
                 diffusion=float(sum(diffusion)))
    per_dim = {name: bits / rgb.size for name, bits in terms.items()}
    total = sum(per_dim.values())
    return dict(total=total, **per_dim, per_step=[b / rgb.size for b in diffusion],
                fixed_variance_total=total + (sum(fixed) - terms["diffusion"]) / rgb.size)


# -- encoding and decoding ---------------------------------------------------------------
def encode_chain(context: Context, rgb: np.ndarray, steps: int, times: list[int],
                 end: np.ndarray | None = None, progress: bool = False) -> CodedImage:
    """The (H, W, 3) uint8 image by bits-back over a ``steps``-step chain on ``times`` (t_T
    first, [] = uniform), calibrated on the image: one whole-image LOSSLESS layer with its
    band plan, step parameters and times. ``end``: the known z_T (H, W, 3) of a bridged chain
    (the progressive stream's tail)."""
    params = calibrate(context, rgb, steps, times)
    grid = chain_grid(context.runner, steps, times, params, bridged=end is not None)
    height, width = rgb.shape[:2]
    stack = AnsStack()
    bands = [min(height, DIRECT_ROWS)]
    direct.encode(stack, rgb[: bands[0]])
    done = bands[0]
    bar = counter_bar(progress, height, done, "encode", "row")
    while done < height:
        rows = next_band_rows(stack.num_bits(), width, height - done, grid.peak_bits)
        below = rgb[done + rows : done + rows + CONTEXT_ROWS]
        predict = band_predictor(context, grid, below, len(bands))
        chain.encode_band(stack, grid, rgb[done : done + rows], predict,
                          None if end is None else end[done : done + rows])
        bands.append(rows)
        done += rows
        bar.update(rows)
    bar.close()
    return stored.whole_image(Mode.LOSSLESS, stack.to_bytes(), rgb, steps=steps, bands=bands, chain_params=params,
                              times=times)


def decode_chain(context: Context, coded: CodedImage, end: np.ndarray | None = None, progress: bool = False,
                 what: str = "lossless file") -> np.ndarray:
    """Mirror of :func:`encode_chain`: the exact (H, W, 3) pixels of a complete LOSSLESS
    layer (of ``what``, for the error), checked against the encoder's checksum."""
    if not coded.complete(0):
        raise DiffcodecError(f"truncated file: a {what} only decodes when complete")
    grid = chain_grid(context.runner, coded.steps, coded.times, coded.chain_params, bridged=end is not None)
    stack = AnsStack.from_bytes(b"".join(coded.chunks[0]))
    bands, width = coded.bands, coded.width
    decoded: list = [None] * len(bands)
    tops = np.concatenate([[0], np.cumsum(bands)])
    # constriction rejects inconsistent data (it may panic): errors.boundary reports it
    for k in progress_bar(range(len(bands) - 1, 0, -1), progress, len(bands) - 1, "decode", "band"):
        # every band has at least one row: CONTEXT_ROWS bands always cover the context
        later = decoded[k + 1 : k + 1 + CONTEXT_ROWS]
        below = np.concatenate(later, axis=0)[:CONTEXT_ROWS] if later else np.zeros((0, width, 3), np.uint8)
        predict = band_predictor(context, grid, below, k)
        decoded[k] = chain.decode_band(stack, grid, (bands[k], width, 3), predict,
                                       None if end is None else end[tops[k] : tops[k + 1]])
    decoded[0] = direct.decode(stack, (bands[0], width, 3))
    rgb = np.concatenate(decoded, axis=0)
    if not stack.is_empty() or entropy.checksum(rgb.reshape(-1)) != coded.layers[0].crc:
        raise does_not_decode(f"the {what} fails its image checksum")
    return rgb


def encode(context: Context, rgb: np.ndarray, steps: int, progress: bool = False,
           stored_fallback: bool = True) -> CodedImage:
    """One bits-back layer for an (H, W, 3) uint8 image; where a fallback without the model
    does better (stored.py: the predictive pixel coder, or zlib for noise and graphics), that
    instead, unless ``stored_fallback`` is False."""
    coded = encode_chain(context, rgb, steps, context.runner.chain_times(steps), progress=progress)
    return stored.or_fallback(coded, rgb, stored_fallback)


def decode(context: Context, coded: CodedImage, progress: bool = False) -> np.ndarray:
    """Mirror of :func:`encode`: the exact (H, W, 3) pixels of a lossless file's layer."""
    if coded.mode != Mode.LOSSLESS:
        return stored.decode(coded)
    return decode_chain(context, coded, progress=progress)
