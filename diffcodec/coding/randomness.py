"""Randomness shared by encoder and decoder, reproducible bit for bit.

Everything comes from numpy's PCG64 raw 64-bit words (a fully specified generator), one
independent stream per (seed, purpose, index) via SeedSequence, mapped to floats by fixed
formulas. Never torch.rand, whose stream depends on device and version.
"""

from __future__ import annotations

import numpy as np

from ..model import exact

# Stream purposes: each coded quantity draws from its own stream.
DITHER = 1
START = 2
COMPLETION = 3
CONTEXT = 4
PILOT = 5
BOUND = 6
RESIDUAL = 7


def _raw(seed: int, purpose: int, index: int, count: int) -> np.ndarray:
    bits = np.random.PCG64(np.random.SeedSequence([seed & (2**64 - 1), purpose, index]))
    return bits.random_raw(count)


def shared_uniform(seed: int, purpose: int, index: int, count: int) -> np.ndarray:
    """Uniform in [-1/2, 1/2): (word >> 11) * 2^-53 - 1/2, exact in float64."""
    return (_raw(seed, purpose, index, count) >> np.uint64(11)).astype(np.float64) * 2.0**-53 - 0.5


def shared_normal(seed: int, purpose: int, index: int, count: int) -> np.ndarray:
    """Standard normal samples by Box-Muller on two shared uniform streams (portable log and
    cos: exact.py)."""
    words = _raw(seed, purpose, index, 2 * count) >> np.uint64(11)
    u1 = (words[:count].astype(np.float64) + 1.0) * 2.0**-53  # (0, 1]
    u2 = words[count:].astype(np.float64) * 2.0**-53
    return np.sqrt(-2.0 * exact.log(u1)) * exact.cos(2.0 * exact.PI * u2)
