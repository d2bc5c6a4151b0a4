"""The exact network's hot loops in C: integer tap products for quantization-aware layers,
and the channel norm with SiLU for every model.

Their sums are sums of integers (16-bit inputs times 8-bit weights), the same in any order,
so a compiled loop gives exactly the numbers the float64 products give, only faster (about
three times on one core: docs/portability.md); the norm and SiLU are the same IEEE
operations as the torch code, one by one, in the same order. The C source ships with the package and is
compiled on first use with the system's C compiler into the user's cache; where there is
no compiler, or ``DIFFCODEC_KERNEL=off``, the float64 products run instead, and the files
are the same bytes either way. ``DIFFCODEC_KERNEL=plain`` keeps the compiled loop off its
AVX2 path (for tests: both paths take the same sums).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from functools import lru_cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels") / "intconv.c"
COLUMNS = 16  # the loop's output tile width: packed weights are padded to a multiple of it


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "diffcodec"


def _compile(target: Path) -> bool:
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if not compiler:
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        for extra in (["-fopenmp"], []):  # threads where OpenMP is there, else one thread
            # no contraction of a * b + c into one rounding, whatever the target's FMA
            command = [compiler, "-O3", "-ffp-contract=off", "-shared", "-fPIC", *extra, str(SOURCE), "-o", str(built), "-lm"]
            try:
                done = subprocess.run(command, capture_output=True, timeout=120, check=False)
            except (OSError, subprocess.SubprocessError):
                return False
            if done.returncode == 0:
                os.replace(built, target)  # atomic: a concurrent process sees all of it or none
                return True
    return False


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled loop, built once per source and machine type; None where it cannot be."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode()).hexdigest()[:16]
    target = _cache_dir() / f"intconv-{key}.so"
    try:
        if not target.exists() and not _compile(target):
            return None
        lib = ctypes.CDLL(str(target))
    except OSError:
        return None
    pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.intconv.argtypes = [pointer, pointer, i64, pointer, i32, pointer, i32, i64, pointer, i32, pointer, pointer, i32, i32]
    lib.intconv.restype = i32
    lib.to_int16.argtypes = [pointer, i64, i64, i64, ctypes.c_double, pointer, i64, i64, i64, i32]
    lib.to_int16.restype = None
    lib.norm_silu.argtypes = [pointer, i64, i64, pointer, pointer, pointer, pointer, pointer, i64, ctypes.c_double,
                              pointer, i32]
    lib.norm_silu.restype = None
    return lib


def available() -> bool:
    """Whether quantization-aware layers use the compiled loop (not with DIFFCODEC_KERNEL=off)."""
    return os.environ.get("DIFFCODEC_KERNEL") != "off" and library() is not None


INPUT_LIMIT = 2**15 - 1


def pack(taps: torch.Tensor) -> torch.Tensor:
    """(taps, in, out) integer weights, |k| < 2^15, as the loop reads them: int16 pairs along
    the inputs, (taps, in / 2, out padded to COLUMNS, 2), zeros where padded."""
    if float(taps.abs().max()) > INPUT_LIMIT:
        raise ValueError("weights beyond 16 bits")
    count, inputs, outputs = taps.shape
    packed = torch.zeros(count, inputs + inputs % 2, -(-outputs // COLUMNS) * COLUMNS, dtype=torch.int16)
    packed[:, :inputs, :outputs] = taps.to(torch.int16)
    return packed.view(count, packed.shape[1] // 2, 2, -1).permute(0, 1, 3, 2).contiguous()


def to_int16(x: torch.Tensor, exponent: int, pad: tuple[int, int, int, int] = (0, 0, 0, 0)) -> torch.Tensor:
    """x (H, W, C) float64 as a quantization-aware layer reads it: round(x 2^-exponent), half to
    even, clamped to +-(2^15 - 1), as int16, inside zeros (pad: top, bottom, left, right rows
    and columns). One pass in C; the same numbers as exact_network._Layer._input."""
    height, width, channels = x.shape
    top, bottom, left, right = pad
    out = torch.zeros(height + top + bottom, width + left + right, channels, dtype=torch.int16)
    x = x.contiguous()
    library().to_int16(x.data_ptr(), height, width, channels, 2.0**-exponent, out.data_ptr(), out.shape[1], top, left,
                       torch.get_num_threads())
    return out


def tap_products(rows: torch.Tensor, base: torch.Tensor, offsets: list[int], packed: torch.Tensor,
                 outputs: int, factor: torch.Tensor | None = None, bias: torch.Tensor | None = None) -> torch.Tensor:
    """sum over taps t of rows[base + offsets[t]] @ weights[t], exactly, as float64 (len(base),
    outputs); with ``factor`` and ``bias`` (float64 per output), that sum times the factor plus
    the bias, two roundings in this order.

    ``rows``: (N, in) integers |q| <= 2^15 - 1 (any dtype); ``base``: int64 row indices, every
    base + offset inside ``rows``. The loop keeps pairs of products in 32 bits for as many
    pairs as stay below 2^31 with these weights, then sums in 64 bits."""
    lib = library()
    if base.numel() and (int(base.min()) + min(offsets) < 0 or int(base.max()) + max(offsets) >= rows.shape[0]):
        raise IndexError("a tap reads outside the rows")  # the C loop does not check
    inputs = packed.shape[1] * 2
    data = rows.to(torch.int16)
    if data.shape[1] != inputs:
        data = torch.nn.functional.pad(data, (0, inputs - data.shape[1]))
    data = data.contiguous()
    base = base.to(torch.int64).contiguous()
    offset = torch.tensor(offsets, dtype=torch.int64)
    width = packed.shape[2]
    out = torch.empty(base.numel(), width, dtype=torch.float64)
    pair = 2 * INPUT_LIMIT * max(1, int(packed.abs().max()))
    chunk = (2**31 - 1) // pair
    path = 0 if os.environ.get("DIFFCODEC_KERNEL") == "plain" else 1
    scale = shift = None
    if factor is not None:
        scale = torch.zeros(width, dtype=torch.float64)
        shift = torch.zeros(width, dtype=torch.float64)
        scale[:outputs], shift[:outputs] = factor, bias
    lib.intconv(data.data_ptr(), base.data_ptr(), base.numel(), offset.data_ptr(), len(offsets), packed.data_ptr(),
                inputs, width, out.data_ptr(), chunk, None if scale is None else scale.data_ptr(),
                None if shift is None else shift.data_ptr(), torch.get_num_threads(), path)
    return out[:, :outputs] if width != outputs else out


def norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mul: torch.Tensor | None,
              add: torch.Tensor | None, table: torch.Tensor, offset: int, limit: float) -> torch.Tensor:
    """exact_network's ChannelNorm of x (H, W, C) on the activation grid, times ``mul`` plus
    ``add`` where given (a FiLM), then SiLU by ``table``: the same numbers, in one pass."""
    x = x.contiguous()
    out = torch.empty_like(x)
    flat = [t.reshape(-1).contiguous() for t in (weight, bias)]
    film = [None, None] if mul is None else [t.reshape(-1).contiguous() for t in (mul, add)]
    library().norm_silu(x.data_ptr(), x.numel() // x.shape[-1], x.shape[-1], flat[0].data_ptr(), flat[1].data_ptr(),
                        None if mul is None else film[0].data_ptr(), None if mul is None else film[1].data_ptr(),
                        table.data_ptr(), offset, limit, out.data_ptr(), torch.get_num_threads())
    return out
