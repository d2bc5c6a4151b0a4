"""A step layer's plan: which bands and regions it codes, and how the plan travels."""

import numpy as np
import pytest

from diffcodec.coding import layer_plan, randomness, transform
from diffcodec.errors import DiffcodecError


def _offsets(height, width, busy_rows):
    """Offsets of a step whose error sits in the top ``busy_rows`` pixel rows: large and
    rough there, tiny elsewhere, as around edges and texture against a flat sky."""
    rng = np.random.default_rng(3)
    error = rng.normal(scale=0.02, size=(height, width, 3))
    error[:busy_rows] = rng.normal(scale=3.0, size=(busy_rows, width, 3))
    return transform.forward_coded(error)


@pytest.mark.parametrize("height, width", [(150, 130), (70, 45), (1, 1)])
def test_plan_round_trips_and_drops_regions_where_the_error_is_small(height, width):
    offsets = _offsets(height, width, busy_rows=min(layer_plan.REGION, height))
    dither = randomness.shared_uniform(7, randomness.DITHER, 0, offsets.size)
    plan, estimate = layer_plan.fit(offsets, dither, layer_plan.FitSample(height, width))
    data = layer_plan.write(plan, height, width)
    read = layer_plan.read(data, height, width)
    assert np.array_equal(read.scales, plan.scales) and np.array_equal(read.coded, plan.coded)
    assert np.array_equal(read.keep, plan.keep) and read.shift_index == plan.shift_index
    assert (read.shifts is None) == (plan.shifts is None)
    assert layer_plan.write(read, height, width) == data  # read and write are mirrors
    assert np.array_equal(read.stds(height, width), plan.stds(height, width))
    assert estimate > 0 and plan.coded.any()
    if height > layer_plan.REGION:  # the flat regions of some band are skipped, the busy ones coded
        pair, present = layer_plan.regions(height, width)
        count = present.shape[1]
        region = pair % count
        busy = region < -(-width // layer_plan.REGION)  # the first row of regions
        assert plan.coded[busy].mean() > 0.5 > plan.coded[~busy].mean()
        band = pair // count
        partly = [b for b in np.unique(band[plan.coded]) if not plan.coded[band == b].all()]
        assert partly  # region flags were sent for at least one band
        assert len(data) > transform.NUM_BANDS + len(np.unique(band[plan.coded]))


def test_regions_cover_every_coefficient_once():
    pair, present = layer_plan.regions(70, 45)
    count = present.shape[1]
    side = layer_plan.REGION
    assert count == -(-70 // side) * -(-45 // side) and pair.size == 70 * 45 * 3
    assert np.array_equal(np.flatnonzero(present.reshape(-1)), np.unique(pair))


def test_damaged_plans_are_refused():
    height, width = 70, 45
    offsets = _offsets(height, width, busy_rows=layer_plan.REGION)
    dither = randomness.shared_uniform(7, randomness.DITHER, 0, offsets.size)
    data = layer_plan.write(layer_plan.fit(offsets, dither, layer_plan.FitSample(height, width))[0], height, width)
    for bad, message in [(data[:50], "cut short"), (bytes([200]) + data[1:], "band scales"),
                         (data + b"\x01", "plan")]:
        with pytest.raises(DiffcodecError, match=message):
            layer_plan.read(bad, height, width)


def test_region_shifts_follow_the_error_and_round_trip():
    """A band's scale fits its average region; the shifts move a busy region's scales up
    and a quiet one's down, travel in the plan, and give both sides the same scales."""
    height, width = 128, 128
    rng = np.random.default_rng(5)
    error = rng.laplace(scale=1.0, size=(height, width, 3))
    error[:, : 2 * layer_plan.REGION] *= 8.0  # the left half busy, every band coded everywhere
    offsets = transform.forward_coded(error)
    dither = randomness.shared_uniform(7, randomness.DITHER, 0, offsets.size)
    plan, _ = layer_plan.fit(offsets, dither, layer_plan.FitSample(height, width))
    data = layer_plan.write(plan, height, width)
    read = layer_plan.read(data, height, width)
    assert layer_plan.write(read, height, width) == data
    assert plan.shifts is not None and np.array_equal(read.shifts, plan.shifts)
    assert np.array_equal(read.coded, plan.coded)
    assert np.array_equal(read.stds(height, width), plan.stds(height, width))
    column = np.arange(plan.shifts.size) % -(-width // layer_plan.REGION)
    assert plan.shifts[column < 2].min() > plan.shifts[column >= 2].max()
    bad = bytearray(data)
    bad[transform.NUM_BANDS + int((plan.scales != layer_plan.SKIP).sum())] = 200  # the shift byte
    with pytest.raises(DiffcodecError, match="plan"):
        layer_plan.read(bytes(bad), height, width)


def test_laplace_code_lengths_match_the_distribution():
    """symbol_bits is the Laplace's mass per unit bin, with the tails folded into the edge
    bins: over [low, high] the probabilities sum to one, and they match a direct CDF."""
    mean, scale, low, high = 0.3, 2.5, -9, 12
    k = np.arange(low, high + 1)
    p = 2.0 ** -layer_plan.symbol_bits(k, np.full(k.size, mean), np.full(k.size, scale), low, high)
    assert abs(p.sum() - 1) < 1e-9
    cdf = lambda v: np.where(v < mean, 0.5 * np.exp((v - mean) / scale), 1 - 0.5 * np.exp(-(v - mean) / scale))
    inner = slice(1, -1)
    assert np.allclose(p[inner], (cdf(k + 0.5) - cdf(k - 0.5))[inner], rtol=1e-9)
    far = layer_plan.symbol_bits(np.array([40]), np.zeros(1), np.full(1, 0.01))  # below the 2^-24 floor
    assert far[0] == 24


def test_shifts_without_a_coded_region_are_refused():
    height, width = 40, 40
    nothing = bytes([layer_plan.SKIP]) * transform.NUM_BANDS
    assert not layer_plan.read(nothing + bytes([layer_plan.NO_SHIFTS]), height, width).coded.any()
    with pytest.raises(DiffcodecError, match="no region"):
        layer_plan.read(nothing + bytes([10]), height, width)
