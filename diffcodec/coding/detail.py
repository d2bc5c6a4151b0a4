"""The original's detail energy, carried in a progressive file's header, and completion's
matching of it.

The model's denoiser is the posterior mean, so samples drawn with a small model come out
smoother than photographs (or, after a coarse first layer, grainier). Classical codecs
meet the same gap with a few bytes of side information: AV1 and JPEG XL send noise
parameters and synthesise grain at the decoder. Here the encoder sends one number, the
energy of the image's finest detail (each pixel against the mean of it and its four
neighbours), and completion scales its sample's detail to that energy, then moves the
result back into the box the layers set on x. The estimate without completion is left
alone: it is the best guess in squared error, and detail that is not the original's costs
PSNR.

Everything is integer arithmetic or correctly rounded operations in a fixed order, so a
completion is the same image on every machine.
"""

from __future__ import annotations

import math

import numpy as np

from ..model import diffusion as dm
from ..model import exact

NO_DETAIL = 0  # index of a file without a detail energy: an image under 3x3 pixels
STEPS_PER_OCTAVE = 8  # index steps per doubling of the energy
ZERO_OCTAVE = 128  # the index of an energy of 1 (pixel levels squared)
MAX_GAIN = 4.0  # the most one matching round scales detail up (or, inverted, down)
ROUNDS = 3  # matching rounds: the box projection undoes some of each gain
CLOSE_ENOUGH = 0.02  # an energy this near the target ends the rounds
PIXEL_SCALE = 128.0  # 8-bit levels per unit of model space, as in diffusion.scale_pixels_array


def energy(pixels: np.ndarray) -> float:
    """Mean square of each pixel minus the mean of it and its 4 neighbours, over the pixels
    that have all four, in 8-bit levels squared (an integer sum, exact everywhere); 0 for an
    image under 3x3."""
    a = np.asarray(pixels).astype(np.int64)
    if a.shape[0] < 3 or a.shape[1] < 3:
        return 0.0
    fives = 5 * a[1:-1, 1:-1] - (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] + a[1:-1, 1:-1])
    return int(np.sum(fives * fives)) / (25 * fives.size)


def energy_index(pixels: np.ndarray) -> int:
    """The header's byte for an image's detail energy: 1/8-octave steps from ZERO_OCTAVE,
    clamped to 1..255, so a flat image (or a linear ramp: no detail at all) asks for the
    least; NO_DETAIL for an image under 3x3, which has none to measure."""
    if pixels.shape[0] < 3 or pixels.shape[1] < 3:
        return NO_DETAIL
    e = energy(pixels)
    index = int(np.rint(float(exact.log2(e)) * STEPS_PER_OCTAVE)) + ZERO_OCTAVE if e > 0 else 1
    return min(max(index, 1), 255)


def index_energy(index: int) -> float:
    """Mirror of :func:`energy_index`: the energy an index stands for."""
    return float(exact.exp((index - ZERO_OCTAVE) / STEPS_PER_OCTAVE * exact.LN2))


def _local_mean(x: np.ndarray) -> np.ndarray:
    """Each value's mean with its 4 neighbours (edges repeated), summed in a fixed order."""
    p = np.pad(x, ((1, 1), (1, 1), (0, 0)), mode="edge")
    return ((((p[:-2, 1:-1] + p[2:, 1:-1]) + p[1:-1, :-2]) + p[1:-1, 2:]) + p[1:-1, 1:-1]) / 5.0


def _detail(x: np.ndarray) -> np.ndarray:
    return x - _local_mean(x)


def _gain(x: np.ndarray, local: np.ndarray, target: float) -> float:
    """The g for which local + g (x - local) has the target energy (in pixel levels
    squared), local the local mean of x: that energy is a quadratic in g. Where the target
    is below its minimum, the g of the minimum; within 1/MAX_GAIN..MAX_GAIN."""
    fixed, moved = (_detail(part)[1:-1, 1:-1].reshape(-1) for part in (local, x - local))
    a, b, c = (float(exact.tree_sum(u * v)) for u, v in ((fixed, fixed), (fixed, moved), (moved, moved)))
    want = target / PIXEL_SCALE**2 * fixed.size
    if c <= 0:
        return 1.0
    root = b * b - c * (a - want)
    gain = (math.sqrt(root) - b) / c if root > 0 else -b / c
    return min(max(gain, 1.0 / MAX_GAIN), MAX_GAIN)


def match(x: np.ndarray, index: int, box) -> np.ndarray:
    """The 8-bit image of the model-space sample ``x`` with its detail scaled to the energy
    of ``index`` and moved into ``box`` (uq_step.Box). Each round scales by the gain that
    gives the target before the box and rounding, and the box takes back a little of it;
    a sample already within CLOSE_ENOUGH of the target is only rounded."""
    pixels = dm.nearest_pixels(x)
    if index == NO_DETAIL or x.shape[0] < 3 or x.shape[1] < 3:
        return pixels
    target = index_energy(index)
    for _ in range(ROUNDS):
        if abs(energy(pixels) / target - 1.0) < CLOSE_ENOUGH:
            break
        local = _local_mean(x)
        gain = _gain(x, local, target)
        x = box.project(local + gain * (x - local))
        pixels = dm.nearest_pixels(x)
    return pixels
