"""Where a progressive file's rate-placed layers end.

The encoder ends each step layer where the file's cumulative size reaches the next rung of
a geometric ladder (RATE_START bits per pixel, times RATE_GROWTH each rung), so a prefix of
any useful size ends near a layer boundary; :class:`Placer` finds the step's end time s
whose cost is what is left to that rung.
"""

from __future__ import annotations

import math

import numpy as np

from ..format.container import MIN_STEP, TIME_UNITS
from ..model import exact
from .runner import ModelRunner

# The ladder of cumulative bits per pixel at which the rate-placed layers end. A UQ step's
# overhead over its KL falls as the step grows (few coefficients with small offsets, which
# cost r log(1/r) bits against the KL's r^2), so sparse rungs give more quality per bit at
# every rate than a dense ladder, at the price of fewer previews
# (docs/experiments.md#rate-ladder-and-skip-regions).
RATE_START = 0.05
RATE_GROWTH = 4.0
# The placer's trial fits per layer, and how near the target (in ratio) ends the search.
PLACEMENT_TRIALS = 4
PLACEMENT_TOLERANCE = 0.1
# A rung counts as reached once the layers spent more than 1/TARGET_MARGIN of it: a layer that
# overshot its own rung by a little must not leave a sliver of a layer for the next rung.
TARGET_MARGIN = 1.2


def layer_targets(target_bpp: float) -> list[float]:
    """The cumulative bpp at which each layer of a file with a size target ends: the rungs of
    the ladder at most half a rung (in ratio) below the target, then the target itself (a
    thinner last layer would cost more than it shows)."""
    targets, rung = [], RATE_START
    while rung * math.sqrt(RATE_GROWTH) <= target_bpp:
        targets.append(rung)
        rung *= RATE_GROWTH
    return targets + [target_bpp]


def next_target(spent_bpp: float) -> float:
    """The first rung of the ladder comfortably above what the layers so far cost (bpp): a
    layer that overshot its target does not leave an empty layer behind it."""
    target = RATE_START
    while target <= TARGET_MARGIN * spent_bpp:
        target *= RATE_GROWTH
    return target


class Placer:
    """Where the next rate-placed layer ends: the time s whose step costs what is left to the
    next target. The first guess comes from the step's Gaussian KL 1/2 (SNR(s) - SNR(t))
    |x - x_hat|^2; each trial fit then measures the real cost, and the next guess solves
    a power law in SNR(s) - SNR(t) through the last two trials (the ratio of real to KL
    cost changes with the step's size, most at the first, nearly all-skipped layers)."""

    def __init__(self, runner: ModelRunner) -> None:
        self.times, self.snr_table = runner.snr_grid()

    def snr(self, t_index: int) -> float:
        return float(exact.interp(t_index / TIME_UNITS, self.times, self.snr_table))

    def time_for(self, t_index: int, gain: float, steps_after: int) -> int:
        """The time s below t with SNR(s) - SNR(t) = ``gain`` (in 1/TIME_UNITS), leaving room
        for ``steps_after`` more steps of at least MIN_STEP."""
        want = self.snr(t_index) + gain
        # SNR falls with t: find s with SNR(s) = want
        s = float(exact.interp(-want, -self.snr_table, self.times)) if want < self.snr_table[0] else 0.0
        return int(min(max(round(s * TIME_UNITS), steps_after * MIN_STEP), t_index - MIN_STEP))

    def next_guess(self, t_index: int, tries: list[tuple[int, float]], nats: float, steps_after: int) -> int:
        """The next time to try, from the (time, real nats) of the trials so far."""
        gains = [(self.snr(s) - self.snr(t_index), cost) for s, cost in tries]
        (gain, cost), earlier = gains[-1], gains[:-1]
        power = 1.0
        if earlier and earlier[-1][0] != gain and earlier[-1][1] > 0 and cost > 0:
            power = float(exact.log(cost / earlier[-1][1]) / exact.log(gain / earlier[-1][0]))
            power = float(np.clip(power, 0.3, 3.0))
        growth = float(exact.exp(exact.log(nats / max(cost, 1e-30)) / power))
        return self.time_for(t_index, gain * growth, steps_after)


