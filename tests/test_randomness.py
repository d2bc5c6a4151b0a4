"""Shared randomness: reproducible bit for bit, one independent stream per purpose and index."""

import numpy as np
import pytest

from diffcodec.coding import randomness


def test_first_dither_values_are_frozen():
    """The dither of a seed is part of the format: a change here breaks every existing file."""
    values = randomness.shared_uniform(7, randomness.DITHER, 0, 4)
    assert values.tolist() == [0.27014095100347413, -0.3880727556823157, -0.31090226670287247, -0.34004473844094985]


def test_first_normal_values_are_frozen():
    values = randomness.shared_normal(7, randomness.START, 0, 3)
    assert values == pytest.approx([-0.6553573325027694, 0.001777340677682032, -0.06795476806050395], abs=1e-12)


def test_streams_are_reproducible_and_independent():
    a = randomness.shared_uniform(1, randomness.DITHER, 3, 1000)
    assert np.array_equal(a, randomness.shared_uniform(1, randomness.DITHER, 3, 1000))
    assert np.array_equal(a[:10], randomness.shared_uniform(1, randomness.DITHER, 3, 10))  # prefix-stable
    for other in [(2, randomness.DITHER, 3), (1, randomness.START, 3), (1, randomness.DITHER, 4)]:
        assert not np.array_equal(a, randomness.shared_uniform(*other, 1000))
    assert np.array_equal(randomness.shared_uniform(2**64 + 1, 1, 0, 5), randomness.shared_uniform(1, 1, 0, 5))


def test_distributions():
    u = randomness.shared_uniform(0, randomness.DITHER, 0, 200_000)
    assert u.min() >= -0.5 and u.max() < 0.5 and abs(u.mean()) < 0.01 and abs(u.var() - 1 / 12) < 0.002
    n = randomness.shared_normal(0, randomness.START, 0, 200_000)
    assert np.all(np.isfinite(n)) and abs(n.mean()) < 0.01 and abs(n.std() - 1) < 0.01
