"""The exact network's hot loops in C: integer tap products for quantization-aware layers,
float64 ones for the others (the stem), the channel norm with SiLU, the SiLU lookup, the
rounding to the activation grid and the stem's input (Fourier features) for every model.

The tap products' sums are exact (integers, or float64 multiples of one unit below 2^53),
so they are the same in any order: a compiled loop gives exactly the numbers torch's
products give, only faster (docs/portability.md). Every other operation is the torch code's
IEEE operation, correctly rounded (in a vector lane or a scalar one), in the same order. The
C source ships with the package and is compiled on first use with the system's C compiler
into the user's cache; where there is no compiler, or ``DIFFCODEC_KERNEL=off``, the torch
code runs instead, and the files are the same bytes either way. ``DIFFCODEC_KERNEL=plain``
keeps the compiled loops off their vector paths, AVX2 and SSE2 on x86-64 and NEON on 64-bit
ARM (for tests: every path gives the same numbers).
"""

from __future__ import annotations

import ctypes
import hashlib
import operator
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .network import INPUT_LIMIT  # the inputs' bound, also the packed weights'

SOURCE = Path(__file__).with_name("kernels") / "compiled.c"
COLUMNS = 16  # the loop's output tile width: packed weights are padded to a multiple of it


def _cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "diffcodec"


def _builds() -> list[list[str]]:
    """The compile commands to try, best first: with OpenMP threads (not on macOS, where a
    second OpenMP runtime beside torch's can abort the process), then without."""
    compiler = shlex.split(os.environ.get("CC", "")) or [
        shutil.which("cc") or shutil.which("gcc") or shutil.which("clang") or "cc"]
    # strict IEEE double arithmetic (compiled.c also refuses to build without it)
    base = [*compiler, "-O3", "-ffp-contract=off", "-fno-fast-math", "-shared", "-fPIC"]
    threads = [] if platform.system() == "Darwin" else [[*base, "-fopenmp"]]
    return threads + [base]


def _load(path: Path) -> ctypes.CDLL | None:
    try:
        lib = ctypes.CDLL(str(path))
        pointer, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
        lib.intconv.argtypes = [pointer, pointer, i64, pointer, i32, pointer, i32, i64, pointer, i32, pointer, pointer,
                                i32, i32]
        lib.intconv.restype = i32
        lib.to_int16.argtypes = [pointer, i64, i64, i64, ctypes.c_double, pointer, i64, i64, i64, i32, i32]
        lib.to_int16.restype = None
        lib.norm_silu.argtypes = [pointer, i64, i64, pointer, pointer, pointer, pointer, pointer, i64,
                                  ctypes.c_double, pointer, i32, i32]
        lib.norm_silu.restype = None
        lib.norm_silu_int16.argtypes = [pointer, i64, i64, i64, i64, ctypes.c_double, ctypes.c_double, pointer,
                                        pointer, pointer, pointer, pointer, i64, ctypes.c_double, pointer, i64, i64,
                                        i64, i32, i32]
        lib.norm_silu_int16.restype = None
        lib.silu.argtypes = [pointer, i64, pointer, i64, ctypes.c_double, pointer, i32, i32]
        lib.silu.restype = None
        lib.to_grid.argtypes = [pointer, i64, pointer, i64, i64, i64, ctypes.c_double, ctypes.c_double, pointer, i32, i32]
        lib.to_grid.restype = None
        lib.fourier.argtypes = [pointer, i64, i64, i64, i64, pointer, pointer, pointer, i64, ctypes.c_double,
                                ctypes.c_double, ctypes.c_double, pointer, i32]
        lib.fourier.restype = None
        lib.floatconv.argtypes = [pointer, pointer, i64, pointer, i32, pointer, i32, i64, pointer, pointer, i32, i32]
        lib.floatconv.restype = i32
        lib.exact_math.argtypes = [i32, pointer, i64, pointer, i32, pointer, pointer, i32, i32]
        lib.exact_math.restype = None
        lib.fixed_sum.argtypes = [pointer, i64, i32, ctypes.c_double, i32]
        lib.fixed_sum.restype = i64
        lib.ordered_products.argtypes = [pointer, i64, i64, pointer, i64, i64, pointer, i32]
        lib.ordered_products.restype = None
        return lib
    except (OSError, AttributeError):  # not a library for this machine, or not this source's
        return None


def _build(command: list[str], target: Path) -> bool:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        try:
            done = subprocess.run([*command, str(SOURCE), "-o", str(built), "-lm"], capture_output=True,
                                  timeout=120, check=False)
        except (OSError, subprocess.SubprocessError):
            return False
        if done.returncode != 0:
            return False
        os.replace(built, target)  # atomic: a concurrent process sees all of it or none
        return True


@lru_cache(maxsize=None)
def library() -> ctypes.CDLL | None:
    """The compiled loops, built once per source, machine type and compile command (cached
    in the user's cache folder, a damaged copy rebuilt); None where they cannot be built or
    loaded. Whether they compute what the torch code does is checked where they are used
    (exact_network.compiled_loops_agree)."""
    try:
        source = SOURCE.read_bytes()
        for command in _builds():
            key = hashlib.sha256(source + platform.machine().encode() + " ".join(command).encode()).hexdigest()[:16]
            target = _cache_dir() / f"compiled-{key}.so"
            lib = _load(target) if target.exists() else None
            if lib is None and _build(command, target):
                lib = _load(target)
            if lib is not None:
                global _PID
                _PID = os.getpid()
                return lib
    except (OSError, ValueError):  # no source, an unwritable cache, a $CC that does not parse
        return None
    return None


PARALLEL_WORK = 1 << 18  # operations below which a loop runs on one thread


def _threads(work: int) -> int:
    """torch's thread count for a loop of about ``work`` operations; one for less than
    PARALLEL_WORK (waking a second thread costs more than it saves: the network's deep levels
    run hundreds of such loops per pass), and in a process forked after the library was loaded
    (an OpenMP runtime's thread pool does not survive a fork; without OpenMP, as on macOS, always
    one). Any count gives the same numbers."""
    return torch.get_num_threads() if work >= PARALLEL_WORK and os.getpid() == _PID else 1


_PID = os.getpid()


_pinned = threading.local()


def setting() -> str | None:
    """DIFFCODEC_KERNEL: as read when the innermost :func:`pinned_setting` began, else now."""
    stack = getattr(_pinned, "settings", None)
    return stack[-1] if stack else os.environ.get("DIFFCODEC_KERNEL")


@contextmanager
def pinned_setting():
    """DIFFCODEC_KERNEL read once for what runs inside (a network pass makes some hundred
    calls, and reading the environment for each cost about 1 % of a pass)."""
    stack = _pinned.__dict__.setdefault("settings", [])
    stack.append(os.environ.get("DIFFCODEC_KERNEL"))
    try:
        yield
    finally:
        stack.pop()


def _path() -> int:
    """The loops' path: 1, AVX2 where the CPU has it, else SSE2 (x86-64) or NEON (64-bit ARM)
    for the tap products; 0 (DIFFCODEC_KERNEL=plain), plain C."""
    return 0 if setting() == "plain" else 1


def available() -> bool:
    """Whether the compiled loops can run here: built and loaded, and not DIFFCODEC_KERNEL=off."""
    return setting() != "off" and library() is not None


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
    if x.dtype != torch.float64 or x.dim() != 3 or x.device.type != "cpu" or min(pad) < 0:
        raise TypeError("to_int16 reads a float64 (H, W, C) CPU tensor into non-negative padding")
    height, width, channels = x.shape
    top, bottom, left, right = pad
    out = torch.zeros(height + top + bottom, width + left + right, channels, dtype=torch.int16)
    x = x.contiguous()
    library().to_int16(x.data_ptr(), height, width, channels, 2.0**-exponent, out.data_ptr(), out.shape[1], top, left,
                       _threads(4 * out.numel()), _path())
    return out


def _reads(rows: torch.Tensor, base: torch.Tensor | int, offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``base`` as int64 row indices (a count n: 0 .. n - 1) and ``offsets`` as a tensor, after
    checking that every base + offset lies inside ``rows`` (the C loops do not check)."""
    if not isinstance(base, torch.Tensor):
        count = operator.index(base)
        if count < 0:
            raise IndexError("a negative count of rows")
        low, high, base = 0, count - 1, _count(count)
    else:
        base = base.to(torch.int64).contiguous()
        low, high = (int(base.min()), int(base.max())) if base.numel() else (0, -1)
    if high >= low and (low + min(offsets) < 0 or high + max(offsets) >= rows.shape[0]):
        raise IndexError("a tap reads outside the rows")
    return base, _offsets(tuple(offsets))


@lru_cache(maxsize=16)
def _count(n: int) -> torch.Tensor:
    return torch.arange(n)


@lru_cache(maxsize=64)
def _offsets(offsets: tuple[int, ...]) -> torch.Tensor:
    return torch.tensor(offsets, dtype=torch.int64)


def _padded(values: torch.Tensor, width: int) -> torch.Tensor:
    """Per-output float64 values as the loops read them: ``width`` of them, zeros after."""
    values = values.to(torch.float64).reshape(-1)
    if values.numel() == width:
        return values.contiguous()
    out = torch.zeros(width, dtype=torch.float64)
    out[: values.numel()] = values
    return out


def peak(packed: torch.Tensor) -> int:
    """The largest |weight| of packed weights (what bounds their 32-bit partial sums)."""
    return max(1, int(packed.abs().max()))


def tap_products(rows: torch.Tensor, base: torch.Tensor | int, offsets: list[int], packed: torch.Tensor,
                 outputs: int, factor: torch.Tensor | None = None, bias: torch.Tensor | None = None,
                 largest: int | None = None) -> torch.Tensor:
    """sum over taps t of rows[base + offsets[t]] @ weights[t], exactly, as float64 (len(base),
    outputs); with ``factor`` and ``bias`` (float64 per output), that sum times the factor plus
    the bias, two roundings in this order.

    ``rows``: (N, in) integers |q| <= 2^15 - 1 (any dtype); ``base``: int64 row indices, or a
    count n for 0 .. n - 1; every base + offset inside ``rows``. The loop keeps pairs of
    products in 32 bits for as many pairs as stay below 2^31 with these weights, then sums in
    64 bits. ``largest``: at least
    the weights' :func:`peak` (a caller that packed them once passes it; found here otherwise)."""
    lib = library()
    if packed.dtype != torch.int16 or packed.dim() != 4 or packed.shape[2] % COLUMNS or not packed.is_contiguous():
        raise TypeError("tap_products reads weights as pack() writes them")
    if rows.dim() != 2 or rows.shape[1] > packed.shape[1] * 2 or rows.device.type != "cpu" or packed.device.type != "cpu":
        raise TypeError("tap_products reads (rows, in) CPU inputs, at most as many as the weights have")
    if not offsets or len(offsets) != packed.shape[0] or outputs > packed.shape[2] or (
            factor is not None and (factor.numel() != outputs or bias.numel() != outputs)):
        raise TypeError("tap_products: one offset per tap, at most the packed outputs, a factor and bias each")
    base, offset = _reads(rows, base, offsets)
    inputs = packed.shape[1] * 2
    data = rows.to(torch.int16)
    if data.shape[1] != inputs:
        data = torch.nn.functional.pad(data, (0, inputs - data.shape[1]))
    data = data.contiguous()
    width = packed.shape[2]
    out = torch.empty(base.numel(), width, dtype=torch.float64)
    chunk = (2**31 - 1) // (2 * INPUT_LIMIT * (peak(packed) if largest is None else largest))
    scale = shift = None
    if factor is not None:
        scale, shift = _padded(factor, width), _padded(bias, width)
    lib.intconv(data.data_ptr(), base.data_ptr(), base.numel(), offset.data_ptr(), len(offsets), packed.data_ptr(),
                inputs, width, out.data_ptr(), chunk, None if scale is None else scale.data_ptr(),
                None if shift is None else shift.data_ptr(),
                _threads(base.numel() * len(offsets) * inputs * width), _path())
    return out[:, :outputs] if width != outputs else out


def pack_float(taps: torch.Tensor) -> torch.Tensor:
    """(taps, in, out) float64 weights as float_products reads them: out padded to COLUMNS."""
    count, inputs, outputs = taps.shape
    packed = torch.zeros(count, inputs, -(-outputs // COLUMNS) * COLUMNS, dtype=torch.float64)
    packed[:, :, :outputs] = taps
    return packed


def float_products(rows: torch.Tensor, base: torch.Tensor | int, offsets: list[int], packed: torch.Tensor, outputs: int,
                   bias: torch.Tensor) -> torch.Tensor:
    """sum over taps t of rows[base + offsets[t]] @ weights[t], plus the bias, in float64:
    for layers whose every product and partial sum is exact (the exact network's), so the
    sum is the same in any order and only the bias rounds, as in torch's float64 products."""
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in (rows, packed, bias)) or (
            rows.dim() != 2 or packed.dim() != 3 or packed.shape[2] % COLUMNS or rows.shape[1] != packed.shape[1]
            or not offsets or len(offsets) != packed.shape[0] or outputs > packed.shape[2] or bias.numel() != outputs):
        raise TypeError("float_products reads float64 (rows, in) inputs and weights as pack_float() writes them")
    base, offset = _reads(rows, base, offsets)
    rows, packed = rows.contiguous(), packed.contiguous()
    width = packed.shape[2]
    shift = _padded(bias, width)
    out = torch.empty(base.numel(), width, dtype=torch.float64)
    library().floatconv(rows.data_ptr(), base.data_ptr(), base.numel(), offset.data_ptr(), len(offsets),
                        packed.data_ptr(), packed.shape[1], width, shift.data_ptr(), out.data_ptr(),
                        _threads(4 * base.numel() * len(offsets) * packed.shape[1] * width), _path())
    return out[:, :outputs] if width != outputs else out


def _norm_parameters(name: str, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mul: torch.Tensor | None,
                     add: torch.Tensor | None) -> list[torch.Tensor | None]:
    """The norm's weight, bias and FiLM (mul, add; None for none) as the loops read them, one
    contiguous float64 CPU value per channel of x (checked, with x, first)."""
    channels = x.shape[-1]
    tensors = [x, weight, bias] + ([] if mul is None else [mul, add])
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in tensors) or channels < 1 or any(
            t.numel() != channels for t in tensors[1:]):
        raise TypeError(f"{name} reads float64 CPU tensors, one weight, bias (and FiLM) value per channel")
    return [None if t is None else t.reshape(-1).contiguous() for t in (weight, bias, mul, add)]


def _pointer(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def norm_silu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mul: torch.Tensor | None,
              add: torch.Tensor | None, table: torch.Tensor | None, offset: int = 0, limit: float = 0.0) -> torch.Tensor:
    """exact_network's ChannelNorm of x (H, W, C) on the activation grid, times ``mul`` plus
    ``add`` where given (a FiLM), then SiLU by ``table``: the same numbers, in one pass.
    Without a table, the values before the lookup (for exact_network's check)."""
    parameters = _norm_parameters("norm_silu", x, weight, bias, mul, add)
    if table is not None and (table.dtype != torch.float64 or table.device.type != "cpu"
                              or table.numel() != 2 * offset + 1 or limit != offset):
        raise TypeError("norm_silu reads the float64 SiLU table")
    x = x.contiguous()
    out = torch.empty_like(x)
    table = None if table is None else table.contiguous()
    library().norm_silu(x.data_ptr(), x.numel() // x.shape[-1], x.shape[-1], *map(_pointer, parameters),
                        _pointer(table), offset, limit, out.data_ptr(), _threads(16 * x.numel()), _path())
    return out


def norm_silu_int16(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mul: torch.Tensor | None,
                    add: torch.Tensor | None, table16: torch.Tensor, offset: int, limit: float,
                    pad: tuple[int, int, int, int], grid: tuple[float, float] | None = None) -> torch.Tensor:
    """:func:`norm_silu` of x (H, W, C) with the SiLU looked up in ``table16`` (the table as a
    quantization-aware layer reads it), as :func:`to_int16` writes that layer's input: the same
    integers, without the float64 values between. ``grid`` (limit, magic): x is first put on
    the grid as :func:`to_grid` does (x may then be a view with gaps between its rows, such as
    a convolution's output)."""
    parameters = _norm_parameters("norm_silu_int16", x, weight, bias, mul, add)
    if x.dim() != 3 or table16.dtype != torch.int16 or table16.numel() != 2 * offset + 1 or limit != offset or (
            min(pad) < 0):
        raise TypeError("norm_silu_int16 reads an (H, W, C) image and the 16-bit SiLU table, into padding")
    height, width, channels = x.shape
    top, bottom, left, right = pad
    out = torch.zeros(height + top + bottom, width + left + right, channels, dtype=torch.int16)
    x, x_stride = _rows(x)
    grid_limit, magic = grid if grid is not None else (0.0, 0.0)
    table16 = table16.contiguous()
    library().norm_silu_int16(x.data_ptr(), height, width, channels, x_stride // channels, grid_limit, magic,
                              *map(_pointer, parameters), table16.data_ptr(), offset, limit, out.data_ptr(),
                              out.shape[1], top, left, _threads(16 * x.numel()), _path())
    return out


def silu(x: torch.Tensor, table: torch.Tensor, offset: int, limit: float) -> torch.Tensor:
    """exact_network's SiLU of x (float64, CPU) by its table, in one pass: the same numbers."""
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in (x, table)) or (
            table.numel() != 2 * offset + 1 or limit != offset):
        raise TypeError("silu reads float64 CPU tensors and the SiLU table")
    x, table = x.contiguous(), table.contiguous()
    out = torch.empty_like(x)
    library().silu(x.data_ptr(), x.numel(), table.data_ptr(), offset, limit, out.data_ptr(), _threads(4 * x.numel()),
                   _path())
    return out


def _rows(x: torch.Tensor) -> tuple[torch.Tensor, int]:
    """x (H, W, C) as H rows of W * C contiguous values and the step between rows (a copy
    only where its rows are not contiguous)."""
    if x.stride(2) != 1 or x.stride(1) != x.shape[2] or x.stride(0) % max(1, x.shape[2]):
        x = x.contiguous()
    return x, x.stride(0)


def to_grid(x: torch.Tensor, y: torch.Tensor | None, limit: float, magic: float) -> torch.Tensor:
    """exact_network.quantize of x (or of x + y), float64 (H, W, C) on the CPU, in one pass:
    the same clamp and the same two additions."""
    tensors = [x] if y is None else [x, y]
    if any(t.dtype != torch.float64 or t.device.type != "cpu" or t.dim() != 3 or t.shape != x.shape for t in tensors):
        raise TypeError("to_grid reads float64 (H, W, C) CPU tensors of one shape")
    height, width, channels = x.shape
    x, x_stride = _rows(x)
    y, y_stride = (None, 0) if y is None else _rows(y)
    out = torch.empty(height, width, channels, dtype=torch.float64)
    library().to_grid(x.data_ptr(), x_stride, None if y is None else y.data_ptr(), y_stride, height, width * channels,
                      limit, magic, out.data_ptr(), _threads(4 * out.numel()), _path())
    return out


def fourier(z: torch.Tensor, patch: int, tables: torch.Tensor, start: torch.Tensor, period: torch.Tensor,
            limit: float, magic: float, fourier_limit: float) -> torch.Tensor:
    """exact_network's stem input for z (1, C, H, W) float64 (H, W multiples of ``patch``):
    z on its grid and its Fourier features from the tables (``tables`` holds them one after
    another, feature j at start[j], ``period[j]`` values, a power of two), unshuffled by
    ``patch``, channels last; in one pass."""
    if any(t.dtype != torch.float64 or t.device.type != "cpu" for t in (z, tables)) or z.dim() != 4 or (
            z.shape[0] != 1 or z.shape[2] % patch or z.shape[3] % patch):
        raise TypeError("fourier reads one float64 CPU image whose sides are multiples of the patch")
    if any(t.dtype != torch.int64 or t.device.type != "cpu" for t in (start, period)) or start.numel() != period.numel() or (
            start.numel() and (bool((period <= 0).any()) or bool((period & (period - 1)).any())
                               or int(start.min()) < 0 or int((start + period).max()) > tables.numel())):
        raise TypeError("fourier reads tables of power-of-two periods inside ``tables``")
    _, channels, height, width = z.shape
    features = start.numel()
    z, tables, start, period = (t.contiguous() for t in (z, tables, start, period))
    out = torch.empty(height // patch, width // patch, channels * (1 + features) * patch * patch, dtype=torch.float64)
    library().fourier(z.data_ptr(), channels, height, width, patch, tables.data_ptr(), start.data_ptr(),
                      period.data_ptr(), features, limit, magic, fourier_limit, out.data_ptr(),
                      _threads(16 * out.numel()))
    return out


def elementwise(name: str, x: np.ndarray, terms: np.ndarray, constants: np.ndarray) -> np.ndarray:
    """exact.py's ``name`` ("exp" or "log") of float64 ``x`` in one pass, with its series'
    ``terms`` and ``constants`` (exact.py's own doubles): the same numbers as its numpy code."""
    if any(a.dtype != np.float64 for a in (x, terms, constants)) or name not in ("exp", "log"):
        raise TypeError("elementwise reads float64 arrays")
    shape = x.shape
    x, terms, constants = (np.ascontiguousarray(a) for a in (x, terms, constants))
    out = np.empty_like(x)
    library().exact_math(("exp", "log").index(name), x.ctypes.data, x.size, terms.ctypes.data, terms.size,
                         constants.ctypes.data, out.ctypes.data, _threads(8 * x.size), _path())
    return out.reshape(shape)


def fixed_sum(x: np.ndarray, bits: int, limit: float) -> int:
    """exact.fixed_sum's total in units of 2^-bits, in one pass (an exact integer sum)."""
    if x.dtype != np.float64:
        raise TypeError("fixed_sum reads float64 values")
    x = np.ascontiguousarray(x)
    return int(library().fixed_sum(x.ctypes.data, x.size, bits, limit, _threads(8 * x.size)))


def ordered_products(matrix: np.ndarray, blocks: np.ndarray) -> np.ndarray:
    """exact.ordered_products of float64 ``matrix`` (rows, n) and ``blocks`` (count, n, rest)
    in one pass: the same sums in the same order."""
    if matrix.dtype != np.float64 or blocks.dtype != np.float64 or blocks.ndim != 3 or matrix.shape[1] != blocks.shape[1]:
        raise TypeError("ordered_products reads float64 (rows, n) and (count, n, rest) arrays")
    matrix, blocks = np.ascontiguousarray(matrix), np.ascontiguousarray(blocks)
    out = np.empty((blocks.shape[0], matrix.shape[0], blocks.shape[2]))
    library().ordered_products(matrix.ctypes.data, matrix.shape[0], matrix.shape[1], blocks.ctypes.data,
                               blocks.shape[0], blocks.shape[2], out.ctypes.data,
                               _threads(4 * out.size * matrix.shape[1]))
    return out
