"""The progressive stream's tail: the exact image after the last lossy layer.

Both sides then hold z_t, the last lossy layer's latent. The tail codes x by bits-back over
the rest of the chain, bridged from that z_t (chain.py): the bits the lossy layers sent
are not paid again, so a whole progressive file costs about what a lossless file costs,
plus what the lossy layers spent above the model's KL for their steps. The tail's steps
are the model's optimised T = TAIL_GRID_STEPS grid below t (model/time_grid.py), its
reverse variances calibrated on pilot crops and its bands planned as the lossless mode
does (lossless.py). It is one chunk: a prefix that cuts it shows the last lossy layer.
"""

from __future__ import annotations

import numpy as np

from ..format.container import MIN_STEP, TIME_UNITS, Mode
from . import lossless, stored
from .coded import CodedImage, Context
from .runner import ModelRunner

TAIL_GRID_STEPS = 16


def tail_times(runner: ModelRunner, t_end: int) -> list[int]:
    """The tail's time grid from ``t_end`` (the last lossy layer's t, 1/TIME_UNITS) to 0:
    the model's T = TAIL_GRID_STEPS grid below it (uniform without one), its first time
    dropped when it lies within half a grid step of ``t_end``."""
    grid = runner.chain_times(TAIL_GRID_STEPS) or [
        TIME_UNITS * (TAIL_GRID_STEPS - k) // TAIL_GRID_STEPS for k in range(TAIL_GRID_STEPS + 1)]
    below = [t for t in grid if t <= t_end - MIN_STEP]
    if len(below) > 1 and t_end - below[0] < (below[0] - below[1]) / 2:
        below = below[1:]
    return [t_end] + (below or [0])


def encode(context: Context, rgb: np.ndarray, z_end: np.ndarray, t_end: int,
           stored_fallback: bool = True) -> CodedImage:
    """The tail of an (H, W, 3) uint8 image whose last lossy layer left ``z_end`` at time
    ``t_end``: one layer, its mode the tail's coder (LOSSLESS: bits-back from z_end, with
    its time grid from t_end, step parameters and band plan), or the predictive or
    zlib coder of the lossless mode's fallbacks where smaller (stored.py) and ``stored_fallback``."""
    times = tail_times(context.runner, t_end)
    coded = lossless.encode_chain(context, rgb, len(times) - 1, times, end=z_end)
    return stored.or_fallback(coded, rgb, stored_fallback)


def decode(context: Context, coded: CodedImage, z_end: np.ndarray) -> np.ndarray:
    """Mirror of :func:`encode`: the exact (H, W, 3) pixels from the tail of a progressive
    file (its last layer, complete) and the last lossy layer's latent."""
    times = coded.times[coded.lossy_steps :]
    end = CodedImage(Mode(coded.tail_mode), coded.layers[-1:], coded.chunks[-1:], coded.height, coded.width,
                     steps=len(times) - 1, bands=coded.bands, chain_params=coded.chain_params, times=times)
    if end.mode != Mode.LOSSLESS:
        return stored.decode(end)
    return lossless.decode_chain(context, end, end=z_end, what="progressive file's tail")
