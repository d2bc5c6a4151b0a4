"""An ANS stack (constriction) with the push and pop forms the bits-back chain needs, each
on whole arrays.

Gaussian latents live on grids and are coded relative to the rounded model mean; the
decoder of p(x | z_0) is a categorical over a window of levels; the direct band uses a
quantized Laplace over pixel levels.
"""

from __future__ import annotations

import math

import constriction
import numpy as np

from ..errors import DiffcodecError, does_not_decode
from ..model.diffusion import NUM_LEVELS

_Ans = constriction.stream.stack.AnsCoder
_QuantizedGaussian = constriction.stream.model.QuantizedGaussian

RANGE = 512
ESCAPE_HALF_BITS = 16  # an escaped excess is sent as two uniform 16-bit halves
Q_RANGE_SIGMAS = 6.0

_LATENT_MODEL = _QuantizedGaussian(-RANGE, RANGE)
_ESCAPE_HALF = constriction.stream.model.Uniform(1 << ESCAPE_HALF_BITS)
_PIXEL_LAPLACE = constriction.stream.model.QuantizedLaplace(0, NUM_LEVELS - 1)
_WINDOW_MODEL = constriction.stream.model.Categorical(perfect=False)
_sample_models: dict[int, object] = {}


def _sample_model(std: float, delta: float) -> tuple[object, int]:
    """The q-sample model for a std of std / delta bins, over +-Q_RANGE_SIGMAS std, and its
    half range in bins (models cached by range)."""
    half = int(math.ceil(Q_RANGE_SIGMAS * std / delta))
    if half not in _sample_models:
        _sample_models[half] = _QuantizedGaussian(-half, half)
    return _sample_models[half], half


def _bins(std, delta: float, count: int) -> np.ndarray:
    """Scale(s) in bins, as the per-symbol float64 array constriction takes."""
    return np.ascontiguousarray(np.broadcast_to(np.asarray(std, dtype=np.float64) / delta, (count,)))


class AnsStack:
    """An ANS stack with the push/pop forms the chain needs, on whole arrays."""

    def __init__(self, words: np.ndarray | None = None) -> None:
        self.coder = _Ans(words) if words is not None and words.size else _Ans()

    def words(self) -> np.ndarray:
        return self.coder.get_compressed()

    def to_bytes(self) -> bytes:
        """The stack as a payload: little-endian 32-bit words (empty when nothing was pushed
        that costs bits, e.g. only black pixels)."""
        return self.words().astype("<u4").tobytes()

    @classmethod
    def from_bytes(cls, data: bytes) -> "AnsStack":
        """The stack of a payload of whole 32-bit words (the container checks the length)."""
        return cls(np.frombuffer(data, dtype="<u4").astype(np.uint32))

    def num_bits(self) -> int:
        return self.coder.num_bits()

    def is_empty(self) -> bool:
        return self.coder.is_empty()

    # Gaussian latents on a grid: symbol = n - round(mean / delta).
    #
    # Samples of q (popped by the encoder, pushed back by the decoder) are coded within
    # +-Q_RANGE_SIGMAS standard deviations. The range must be tight: constriction gives every
    # symbol in range a floor probability, so a pop from bits that are not perfectly random
    # lands in the far tails now and then, and such a sample costs some hundred bits at the
    # next push. q-samples never escape: a pop can then
    # never blow up, and a decoder that pushes one outside the range is reading a damaged file.
    #
    # Values pushed under p (the model's prediction) may be far off: they are coded within
    # +-RANGE bins, and beyond it sent as the edge value and then the excess (escaped); the
    # decoder pops them in the mirror order.
    def pop_sample(self, mean: np.ndarray, std: float, delta: float) -> np.ndarray:
        centre = np.rint(mean / delta)
        model, _ = _sample_model(std, delta)
        offset = self.coder.decode(model, mean / delta - centre, _bins(std, delta, mean.size))
        return centre.astype(np.int64) + offset.astype(np.int64)

    def push_sample(self, n: np.ndarray, mean: np.ndarray, std: float, delta: float) -> None:
        centre = np.rint(mean / delta)
        offset = n - centre
        model, half = _sample_model(std, delta)
        if np.abs(offset).max(initial=0) > half:
            raise does_not_decode("a latent left its range")
        self.coder.encode_reverse(offset.astype(np.int32), model, mean / delta - centre, _bins(std, delta, n.size))

    def push_latent(self, n: np.ndarray, mean: np.ndarray, std, delta: float) -> None:
        centre = np.rint(mean / delta)
        offset = (n - centre).astype(np.int64)
        escaped = np.abs(offset) >= RANGE
        if escaped.any():  # pushed first, so popped after the edge values that announce them
            excess = np.abs(offset[escaped]) - RANGE
            if excess.max() >= 1 << (2 * ESCAPE_HALF_BITS):
                raise DiffcodecError("lossless coding failed: a latent is absurdly far from its model "
                                     "(is the model broken?)")
            mask = (1 << ESCAPE_HALF_BITS) - 1
            self.coder.encode_reverse((excess & mask).astype(np.int32), _ESCAPE_HALF)
            self.coder.encode_reverse((excess >> ESCAPE_HALF_BITS).astype(np.int32), _ESCAPE_HALF)
        clipped = np.clip(offset, -RANGE, RANGE).astype(np.int32)
        self.coder.encode_reverse(clipped, _LATENT_MODEL, mean / delta - centre, _bins(std, delta, n.size))

    def pop_latent(self, mean: np.ndarray, std, delta: float) -> np.ndarray:
        centre = np.rint(mean / delta)
        offset = self.coder.decode(_LATENT_MODEL, mean / delta - centre, _bins(std, delta, mean.size))
        offset = offset.astype(np.int64)
        escaped = np.abs(offset) >= RANGE
        if escaped.any():
            count = int(escaped.sum())
            high = self.coder.decode(_ESCAPE_HALF, count).astype(np.int64)
            low = self.coder.decode(_ESCAPE_HALF, count).astype(np.int64)
            offset[escaped] = np.sign(offset[escaped]) * (RANGE + (high << ESCAPE_HALF_BITS) + low)
        return centre.astype(np.int64) + offset

    # Pixel levels under a discretised Laplace (mean, scale b): the direct band (direct.py).
    def push_laplace(self, x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> None:
        self.coder.encode_reverse(x.astype(np.int32), _PIXEL_LAPLACE, mean, scale)

    def pop_laplace(self, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
        return self.coder.decode(_PIXEL_LAPLACE, mean, scale)

    # Pixels given z_0: a categorical over a window of levels starting at ``first``.
    def push_window(self, x: np.ndarray, first: np.ndarray, probabilities: np.ndarray) -> None:
        symbols = x.astype(np.int64) - first
        if symbols.min(initial=0) < 0 or symbols.max(initial=0) >= probabilities.shape[1]:
            raise DiffcodecError("lossless coding failed: a pixel is outside its decoder window")
        self.coder.encode_reverse(symbols.astype(np.int32), _WINDOW_MODEL, probabilities)

    def pop_window(self, first: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
        return first + self.coder.decode(_WINDOW_MODEL, probabilities).astype(np.int64)
