"""Which coefficients a progressive step layer codes, and at what scale.

A UQ step pays about r log(1/r) bits for a coefficient whose offset is r << 1 (the flips
of round(o + u)), against the Gaussian KL's r^2, so coding a band where its error is small
costs several times what the step carries. Skipping it there instead (the model's own
guess in its place) leaves the latent off x, and later steps predict worse. A step's error
is uneven in space (edges and texture against flat sky), so the encoder decides per band
*and* per region of REGION x REGION pixels: it codes a band in the regions where the code
costs at most SKIP_COST_RATIO times the step's Gaussian KL, and skips it elsewhere.

The plan is the layer's first chunk:
* one scale byte per band: an index into entropy.SCALE_TABLE, or SKIP for a band coded
  nowhere;
* for each coded band, a byte: ALL_REGIONS, or q, the probability (q + 1/2) / 255 that a
  region of the band is coded;
* a byte for the region scale shifts: NO_SHIFTS, or the scale-table index of the Laplace
  they are coded with;
* range coded (constriction's queue coder): the region flags of the bands that have a
  probability, with it (Bernoulli), band by band, regions in raster order; then, where
  there are shifts, one per region holding coded coefficients, in raster order. A shift
  moves every coded scale of its region by SHIFT_STEP table steps: a band's scale fits its
  average region, and a busy region's symbols are larger than a quiet one's (2-3 % fewer
  bits in the large layers, after the side information).

The scales and probabilities are integers, so both sides build the same entropy model.
Fitting a plan, writing it and reading it share that layout, so they stay in one module
(over 300 lines).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import constriction
import numpy as np

from ..errors import DiffcodecError
from ..format.container import BAND_SCALE_BYTES
from ..model import exact
from . import entropy, transform

REGION = 32  # side (pixels) of the regions a band is coded or skipped in: one DCT block
SKIP = 255  # scale byte of a band coded nowhere
ALL_REGIONS = 255  # probability byte of a band coded in every region (no flags sent)
SKIP_COST_RATIO = 2.0  # REGION and this chosen on CID22 validation images
# (docs/experiments.md#rate-ladder-and-skip-regions)
NO_SHIFTS = 255  # shift byte of a layer without region scale shifts
SHIFT_STEP = 2  # scale-table steps (1/8 octave each) per unit of region shift
MAX_SHIFT = 6  # shifts run from -MAX_SHIFT to MAX_SHIFT
STREAM_FLUSH_BITS = 64  # what closing a range-coded stream can add: up to two words
FIT_SAMPLES = 4096  # coefficients per band the scale fit looks at
_SCALE_TRIALS = range(-8, 9, 2)  # table steps around each band's RMS the fit tries
_BERNOULLI = constriction.stream.model.Bernoulli(perfect=False)
_SHIFT_LAPLACE = constriction.stream.model.QuantizedLaplace(-MAX_SHIFT, MAX_SHIFT)
assert transform.NUM_BANDS == BAND_SCALE_BYTES


@functools.lru_cache(maxsize=8)
def regions(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The (band, region) pair of every coefficient in coding order, as band * count +
    region; and which pairs hold coefficients (NUM_BANDS, count), since a small edge block
    lacks the fine bands."""
    rows, cols = np.divmod(transform.coding_order(height, width) // 3, width)
    across = -(-width // REGION)
    count = -(-height // REGION) * across
    pair = transform.coding_bands(height, width) * count + (rows // REGION) * across + cols // REGION
    present = (np.bincount(pair, minlength=transform.NUM_BANDS * count) > 0).reshape(transform.NUM_BANDS, count)
    pair.setflags(write=False)
    present.setflags(write=False)
    return pair, present


def laplace_log_bin_probability(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """log P(lower < v < upper) for a standard Laplace v (lower < upper, either infinite),
    without cancellation: on one side of 0 it is a difference of two exponentials. Portable
    (exact.py): the encoder's choices, and so its bytes, are the same on every machine."""
    lower, upper = np.broadcast_arrays(np.asarray(lower, dtype=np.float64), np.asarray(upper, dtype=np.float64))
    out = np.empty(lower.shape)
    side = (lower >= 0) | (upper <= 0)  # each case on its own elements (elementwise: the same values)
    with np.errstate(invalid="ignore", over="ignore"):
        lo, up = lower[side], upper[side]
        gap = exact.log1p(-np.minimum(exact.exp(lo - up), 1.0 - 1e-16))  # log(1 - e^-(upper - lower))
        out[side] = np.where(lo >= 0, -exact.LN2 - lo + gap, -exact.LN2 + up + gap)  # lower >= 0; upper <= 0
        lo, up = lower[~side], upper[~side]
        out[~side] = exact.log(1.0 - 0.5 * exact.exp(np.minimum(lo, 0.0)) - 0.5 * exact.exp(-np.maximum(up, 0.0)))
    return out


def symbol_bits(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray,
                low: int | None = None, high: int | None = None) -> np.ndarray:
    """Code length (bits) of each symbol under the model the coder uses: a Laplace of mean
    ``means`` and scale ``stds`` integrated over unit bins, the tails beyond [low, high]
    (when given) folded into the two edge bins, every probability at least 2^-24 (as
    constriction's QuantizedLaplace does)."""
    k = np.asarray(symbols, dtype=np.float64)
    m = np.asarray(means, dtype=np.float64)
    s = np.asarray(stds, dtype=np.float64)
    lower, upper = (k - m - 0.5) / s, (k - m + 0.5) / s
    if low is not None:
        lower = np.where(k <= low, -np.inf, lower)
        upper = np.where(k >= high, np.inf, upper)
    bits = -laplace_log_bin_probability(lower, upper) * exact.INV_LN2
    return np.minimum(bits, entropy.PROBABILITY_BITS)


class FitSample:
    """A fixed sample of each band's coefficients (coding-order positions) for the scale fit."""

    def __init__(self, height: int, width: int) -> None:
        self.height, self.width = height, width
        band = transform.coding_bands(height, width)
        picks = []
        start = 0
        for count in np.bincount(band, minlength=transform.NUM_BANDS):  # coding order keeps each band contiguous
            take = min(count, FIT_SAMPLES)
            picks.append(start + (np.arange(take) * count) // max(take, 1))
            start += count
        self.sample = np.concatenate(picks).astype(np.int64)
        self.band = band[self.sample]


def _scale_indices(band_scales: np.ndarray, shifts: np.ndarray | None) -> np.ndarray:
    """Scale-table indices of coefficients with these band scales and region shifts."""
    if shifts is None:
        return band_scales
    return np.clip(band_scales.astype(np.int64) + SHIFT_STEP * shifts, 0,
                   entropy.SCALE_MAX_INDEX - entropy.SCALE_MIN_INDEX)


@dataclass
class LayerPlan:
    """A step layer's scale per band, the regions where each band is coded, its scale shift
    per region and so the coefficients it codes."""

    scales: np.ndarray  # uint8 per band: SCALE_TABLE index or SKIP
    keep: np.ndarray  # bool (band, region): coded there
    shifts: np.ndarray | None  # int per region, or None: no shifts
    shift_index: int  # SCALE_TABLE index of the Laplace the shifts are coded with, or NO_SHIFTS
    coded: np.ndarray  # bool per coefficient, coding order (keep, per coefficient)

    def stds(self, height: int, width: int) -> np.ndarray:
        """The entropy-model scale of every coded coefficient."""
        pair, present = regions(height, width)
        pair = pair[self.coded]
        count = present.shape[1]
        shifts = None if self.shifts is None else self.shifts[pair % count]
        return entropy.SCALE_TABLE[_scale_indices(self.scales[pair // count], shifts)]


def _fit_shifts(k: np.ndarray, u: np.ndarray, indices: np.ndarray, region: np.ndarray,
                count: int, own_stream: bool) -> tuple[np.ndarray | None, int, float]:
    """Per region the shift that minimises its coded symbols' bits, the Laplace scale index
    the shifts are coded with, and the bits saved net of that side information (with the
    flush of a range-coded stream of their own when no flags open one); no shifts (None)
    where they would not pay for themselves."""
    if region.size == 0:
        return None, NO_SHIFTS, 0.0
    choices = np.arange(-MAX_SHIFT, MAX_SHIFT + 1)
    bits = np.stack([np.bincount(region, symbol_bits(k, u, entropy.SCALE_TABLE[_scale_indices(indices, c)]),
                                 minlength=count) for c in choices])
    used = np.flatnonzero(np.bincount(region, minlength=count) > 0)
    best = bits[:, used].argmin(axis=0)
    saved = float(bits[MAX_SHIFT, used].sum() - bits[best, used].sum())
    shifts = choices[best].astype(np.float64)
    side, index = min((float(symbol_bits(shifts, np.zeros(used.size), np.full(used.size, entropy.SCALE_TABLE[i]),
                                         -MAX_SHIFT, MAX_SHIFT).sum()), i)
                      for i in range(0, entropy.SCALE_TABLE.size, 4))
    net = saved - side - (STREAM_FLUSH_BITS if own_stream else 0)  # the shift byte is sent either way
    if net <= 0:
        return None, NO_SHIFTS, 0.0
    full = np.zeros(count, dtype=np.int64)
    full[used] = choices[best]
    return full, index, net


def _fit_band_scales(o: np.ndarray, u: np.ndarray, band: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Per band, the table index minimising the sampled code length of k = round(o + u)
    (coefficients of weight 0 left out)."""
    n = transform.NUM_BANDS
    used = weight > 0  # the rest adds exact zeros to every sum below: not evaluated
    o, u, band, weight = o[used], u[used], band[used], weight[used]
    samples = np.maximum(np.bincount(band, weight, minlength=n), 1)
    rms = np.sqrt(np.bincount(band, weight * o * o, minlength=n) / samples)
    base = entropy.scale_index(np.maximum(rms * exact.SQRT_HALF, entropy.SCALE_TABLE[0]))  # Laplace: rms = sqrt(2) b
    top = entropy.SCALE_MAX_INDEX - entropy.SCALE_MIN_INDEX
    best_bits, best = None, None
    for trial in _SCALE_TRIALS:
        index = np.clip(base + trial, 0, top)
        bits = np.bincount(band, weight * symbol_bits(np.rint(o + u), u, entropy.SCALE_TABLE[index][band]),
                           minlength=n)
        if best_bits is None:
            best_bits, best = bits, index.copy()
        else:
            better = bits < best_bits
            best_bits[better], best[better] = bits[better], index[better]
    return best


def _probability_byte(coded: int, present: int) -> int:
    if coded == present:
        return ALL_REGIONS
    return int(np.clip(round(coded / present * 255 - 0.5), 0, 254))


def _flag_probability(byte: int) -> float:
    return (byte + 0.5) / 255


def fit(offsets: np.ndarray, dither: np.ndarray, sample: FitSample) -> tuple[LayerPlan, float]:
    """The plan of a step layer whose coefficients have offsets ``offsets`` (coding order).

    A band is coded if its code costs at most SKIP_COST_RATIO times its Gaussian KL; in a
    coded band, a region whose code costs more than that is dropped (its scale refitted on
    the rest), where the flags saying so cost less than they save, counting each dropped
    coefficient's bits against SKIP_COST_RATIO times its KL. Then each region's scales
    are shifted where that pays for its side information. Returns the plan and the
    estimated bits of the whole layer (:func:`write` gives the plan's bytes)."""
    pair, present = regions(sample.height, sample.width)
    n, count = present.shape
    band = pair // count
    k = np.rint(offsets + dither)
    kl = (np.bincount(pair, 6.0 * offsets * offsets, minlength=n * count)  # (sqrt(12) o)^2 / 2 nats
          * exact.INV_LN2).reshape(n, count)

    def region_bits(weight: np.ndarray, bands: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Band scales fitted on the weighted sample, and each region's bits (of ``bands`` only)."""
        scales = _fit_band_scales(offsets[sample.sample], dither[sample.sample], sample.band, weight)
        where = bands[band]
        bits = symbol_bits(k[where], dither[where], entropy.SCALE_TABLE[scales][band[where]])
        return scales, np.bincount(pair[where], bits, minlength=n * count).reshape(n, count)

    scales, bits = region_bits(np.ones(sample.sample.size), np.ones(n, dtype=bool))
    coded_bands = present.any(axis=1) & (bits.sum(axis=1) <= SKIP_COST_RATIO * kl.sum(axis=1))
    keep = present & coded_bands[:, None] & (bits <= SKIP_COST_RATIO * kl)
    # the refit, over the coded bands only (the others are skipped whatever they would cost)
    scales, bits = region_bits(keep.reshape(-1)[pair[sample.sample]].astype(np.float64), coded_bands)
    keep = present & coded_bands[:, None] & (bits <= SKIP_COST_RATIO * kl)
    net = bits - SKIP_COST_RATIO * kl  # what coding a region costs beyond what it is worth
    flag_bits, flagged = 0.0, False
    for b in np.flatnonzero(coded_bands):
        where = present[b]
        byte = _probability_byte(int(keep[b].sum()), int(where.sum()))
        p = _flag_probability(byte)
        flag_cost = -float(np.sum(exact.log2(np.where(keep[b][where], p, 1 - p))))
        if byte == ALL_REGIONS or net[b][where].sum() <= net[b][keep[b]].sum() + flag_cost:
            keep[b] = where  # coded everywhere: no flags
        else:
            flag_bits += flag_cost
            flagged = True
    plan_scales = np.where(coded_bands, scales, SKIP).astype(np.uint8)
    coded = keep.reshape(-1)[pair]
    region = pair[coded] % count
    shifts, shift_index, saved = _fit_shifts(k[coded], dither[coded], plan_scales[band[coded]], region, count,
                                             own_stream=not flagged)
    estimate = float(bits[keep].sum()) - saved + 8 * (n + int(coded_bands.sum()) + 1) + flag_bits
    return LayerPlan(plan_scales, keep, shifts, shift_index, coded), estimate


def write(plan: LayerPlan, height: int, width: int) -> bytes:
    """A step layer's plan as its first chunk (the layout in the module's docstring)."""
    _, present = regions(height, width)
    probabilities, flags, flag_p = [], [], []
    for b in np.flatnonzero(plan.scales != SKIP):
        where = present[b]
        byte = _probability_byte(int(plan.keep[b].sum()), int(where.sum()))
        if byte != ALL_REGIONS:
            flags.append(plan.keep[b][where].astype(np.int32))
            flag_p.append(np.full(int(where.sum()), _flag_probability(byte)))
        probabilities.append(byte)
    data = plan.scales.tobytes() + bytes(probabilities) + bytes([plan.shift_index])
    encoder = constriction.stream.queue.RangeEncoder()
    if flags:
        encoder.encode(np.concatenate(flags), _BERNOULLI, np.concatenate(flag_p))
    if plan.shifts is not None:
        sent = plan.shifts[np.flatnonzero(plan.keep.any(axis=0))].astype(np.int32)  # the regions read() finds coded
        encoder.encode(sent, _SHIFT_LAPLACE, np.zeros(sent.size),
                       np.full(sent.size, entropy.SCALE_TABLE[plan.shift_index]))
    if flags or plan.shifts is not None:
        data += encoder.get_compressed().astype("<u4").tobytes()
    return data


def read(data: bytes, height: int, width: int) -> LayerPlan:
    """Mirror of :func:`write`: a step layer's plan from its first chunk (damaged data is refused)."""
    pair, present = regions(height, width)
    n, count = present.shape
    if len(data) < n:
        raise DiffcodecError("damaged file: a step layer's plan is cut short")
    scales = np.frombuffer(data[:n], dtype=np.uint8).copy()
    coded_bands = scales != SKIP
    if np.any(scales[coded_bands] > entropy.SCALE_MAX_INDEX - entropy.SCALE_MIN_INDEX):
        raise DiffcodecError("damaged file: invalid band scales")
    bands = np.flatnonzero(coded_bands)
    end = n + bands.size + 1
    words = data[end:]
    if len(data) < end or len(words) % 4:
        raise DiffcodecError("damaged file: invalid step layer plan")
    probabilities = np.frombuffer(data[n:end - 1], dtype=np.uint8)
    shift_index = data[end - 1]
    if shift_index != NO_SHIFTS and shift_index > entropy.SCALE_MAX_INDEX - entropy.SCALE_MIN_INDEX:
        raise DiffcodecError("damaged file: invalid step layer plan")
    keep = np.zeros((n, count), dtype=bool)
    keep[bands] = present[bands]
    partial = bands[probabilities != ALL_REGIONS]
    if not (partial.size or shift_index != NO_SHIFTS):
        if words:
            raise DiffcodecError("damaged file: invalid step layer plan")
        return LayerPlan(scales, keep, None, NO_SHIFTS, keep.reshape(-1)[pair])
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(words, dtype="<u4").astype(np.uint32))
    if partial.size:
        sizes = present[partial].sum(axis=1)
        p = np.repeat([_flag_probability(int(b)) for b in probabilities[probabilities != ALL_REGIONS]], sizes)
        rows = np.zeros((partial.size, count), dtype=bool)
        rows[present[partial]] = np.asarray(decoder.decode(_BERNOULLI, p), dtype=bool)  # band by band, in raster order
        keep[partial] = rows
    shifts = None
    if shift_index != NO_SHIFTS:
        used = np.flatnonzero(keep.any(axis=0))
        if used.size == 0:
            raise DiffcodecError("damaged file: a step layer's plan shifts the scales of no region")
        shifts = np.zeros(count, dtype=np.int64)
        shifts[used] = decoder.decode(_SHIFT_LAPLACE, np.zeros(used.size),
                                      np.full(used.size, entropy.SCALE_TABLE[shift_index]))
    return LayerPlan(scales, keep, shifts, int(shift_index), keep.reshape(-1)[pair])
