"""Entropy coding of integer arrays: exact round trips, independent chunks, clear errors."""

import math

import numpy as np
import pytest

from diffcodec.coding import entropy
from diffcodec.errors import DiffcodecError


def _symbols(count, seed=0, spread=3.0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-0.5, 0.5, count)
    stds = np.full(count, spread)
    return np.rint(rng.laplace(means, stds)).astype(np.int32), means, stds  # the coder's model


def test_scale_table_is_frozen():
    """Powers of 2^(1/8) from exact constants: every entropy model depends on these."""
    table = entropy.SCALE_TABLE
    assert len(table) == 129 and table[64] == 1.0 and table[72] == 2.0 and table[0] == 2.0**-8
    assert table[65] == 1.0905077326652577 and table[-1] == 256.0
    assert np.allclose(np.diff(np.log2(table)), 1 / entropy.SCALE_TABLE_STEPS_PER_OCTAVE)


def test_scale_index_picks_the_nearest_entry_and_clips():
    ratios = np.array([1.0, 2.0, 1.04, 1.06, 1e-9, 1e9, np.nan, np.inf])
    picked = entropy.SCALE_TABLE[entropy.scale_index(ratios)]
    assert picked[:2].tolist() == [1.0, 2.0]
    assert picked[2] == 1.0 and picked[3] == entropy.SCALE_TABLE[65]
    assert picked[4] == entropy.SCALE_TABLE[0] and picked[5] == entropy.SCALE_TABLE[-1]
    assert np.all(np.isfinite(picked))


def test_symbol_range():
    assert entropy.symbol_range(np.array([3, -2, 5])) == (-2, 5)
    assert entropy.symbol_range(np.array([4, 4])) == (4, 5)  # at least two wide
    assert entropy.symbol_range(np.zeros(0, np.int32)) == (0, 1)


@pytest.mark.parametrize("count, chunk", [(1, 8), (1000, 1000), (1000, 64), (1001, 100)])
def test_round_trip_in_chunks(count, chunk):
    symbols, means, stds = _symbols(count)
    low, high = entropy.symbol_range(symbols)
    chunks = entropy.encode_chunks(symbols, means, stds, low, high, chunk)
    assert len(chunks) == math.ceil(count / chunk)
    assert np.array_equal(entropy.decode_chunks(chunks, count, means, stds, low, high, chunk), symbols)
    # a prefix of the chunks decodes the first symbols
    first = entropy.decode_chunks(chunks[:1], count, means, stds, low, high, chunk)
    assert np.array_equal(first, symbols[: min(chunk, count)])


def test_rate_is_near_the_entropy_of_the_model():
    symbols, means, stds = _symbols(20000, spread=4.0)
    chunks = entropy.encode_chunks(symbols, means, stds, *entropy.symbol_range(symbols))
    bits = 8 * sum(len(c) for c in chunks)
    ideal = 20000 * math.log2(2 * math.e * 4.0)  # the Laplace's differential entropy, unit bins
    assert abs(bits / ideal - 1) < 0.02


def test_errors_are_diffcodec_errors():
    symbols, means, stds = _symbols(100)
    low, high = entropy.symbol_range(symbols)
    with pytest.raises(DiffcodecError, match="outside the declared range"):
        entropy.encode_chunks(symbols, means, stds, low + 1, high)
    with pytest.raises(DiffcodecError, match="invalid entropy-model parameters"):
        entropy.encode_chunks(symbols, means, np.zeros(100), low, high)
    with pytest.raises(DiffcodecError, match="whole number of words"):
        entropy.decode_chunks([b"abc"], 100, means, stds, low, high)


def test_checksum_sees_every_symbol():
    symbols = np.arange(100, dtype=np.int32)
    changed = symbols.copy()
    changed[57] += 1
    assert entropy.checksum(symbols) != entropy.checksum(changed)
    assert entropy.checksum(symbols) == entropy.checksum(symbols.astype(np.int64))
