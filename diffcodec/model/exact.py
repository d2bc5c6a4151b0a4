"""Portable float64 math: the same bits on every machine.

A file must decode exactly on any CPU or GPU, so nothing that reaches the entropy coder or
decides a latent may use a function whose last bit depends on the platform: libm's and
numpy's or torch's vectorised exp, log, sin and erf differ between instruction sets
(AVX-512, AVX2, SSE, NEON) and libraries. The functions here use only IEEE operations that
are correctly rounded everywhere (+, -, *, /, sqrt), exact ones (rint, floor, ldexp,
frexp, comparisons) and fixed constants, each as a separate numpy ufunc call in a fixed
order (numpy never fuses a multiply and an add). Their accuracy is a few ulp, which does
not matter; that it is the same everywhere is the point.

exp, log, fixed_sum and ordered_products run in one compiled pass on large arrays
(model/compiled.py, built on first use as the exact network's loops are), the same
operations in the same order, so the same numbers: checked against the numpy code here once
per process, which runs instead where they differ or cannot be built.

Sums: a reduction whose order depends on the kernel is not reproducible unless every
partial sum is exact. :func:`tree_sum` fixes the order instead.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np

LN2 = 0.6931471805599453
EXP_CLAMP = (-746.0, 710.0)  # e^x is 0 below and inf above
# ln 2 split so that k * LN2_HI is exact for |k| < 2^20 (fdlibm's constants).
LN2_HI = 6.93147180369123816490e-01
LN2_LO = 1.90821492927058770002e-10
INV_LN2 = 1.44269504088896338700e+00
# pi / 2 split alike, for the reduction of sin and cos.
PIO2_HI = 1.57079632673412561417e+00
PIO2_LO = 6.07710050650619224932e-11
TWO_OVER_PI = 6.36619772367581382433e-01
PI = 3.141592653589793
SQRT_HALF = 0.7071067811865476

_EXP_TERMS = [1.0 / math.factorial(n) for n in range(14)]  # exact to the last bit on every machine
_SIN_TERMS = [(-1) ** n / math.factorial(2 * n + 1) for n in range(10)]
_COS_TERMS = [(-1) ** n / math.factorial(2 * n) for n in range(10)]
_ATANH_TERMS = [1.0 / (2 * n + 1) for n in range(13)]


def _array(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _horner(r: np.ndarray, terms: list[float]) -> np.ndarray:
    """sum terms[n] r^n, highest power first, one rounded op at a time."""
    p = np.full_like(r, terms[-1])
    for c in reversed(terms[:-1]):
        p = p * r
        p = p + c
    return p


def exp(x) -> np.ndarray:
    """e^x: x = k ln 2 + r, |r| <= ln 2 / 2, Taylor series of e^r to degree 13."""
    x = _array(x)
    if _use_compiled(x):
        return _compiled("exp", x)
    return _exp(x)


def _exp(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, EXP_CLAMP[0], EXP_CLAMP[1])
    k = np.rint(x * INV_LN2)
    r = (x - k * LN2_HI) - k * LN2_LO
    return np.ldexp(_horner(r, _EXP_TERMS), k.astype(np.int64))


def expm1(x) -> np.ndarray:
    """e^x - 1, accurate near 0 (Taylor series there), else exp(x) - 1."""
    x = _array(x)
    small = np.abs(x) < 0.25
    near = _horner(np.where(small, x, 0.0), _EXP_TERMS[1:]) * np.where(small, x, 0.0)
    return np.where(small, near, exp(x) - 1.0)


def log(x) -> np.ndarray:
    """ln x for x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh(s),
    s = (m - 1) / (m + 1), by its series; -inf at 0, nan below."""
    x = _array(x)
    if _use_compiled(x):
        return _compiled("log", x)
    return _log(x)


def _log(x: np.ndarray) -> np.ndarray:
    positive = x > 0
    m, e = np.frexp(np.where(positive, x, 1.0))  # m in [1/2, 1)
    low = m < SQRT_HALF
    m = np.where(low, m * 2.0, m)
    e = (e - low).astype(np.float64)
    s = (m - 1.0) / (m + 1.0)
    series = _horner(s * s, _ATANH_TERMS) * s
    out = e * LN2_HI + (e * LN2_LO + 2.0 * series)
    return np.where(positive, out, np.where(x == 0, -np.inf, np.nan))


# the compiled passes' series and constants: exactly the doubles above
_COMPILED_SERIES = {"exp": (np.array(_EXP_TERMS), np.array([INV_LN2, LN2_HI, LN2_LO, *EXP_CLAMP])),
                    "log": (np.array(_ATANH_TERMS), np.array([SQRT_HALF, LN2_HI, LN2_LO]))}
COMPILED_SIZE = 64  # smaller arrays take the numpy code: the same numbers, a call costs more than it saves


def _kernels():
    """model/compiled.py, imported when first needed (it imports torch; this module does not)."""
    from . import compiled

    return compiled


def _compiled(name: str, x: np.ndarray) -> np.ndarray:
    return _kernels().elementwise(name, x, *_COMPILED_SERIES[name])


def _use_compiled(x: np.ndarray) -> bool:
    if x.size < COMPILED_SIZE:
        return False
    compiled = _kernels()
    return compiled.available() and _compiled_agrees(id(compiled.library()), compiled.setting())


@lru_cache(maxsize=None)
def _compiled_agrees(library: int, path: str | None) -> bool:
    """Whether the compiled exp, log, fixed sum and ordered products give the numpy code's
    bits, NaN for NaN (a compiler that broke the IEEE arithmetic despite its flags is caught
    here), on values at and beyond every edge: zeros, subnormals, the clamps, the reduction's
    and the vector paths' boundaries, infinities (each four times, to fill a vector, then mixed
    with the others)."""
    edges = [0.0, 5e-324, 2.2250738585072014e-308, 1e-300, 0.5, SQRT_HALF, math.nextafter(SQRT_HALF, 0), 1.0,
             math.nextafter(1.0, 2), 2.0, LN2 / 2, 708.4, 709.0, 709.78, 710.0, 711.0, 1e300, math.inf, math.nan]
    edges = edges + [-e for e in edges] + [-707.7, -708.1, -708.4, -708.5, -745.1, -746.0, -747.0]
    rng = np.random.default_rng(0)
    x = np.concatenate([np.repeat(edges, 4), edges, rng.standard_normal(4099) * 30,
                        np.exp2(rng.uniform(-1074, 1023, 4099))])
    try:
        with np.errstate(all="ignore"):
            pairs = [(_compiled(name, x), numpy_code(x)) for name, numpy_code in (("exp", _exp), ("log", _log))]
        for a, b in pairs:
            if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.array_equal(
                    a[~np.isnan(a)].view(np.int64), b[~np.isnan(b)].view(np.int64)):
                return False
        matrix, blocks = rng.standard_normal((5, 7)), np.concatenate([x[:63], rng.standard_normal(63)]).reshape(2, 7, 9)
        with np.errstate(all="ignore"):
            a, b = _kernels().ordered_products(matrix, blocks), _ordered_products(matrix, blocks)
        if not np.array_equal(np.isnan(a), np.isnan(b)) or not np.array_equal(
                a[~np.isnan(a)].view(np.int64), b[~np.isnan(b)].view(np.int64)):
            return False
        for bits in (16, 40):  # (sums of units: whole and in halves)
            limit = 2.0 ** (62 - bits) / x.size
            if _kernels().fixed_sum(x, bits, limit) != int(_fixed_units(x, bits, limit).sum()):
                return False
    except Exception:  # noqa: BLE001 - whatever failed, the numpy code is the safe choice
        return False
    return True


def log2(x) -> np.ndarray:
    return log(x) * INV_LN2


def _reduce(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """x = k pi/2 + r, |r| <= pi/4 (Cody-Waite; exact products for |x| < 2^19)."""
    k = np.rint(x * TWO_OVER_PI)
    return (x - k * PIO2_HI) - k * PIO2_LO, k.astype(np.int64) & 3


def _sin_cos(r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r2 = r * r
    return _horner(r2, _SIN_TERMS) * r, _horner(r2, _COS_TERMS)


def sin(x) -> np.ndarray:
    r, quadrant = _reduce(_array(x))
    s, c = _sin_cos(r)
    return np.choose(quadrant, [s, c, -s, -c])


def cos(x) -> np.ndarray:
    r, quadrant = _reduce(_array(x))
    s, c = _sin_cos(r)
    return np.choose(quadrant, [c, -s, -c, s])


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + exp(-_array(x)))


def erfc(x) -> np.ndarray:
    """Complementary error function (Numerical Recipes' erfcc: Chebyshev fit, relative error
    below 1.2e-7 everywhere)."""
    x = _array(x)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = _horner(t, [-1.26551223, 1.00002368, 0.37409196, 0.09678418, -0.18628806,
                       0.27886807, -1.13520398, 1.48851587, -0.82215223, 0.17087277])
    y = t * exp(poly - z * z)
    return np.where(x >= 0, y, 2.0 - y)


def ndtr(x) -> np.ndarray:
    """The standard normal CDF."""
    return 0.5 * erfc(_array(x) * -SQRT_HALF)


def tree_sum(x, axis: int = -1) -> np.ndarray:
    """Sum along ``axis`` in a fixed pairwise order (zero-padded to a power of two), so the
    rounding is the same on every machine whatever its SIMD width."""
    x = np.moveaxis(_array(x), axis, -1)
    n = x.shape[-1]
    width = 1 << max(0, (n - 1).bit_length())
    if width != n:
        x = np.concatenate([x, np.zeros(x.shape[:-1] + (width - n,))], axis=-1)
    while x.shape[-1] > 1:
        half = x.shape[-1] // 2
        x = x[..., :half] + x[..., half:]
    return x[..., 0]


def fixed_sum(values, unit_bits: int) -> float:
    """The sum of ``values`` rounded to multiples of 2^-unit_bits, exactly (an integer sum): the
    same on every machine, in any order, unlike a float reduction. NaN counts 0; terms are
    clipped so that the int64 sum cannot overflow (callers' terms are far inside)."""
    values = _array(values).reshape(-1)
    limit = 2.0 ** (62 - unit_bits) / max(1, values.size)
    if _use_compiled(values):
        return float(_kernels().fixed_sum(values, unit_bits, limit)) * 2.0**-unit_bits
    return float(_fixed_units(values, unit_bits, limit).sum()) * 2.0**-unit_bits


def _fixed_units(values: np.ndarray, unit_bits: int, limit: float) -> np.ndarray:
    terms = np.clip(np.nan_to_num(values, nan=0.0), -limit, limit)
    return np.rint(np.ldexp(terms, unit_bits)).astype(np.int64)


def ordered_products(matrix: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """matrix (rows, n) @ each of blocks (count, n, rest), each sum over n in a fixed order
    (from 0, one rounded product and addition at a time), unlike BLAS, whose order and fused
    multiply-adds differ between machines."""
    matrix, blocks = _array(matrix), _array(blocks)
    if _use_compiled(blocks):
        return _kernels().ordered_products(matrix, blocks)
    return _ordered_products(matrix, blocks)


def _ordered_products(matrix: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    out = np.zeros((blocks.shape[0], matrix.shape[0], blocks.shape[2]))
    for j in range(matrix.shape[1]):
        out += matrix[None, :, j, None] * blocks[:, j : j + 1, :]
    return out


def log1p(x) -> np.ndarray:
    """ln(1 + x), accurate near 0: ln(u) x / (u - 1) with u = 1 + x rounded (Goldberg)."""
    x = _array(x)
    u = 1.0 + x
    d = u - 1.0
    safe = np.where(d == 0, 1.0, d)
    return np.where(d == 0, x, log(u) * (x / safe))


def interp(x, xp: np.ndarray, fp: np.ndarray) -> np.ndarray:
    """np.interp (xp increasing, clamped at the ends) in fixed, unfused operations."""
    x = np.clip(_array(x), xp[0], xp[-1])
    i = np.clip(np.searchsorted(xp, x, side="right") - 1, 0, len(xp) - 2)
    fraction = (x - xp[i]) / (xp[i + 1] - xp[i])
    return fp[i] + fraction * (fp[i + 1] - fp[i])
