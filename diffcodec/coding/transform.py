"""The orthonormal transform the progressive layers quantize in, and its bands.

The Gaussian forward process is isotropic, so its marginals and KLs are the same in any
orthonormal basis of the latent; universal quantization is not, and pays most where a
step's information is spread thinly over many coordinates. The error of a noisy estimate
is mostly one luminance error shared by R, G and B, and smooth at high noise: an
orthonormal opponent colour rotation (luminance and two colour differences) gathers it
into one channel, and a blockwise DCT into the few low-frequency coefficients of each
block, leaving the many others nearly free, or skippable (progressive.py).

Blocks are BLOCK x BLOCK per opponent channel; the last block row and column take the remainder
with a DCT of their own size, so any image size is covered exactly and the transform
stays orthonormal. Coefficients are grouped into bands by octave of their vertical and
horizontal frequency, per opponent channel; the encoder fits one scale per band and step.

Both sides must compute the transform to the same bits, so it never goes through BLAS
(whose summation order and FMA use differ between machines): each output is a sum over
the block in a fixed order of separate, correctly rounded products and additions, and
the matrix comes from exact.py's portable cosine; the colour rotation is a fixed sequence
of elementwise additions and products by correctly rounded square roots.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from ..model import exact

BLOCK = 32
OCTAVES = int(math.log2(BLOCK)) + 1
NUM_BANDS = OCTAVES * OCTAVES * 3


@functools.lru_cache(maxsize=None)
def dct_matrix(n: int) -> np.ndarray:
    """The orthonormal DCT-II matrix of size n (rows are basis functions)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    i = np.arange(n, dtype=np.float64)[None, :]
    m = exact.cos(exact.PI * (2.0 * i + 1.0) * k / (2.0 * n)) * math.sqrt(2.0 / n)
    m[0] /= math.sqrt(2.0)
    return m


def _along(x: np.ndarray, axis: int, inverse: bool) -> np.ndarray:
    x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, 0)
    length = x.shape[0]
    full = length // BLOCK * BLOCK
    out = np.empty_like(x)
    if full:
        d = dct_matrix(BLOCK)
        blocks = x[:full].reshape(length // BLOCK, BLOCK, -1)
        out[:full] = exact.ordered_products(d.T if inverse else d, blocks).reshape(x[:full].shape)
    if length > full:
        d = dct_matrix(length - full)
        rest = x[full:].reshape(1, length - full, -1)
        out[full:] = exact.ordered_products(d.T if inverse else d, rest).reshape(x[full:].shape)
    return np.moveaxis(out, 0, axis)


# rows of the orthonormal opponent rotation: (1, 1, 1) / sqrt 3, (1, 0, -1) / sqrt 2, (1, -2, 1) / sqrt 6
_LUMA, _RED_BLUE, _GREEN = 1.0 / math.sqrt(3.0), 1.0 / math.sqrt(2.0), 1.0 / math.sqrt(6.0)


def to_opponent(x: np.ndarray) -> np.ndarray:
    """The orthonormal colour rotation of an (H, W, 3) array: luminance, red - blue, and
    red + blue - 2 green, each in a fixed order of IEEE operations."""
    r, g, b = (np.asarray(x[..., k], dtype=np.float64) for k in range(3))
    return np.stack([((r + g) + b) * _LUMA, (r - b) * _RED_BLUE, (((r + b) - g) - g) * _GREEN], axis=-1)


def from_opponent(y: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_opponent` (its transpose)."""
    luma, red_blue, green = y[..., 0] * _LUMA, y[..., 1] * _RED_BLUE, y[..., 2] * _GREEN
    return np.stack([(luma + red_blue) + green, (luma - green) - green, (luma - red_blue) + green], axis=-1)


def forward(x: np.ndarray) -> np.ndarray:
    """The colour rotation, then the block DCT of each channel, of an (H, W, 3) array."""
    return _along(_along(to_opponent(x), 0, False), 1, False)


def inverse(x: np.ndarray) -> np.ndarray:
    return from_opponent(_along(_along(x, 0, True), 1, True))


def _frequencies(length: int) -> np.ndarray:
    """Each position's frequency within its block, on the scale of a BLOCK-sized block."""
    f = np.arange(length) % BLOCK
    full = length // BLOCK * BLOCK
    if length > full:
        f[full:] = np.arange(length - full) * BLOCK // (length - full)
    return f


@functools.lru_cache(maxsize=8)
def band_map(height: int, width: int) -> np.ndarray:
    """Band index (0 .. NUM_BANDS-1) of every coefficient of an (H, W, 3) transform:
    (octave of vertical frequency, octave of horizontal frequency, channel)."""
    oy = np.frexp(_frequencies(height) + 1)[1].astype(np.int64) - 1  # floor(log2(f + 1)), exactly
    ox = np.frexp(_frequencies(width) + 1)[1].astype(np.int64) - 1
    band = (oy[:, None] * OCTAVES + ox[None, :])[:, :, None] * 3 + np.arange(3)[None, None, :]
    band.setflags(write=False)
    return band


@functools.lru_cache(maxsize=8)
def coding_order(height: int, width: int) -> np.ndarray:
    """Flat positions of all coefficients, coarsest bands first (stable within a band): the
    order symbols are coded in, so a layer cut short still holds its coarse bands."""
    band = band_map(height, width).reshape(-1)
    octaves = band // 3
    key = (octaves // OCTAVES + octaves % OCTAVES) * NUM_BANDS + band  # coarse to fine
    order = np.argsort(key, kind="stable")
    order.setflags(write=False)
    return order


@functools.lru_cache(maxsize=8)
def coding_bands(height: int, width: int) -> np.ndarray:
    """The band of every coefficient, in coding order."""
    band = band_map(height, width).reshape(-1)[coding_order(height, width)]
    band.setflags(write=False)
    return band


def forward_coded(x: np.ndarray) -> np.ndarray:
    """The transform (:func:`forward`) of an (H, W, 3) array, flat in coding order."""
    return forward(x).reshape(-1)[coding_order(x.shape[0], x.shape[1])]


def inverse_coded(coefficients: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Inverse of :func:`forward_coded`."""
    flat = np.empty(coefficients.size)
    flat[coding_order(shape[0], shape[1])] = coefficients
    return inverse(flat.reshape(shape))
