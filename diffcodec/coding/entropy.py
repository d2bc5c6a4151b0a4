"""Entropy coding of integer arrays with constriction's range coder.

The entropy model of every coded integer is a QuantizedLaplace whose mean and scale are
quantities both sides compute exactly (seeded dithers, a scale table indexed by an
integer), so a tiny difference in a network output cannot desynchronise the coder.
A layer is split into chunks of symbols, each an independent range-coded stream, so a
file cut inside a layer still decodes the chunks before the cut.
"""

from __future__ import annotations

import math
import zlib

import constriction
import numpy as np

from ..errors import DiffcodecError
from ..model import exact

# Laplace rather than Gaussian: a band's offsets mix quiet and busy regions, so their
# distribution is heavy-tailed (3-5 % fewer bits in the large step layers;
# docs/experiments.md#laplace-symbols-and-region-shifts). The
# "stds" passed below are the Laplace's scale b (constriction's scale; variance 2 b^2).
_QuantizedLaplace = constriction.stream.model.QuantizedLaplace
_RangeEncoder = constriction.stream.queue.RangeEncoder
_RangeDecoder = constriction.stream.queue.RangeDecoder

CHUNK_SYMBOLS = 1 << 18
# constriction's range coder represents probabilities with 24 bits and gives every symbol
# in range at least one unit, so no symbol costs more than about 24 bits.
PROBABILITY_BITS = 24

# Scale table: r = 2^(i/8) for i = -64..64, built from exact constants with ldexp so that
# it is the same on every platform (no libm pow/exp involved).
_EIGHTH_ROOTS = (1.0, 1.0905077326652577, 1.189207115002721, 1.2968395546510096,
                 1.4142135623730951, 1.5422108254079407, 1.681792830507429, 1.8340080864093424)
SCALE_TABLE_STEPS_PER_OCTAVE = 8
SCALE_MIN_INDEX, SCALE_MAX_INDEX = -64, 64
SCALE_TABLE = np.array([math.ldexp(_EIGHTH_ROOTS[i % 8], i // 8)
                        for i in range(SCALE_MIN_INDEX, SCALE_MAX_INDEX + 1)], dtype=np.float64)


def scale_index(ratio: np.ndarray) -> np.ndarray:
    """Nearest table entry (in log scale) of positive scale ratios; int32 indices into SCALE_TABLE."""
    ratio = np.nan_to_num(np.asarray(ratio, dtype=np.float64), nan=1.0, posinf=2.0**8, neginf=2.0**-8)
    steps = np.rint(SCALE_TABLE_STEPS_PER_OCTAVE * exact.log2(np.maximum(ratio, 1e-300)))
    return (np.clip(steps, SCALE_MIN_INDEX, SCALE_MAX_INDEX) - SCALE_MIN_INDEX).astype(np.int32)


def symbol_range(symbols: np.ndarray) -> tuple[int, int]:
    """The tightest range holding every symbol, at least two wide (constriction needs that)."""
    if symbols.size == 0:
        return 0, 1
    low, high = int(symbols.min()), int(symbols.max())
    return low, max(high, low + 1)


def _check_parameters(means: np.ndarray, stds: np.ndarray) -> None:
    # constriction panics on std <= 0 or NaN: refuse before it gets there.
    if not (np.all(np.isfinite(means)) and np.all(np.isfinite(stds)) and np.all(stds > 0)):
        raise DiffcodecError("internal error: invalid entropy-model parameters (NaN or non-positive scale)")


def encode_chunks(symbols: np.ndarray, means: np.ndarray, stds: np.ndarray, low: int, high: int,
                  chunk: int = CHUNK_SYMBOLS) -> list[bytes]:
    """Range-code ``symbols`` (int32, all within [low, high]) in independent chunks."""
    symbols = np.ascontiguousarray(symbols, dtype=np.int32)
    means = np.ascontiguousarray(means, dtype=np.float64)
    stds = np.ascontiguousarray(stds, dtype=np.float64)
    _check_parameters(means, stds)
    if symbols.size and (symbols.min() < low or symbols.max() > high):
        raise DiffcodecError("internal error: symbol outside the declared range")
    model = _QuantizedLaplace(low, high)
    out = []
    for start in range(0, symbols.size, chunk):
        encoder = _RangeEncoder()
        part = slice(start, start + chunk)
        encoder.encode(symbols[part], model, means[part], stds[part])
        out.append(encoder.get_compressed().astype("<u4").tobytes())
    return out


def decode_chunks(chunks: list[bytes], count: int, means: np.ndarray, stds: np.ndarray,
                  low: int, high: int, chunk: int = CHUNK_SYMBOLS) -> np.ndarray:
    """Decode the first ``len(chunks)`` chunks; returns their symbols (fewer than ``count``
    when chunks are missing)."""
    means = np.ascontiguousarray(means, dtype=np.float64)
    stds = np.ascontiguousarray(stds, dtype=np.float64)
    _check_parameters(means, stds)
    model = _QuantizedLaplace(low, high)
    out = []
    for index, data in enumerate(chunks):
        part = slice(index * chunk, min(count, (index + 1) * chunk))
        if len(data) % 4:
            raise DiffcodecError("damaged layer: chunk length is not a whole number of words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        # constriction raises (or panics) on inconsistent data: errors.boundary reports it
        out.append(np.asarray(_RangeDecoder(words).decode(model, means[part], stds[part]), dtype=np.int32))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)


def checksum(symbols: np.ndarray) -> int:
    """CRC32 of int32 symbols, so the decoder knows when it went out of step."""
    return zlib.crc32(np.ascontiguousarray(symbols, dtype="<i4").tobytes())
