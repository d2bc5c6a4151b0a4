"""The network as the coders run it: the same U-Net in exact, portable arithmetic.

Float convolutions sum in an order that depends on the instruction set, the library and the
thread count, so their last bits differ between machines, and one ulp in a bits-back chain
corrupts everything after it. This twin of :class:`network.UNet` gives the same bits on
every machine (Balle, Johnston, Minnen 2019 make the entropy model's network integer for
this reason):

* Weights are rounded to WEIGHT_BITS significant bits per output channel (a power-of-two
  scale, so the rounding is exact and the same everywhere); every convolution and linear
  layer reads activations on the grid 2^-ACT_FRACTION_BITS, clamped to +-ACT_LIMIT. Every
  product is then an exactly representable float64 and every partial sum an integer
  multiple of one unit below 2^53, so the sums are exact in any order: SIMD width, FMA,
  threads, BLAS or device cannot change them. Biases are added after the sum.
* Because the sums are exact, they may be taken in whatever order runs fastest: activations
  are channels-last, a convolution is a sum of per-tap (pixels, in) x (in, out) float64
  matrix products on slices of the padded image, layers reading one input share one
  product, and an upsampler convolves the small image phase by phase.
* A quantization-aware layer (a model trained with ``weight_bits``) reads its input as 16-bit
  integers on its own power-of-two grid and has 8-bit integer weights times a step per
  output channel: the integer sums are exact the same way, then scaled (:class:`_Layer`).
* ChannelNorm sums grid values and their squares (exact), then divides and takes one square
  root (correctly rounded IEEE operations, elementwise, in a fixed order).
* SiLU is a table on the activation grid; the Fourier features are tables indexed by the
  input on a 2^-FOURIER_FRACTION_BITS grid; the gamma embedding uses the portable sin and
  cos of :mod:`exact`. Every table is built with :mod:`exact`, so it is the same everywhere.

The float network stays the one that trains; this one is derived from its weights when a
model is loaded (no extra state: every checkpoint is portable). At 16-bit weights and 2^-12
activations its rate is the float network's within noise (docs/portability.md); it runs in
float64, several times slower than the float32 network. On the CPU the quantization-aware
layers' integer sums, the other layers' float64 sums, the stem's input, the norms, SiLU
lookups and roundings to the grid run in compiled C loops where they can be built
(compiled.py: the same numbers, faster). One module, over 300 lines, so that everything
the exactness argument rests on reads together.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
from torch.nn import functional as F

from . import compiled, exact
from ..errors import CheckpointError
from .network import INPUT_LIMIT, UNCALIBRATED, QuantizedConv2d, UNet, weight_scales

WEIGHT_BITS = 16
ACT_FRACTION_BITS = 12
ACT_LIMIT = 256.0  # |activation| <= 2^8: with 16-bit weights, sums of up to 2^13 products stay below 2^53
FOURIER_FRACTION_BITS = 16
FOURIER_LIMIT = 8.0
_ACT_SCALE = float(2**ACT_FRACTION_BITS)


def _magic(fraction_bits: int) -> float:
    return 1.5 * 2.0 ** (52 - fraction_bits)


def quantize(x: torch.Tensor, fraction_bits: int = ACT_FRACTION_BITS) -> torch.Tensor:
    """Onto the grid 2^-fraction_bits within +-ACT_LIMIT, rounding half to even: adding and
    subtracting 1.5 * 2^(52 - fraction_bits) rounds to that grid in two IEEE additions."""
    magic = _magic(fraction_bits)
    return (torch.clamp(x, -ACT_LIMIT, ACT_LIMIT) + magic) - magic


def on_grid(x: torch.Tensor, fraction_bits: int = ACT_FRACTION_BITS) -> bool:
    """Whether x lies on the grid (what every layer's exactness rests on; for tests)."""
    return bool(torch.equal(quantize(x, fraction_bits), x))


def round_weight(weight: torch.Tensor) -> torch.Tensor:
    """Each output channel's weights to WEIGHT_BITS significant bits on a power-of-two grid."""
    w = weight.detach().to(torch.float64).cpu()
    peak = w.reshape(w.shape[0], -1).abs().amax(dim=1).numpy()
    _, exponent = np.frexp(np.where(peak > 0, peak, 1.0))  # peak = m 2^e, m in [1/2, 1)
    unit = torch.from_numpy(np.ldexp(1.0, exponent - (WEIGHT_BITS - 1))).view(-1, *([1] * (w.ndim - 1)))
    return torch.round(w / unit) * unit


# zeros around an image (top, bottom, left, right) for _same_taps: one extra row below keeps
# the last tap's slice in bounds
SAME_PADDING = (1, 2, 1, 1)


def _same_taps(width: int) -> tuple[int, list[int]]:
    """A 3x3 'same' convolution over the zero-padded image flattened row by row: the padded
    row length, and each tap's offset (tap (dy, dx) of output pixel p reads p + dy row + dx)."""
    row = width + 2
    return row, [(k // 3) * row + k % 3 for k in range(9)]


@lru_cache(maxsize=16)
def _strided_base(out_h: int, out_w: int, row: int) -> torch.Tensor:
    """Where a 3x3 stride-2 convolution's output pixels start reading in the padded image
    flattened row by row (rows of ``row`` pixels): the top-left tap of each."""
    return (torch.arange(out_h).view(-1, 1) * 2 * row + torch.arange(out_w).view(1, -1) * 2).reshape(-1)


@lru_cache(maxsize=1)
def _silu_table() -> np.ndarray:
    """SiLU at every point of the activation grid (x sigmoid(x), rounded to the grid)."""
    x = np.arange(-ACT_LIMIT * _ACT_SCALE, ACT_LIMIT * _ACT_SCALE + 1) / _ACT_SCALE
    return np.rint(x * exact.sigmoid(x) * _ACT_SCALE) / _ACT_SCALE


class _Layer:
    """A convolution or linear layer's rounded weights (float64) and bias, applied to
    channels-last activations: a convolution is a sum over its taps of (pixels, in) x (in,
    out) matrix products, which BLAS runs fast in float64 and which are exact in any order.

    A quantization-aware convolution (network.QuantizedConv2d) computes what it trained:
    its weights are 8-bit integers k times a step per output channel, and it reads its
    input as 16-bit integers q on its own power-of-two grid 2^e (rounding half to even, then
    clamping). The sum of q k (below 2^34 in the default architecture, 2^53 in any) is exact in float64 in any order; times the
    channel's step 2^e (one rounding), plus the bias (another), is the output."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.bias = module.bias.detach().to(torch.float64).to(device)
        self.stride = getattr(module, "stride", (1,))[0]
        self.exponent = None  # the input grid's exponent e of a quantization-aware layer
        if isinstance(module, QuantizedConv2d):
            weight = module.weight.detach().float().cpu()
            step = weight_scales(weight, module.weight_bits)  # IEEE division: the same everywhere
            weight = torch.round(weight / step).double().to(device)
            self.exponent = int(module.input_exponent)
            if self.exponent == UNCALIBRATED:
                raise CheckpointError("the model has a quantization-aware layer that was never calibrated "
                                      "(trained without running it): it cannot be computed exactly")
            self.factor = (step.reshape(-1).double() * 2.0**self.exponent).to(device)  # exact: a power of two
        else:
            weight = round_weight(module.weight).to(device)
        if weight.ndim == 4:  # (out, in, k, k) -> one (in, out) matrix per tap, row-major taps
            self.kernel = weight.shape[-1]
            self.taps = weight.permute(2, 3, 1, 0).reshape(self.kernel**2, weight.shape[1], -1).contiguous()
        else:
            self.matrix = weight.T.contiguous()

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of x (H, W, C), which must lie on an activation grid (every
        caller's input does by construction: tests/test_portability.py checks it)."""
        if self._compiled(x):
            return self._compiled_conv(x)
        if self._compiled_float(x):
            return self._float_conv(x)
        return self._torch_conv(x)

    def _torch_conv(self, x: torch.Tensor) -> torch.Tensor:
        x = self._input(x)
        height, width, channels = x.shape
        if self.kernel == 1:
            out = (x.reshape(-1, channels) @ self.taps[0]).view(height, width, -1)
        elif self.stride == 1:
            out = self._same(x)
        else:
            out = self._strided(x)
        return self._output(out)

    def _input(self, x: torch.Tensor) -> torch.Tensor:
        """A quantization-aware layer's input as its integers q (scaling by a power of two and
        rounding are exact); any other layer's as it is."""
        if self.exponent is None:
            return x
        return torch.clamp(torch.round(x * 2.0**-self.exponent), -INPUT_LIMIT, INPUT_LIMIT)

    def _compiled(self, x: torch.Tensor) -> bool:
        """Whether this layer's integer sums run in the compiled loop (compiled.py): a
        quantization-aware layer on the CPU, where the loops were built and agree."""
        return self.exponent is not None and x.device.type == "cpu" and compiled_loops_agree()

    def _compiled_float(self, x: torch.Tensor) -> bool:
        """Whether this layer, not quantization-aware, runs its float64 products in the
        compiled loop: a 'same' 3x3 or 1x1 convolution on the CPU, where the loops agree."""
        return (self.exponent is None and self.kernel in (1, 3) and self.stride == 1 and x.device.type == "cpu"
                and compiled_loops_agree())

    def _float_conv(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`_torch_conv` of a layer that is not quantization-aware, in the compiled loop:
        the same exact sums (in another order) and the same rounding, the bias."""
        height, width, channels = x.shape
        if not hasattr(self, "_float_pack"):
            self._float_pack = compiled.pack_float(self.taps)
        outputs = self.taps.shape[-1]
        if self.kernel == 1:
            out = compiled.float_products(x.reshape(-1, channels), height * width, [0], self._float_pack,
                                          outputs, self.bias)
            return out.view(height, width, -1)
        row, offsets = _same_taps(width)
        flat = F.pad(x, (0, 0, 1, 1, 1, 2)).view(-1, channels)
        out = compiled.float_products(flat, height * row, offsets, self._float_pack, outputs, self.bias)
        return out.view(height, row, -1)[:, :width]

    def _packed(self, key: str = "taps") -> torch.Tensor:
        """The weights ``key`` as the compiled loop reads them, packed once (with their peak)."""
        if not hasattr(self, "_packs"):
            self._packs = {}
        if key not in self._packs:
            taps = getattr(self, key)
            packed = compiled.pack(taps.reshape(-1, *taps.shape[-2:]))
            self._packs[key] = packed
            self._packs[key, "peak"] = compiled.peak(packed)
        return self._packs[key]

    def _products(self, rows: torch.Tensor, base: torch.Tensor | int, offsets: list[int], key: str = "taps",
                  some: slice = slice(None)) -> torch.Tensor:
        """compiled.tap_products with this layer's packed weights (``some`` of their taps), scale and bias."""
        packed = self._packed(key)[some]
        return compiled.tap_products(rows, base, offsets, packed, self.taps.shape[-1], self.factor, self.bias,
                                     self._packs[key, "peak"])

    def _compiled_conv(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`conv` in the compiled loop: the same integers, sums and roundings, in the same
        layouts (each tap a row offset into the padded image, channels last)."""
        height, width, channels = x.shape
        if self.kernel == 1:
            q = compiled.to_int16(x, self.exponent).view(-1, channels)
            return self._products(q, height * width, [0]).view(height, width, -1)
        if self.stride == 1:
            return self.same_products(compiled.to_int16(x, self.exponent, SAME_PADDING), height, width)
        row, offsets = _same_taps(width)
        padded = compiled.to_int16(x, self.exponent, (1, 1, 1, 1)).view(-1, channels)
        out_h, out_w = height // 2, width // 2
        return self._products(padded, _strided_base(out_h, out_w, row), offsets).view(out_h, out_w, -1)

    def reads_int16_same(self, x: torch.Tensor) -> bool:
        """Whether this layer is a 3x3 'same' convolution in the compiled integer loop, which
        :meth:`same_products` can give its 16-bit input directly."""
        return self.kernel == 3 and self.stride == 1 and type(self) is _Layer and self._compiled(x)

    def same_products(self, q: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """The 3x3 'same' convolution of the (H, W, C) image whose 16-bit integers ``q`` holds
        inside SAME_PADDING zeros (as compiled.to_int16 writes them)."""
        row, offsets = _same_taps(width)
        return self._products(q.view(-1, q.shape[-1]), height * row, offsets).view(height, row, -1)[:, :width]

    def _output(self, sums: torch.Tensor) -> torch.Tensor:
        if self.exponent is None:
            return sums + self.bias
        return sums * self.factor + self.bias  # two roundings, in this order

    def _same(self, x: torch.Tensor) -> torch.Tensor:
        """A 3x3 'same' convolution without copying shifted inputs: in the zero-padded image
        flattened row by row (rows of width W + 2), tap (dy, dx) of output pixel p reads
        pixel p + dy (W + 2) + dx, so each tap multiplies one contiguous slice. The two
        extra columns of each output row are discarded; one extra padded row keeps the
        last tap's slice in bounds."""
        height, width, channels = x.shape
        row, offsets = _same_taps(width)
        flat = F.pad(x, (0, 0, 1, 1, 1, 2)).view(-1, channels)
        length = height * row
        out = flat[:length] @ self.taps[0]
        for k in range(1, 9):
            out.addmm_(flat[offsets[k] : offsets[k] + length], self.taps[k])
        return out.view(height, row, -1)[:, :width]

    def _strided(self, x: torch.Tensor) -> torch.Tensor:
        """A 3x3 stride-2 convolution (padding 1, even sides): one strided view per tap."""
        height, width, channels = x.shape
        padded = F.pad(x, (0, 0, 1, 1, 1, 1))
        out_h, out_w = height // 2, width // 2
        out = None
        for k, tap in enumerate(self.taps):
            dy, dx = divmod(k, 3)
            view = padded[dy : dy + 2 * out_h : 2, dx : dx + 2 * out_w : 2].reshape(-1, channels)
            out = view @ tap if out is None else out.addmm_(view, tap)
        return out.view(out_h, out_w, -1)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x) @ self.matrix + self.bias

    @classmethod
    def stacked(cls, layers: list[_Layer]) -> list[_Layer]:
        """Convolutions of one input as few layers (their outputs side by side, split by
        ``widths``): one wider product instead of several narrow ones, the same sums. Layers
        that read the input on different grids (quantization-aware layers calibrated apart)
        go in different stacks, in order."""
        groups: list[list[_Layer]] = []
        for layer in layers:
            if groups and groups[-1][0].exponent == layer.exponent:
                groups[-1].append(layer)
            else:
                groups.append([layer])
        return [cls._stack(group) for group in groups]

    @classmethod
    def _stack(cls, layers: list[_Layer]) -> _Layer:
        stack = cls.__new__(cls)
        stack.kernel, stack.stride = layers[0].kernel, layers[0].stride
        stack.exponent = layers[0].exponent
        if stack.exponent is not None:
            stack.factor = torch.cat([layer.factor for layer in layers])
        stack.taps = torch.cat([layer.taps for layer in layers], dim=-1)
        stack.bias = torch.cat([layer.bias for layer in layers])
        stack.widths = [layer.bias.numel() for layer in layers]
        return stack


class _Upsampler(_Layer):
    """Nearest-neighbour upsampling by 2, then a 3x3 'same' convolution."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        super().__init__(module, device)
        self.phase_taps = self._phase_taps()

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The 3x3 'same' convolution of x (H, W, C) upsampled by 2 (nearest neighbour),
        without making the upsampled image: output pixel (2y + i, 2x + j) reads source rows y - 1
        and y (i = 0) or y and y + 1 (i = 1), and the same for columns, so each of the four
        phases is a 2x2 convolution of x with taps summed in pairs (integers on the
        weights' grid, so the sums are the same ones, exactly)."""
        return super().conv(x)

    def _torch_conv(self, x: torch.Tensor) -> torch.Tensor:
        height, width, channels = x.shape
        row = width + 2
        flat = F.pad(self._input(x), (0, 0, 1, 1, 1, 2)).view(-1, channels)
        length = height * row
        phases = []
        for i in range(2):
            for j in range(2):
                out = None
                for a in range(2):
                    for b in range(2):
                        start = (i + a) * row + j + b
                        tap = self.phase_taps[i, j, a, b]
                        out = flat[start : start + length] @ tap if out is None else out.addmm_(flat[start : start + length], tap)
                phases.append(out.view(height, row, -1)[:, :width])
        return self._output(self._interleaved(phases, height, width))

    def _compiled_conv(self, x: torch.Tensor) -> torch.Tensor:
        height, width, channels = x.shape
        row = width + 2
        flat = compiled.to_int16(x, self.exponent, SAME_PADDING).view(-1, channels)
        phases = []
        for phase in range(4):  # (i, j) = divmod(phase, 2); the sums scaled and biased in the loop
            i, j = divmod(phase, 2)
            offsets = [(i + a) * row + j + b for a in range(2) for b in range(2)]
            out = self._products(flat, height * row, offsets, "phase_taps",
                                 slice(4 * phase, 4 * (phase + 1)))  # its peak bounds each phase's
            phases.append(out.view(height, row, -1)[:, :width])
        return self._interleaved(phases, height, width)

    @staticmethod
    def _interleaved(phases: list[torch.Tensor], height: int, width: int) -> torch.Tensor:
        """The four phases' outputs (H, W, out) as the upsampled image (2H, 2W, out)."""
        out = torch.stack(phases).view(2, 2, height, width, -1).permute(2, 0, 3, 1, 4)
        return out.reshape(2 * height, 2 * width, -1)

    def _compiled_float(self, x: torch.Tensor) -> bool:
        return False  # its phases run in torch's float64 products (a model without --weight-bits)

    def _phase_taps(self) -> torch.Tensor:
        """(2, 2, 2, 2, in, out): for phase (i, j), the summed taps reading source offsets
        (i - 1 + a, j - 1 + b); tap d of phase i reads offset floor((i + d - 1) / 2)."""
        taps = self.taps.view(3, 3, *self.taps.shape[1:])
        merged = torch.zeros(2, 2, 2, 2, *self.taps.shape[1:], dtype=taps.dtype, device=taps.device)
        for i in range(2):
            for j in range(2):
                for dy in range(3):
                    for dx in range(3):
                        a, b = (i + dy - 1) // 2 - i + 1, (j + dx - 1) // 2 - j + 1
                        merged[i, j, a, b] += taps[dy, dx]
        return merged


class _Norm:
    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.weight = module.weight.detach().to(torch.float64).to(device)
        self.bias = module.bias.detach().to(torch.float64).to(device)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Norm of x (H, W, C), which must lie on the activation grid (so its sums are exact)."""
        channels = x.shape[-1]
        mean = x.sum(dim=-1, keepdim=True) / channels  # exact sums of grid values
        variance = (x * x).sum(dim=-1, keepdim=True) / channels - mean * mean
        y = (x - mean) / torch.sqrt(torch.clamp(variance, min=0.0) + 1e-6)
        return y * self.weight + self.bias


class _Block:
    def __init__(self, block, device) -> None:
        self.norm1, self.norm2 = _Norm(block.norm1, device), _Norm(block.norm2, device)
        self.conv1, self.conv2 = _Layer(block.conv1, device), _Layer(block.conv2, device)
        self.film = _Layer(block.film, device)
        self.skip = None if isinstance(block.skip, torch.nn.Identity) else _Layer(block.skip, device)


def _silu_lookup(x: torch.Tensor, table: torch.Tensor, offset: int) -> torch.Tensor:
    limit = ACT_LIMIT * _ACT_SCALE  # quantize(x) in grid steps (rint rounds half to even too)
    index = (x * _ACT_SCALE).clamp_(-limit, limit).round_().long().add_(offset)
    return torch.take(table, index)


def fourier_table(n: int, device: torch.device | str = "cpu") -> tuple[int, torch.Tensor, torch.Tensor]:
    """sin and cos of 2^n pi z for z = j 2^-FOURIER_FRACTION_BITS over one period, on the grid."""
    period = 1 << max(0, FOURIER_FRACTION_BITS + 1 - n)
    phase = exact.PI * np.ldexp(np.arange(period, dtype=np.float64), n - FOURIER_FRACTION_BITS)
    grid = lambda v: torch.from_numpy(np.rint(v * _ACT_SCALE) / _ACT_SCALE).to(device)  # noqa: E731
    return period, grid(exact.sin(phase)), grid(exact.cos(phase))


def fourier_features(z: torch.Tensor, tables: list[tuple[int, torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    """z (N, C, H, W) on the fine grid, then per channel its features from ``tables``."""
    if not tables:
        return quantize(z, FOURIER_FRACTION_BITS)
    n, c, h, w = z.shape
    k = torch.round(torch.clamp(z, -FOURIER_LIMIT, FOURIER_LIMIT) * 2.0**FOURIER_FRACTION_BITS).long()
    sines, cosines = [], []
    for period, sin_table, cos_table in tables:
        index = torch.remainder(k, period)
        sines.append(sin_table[index])
        cosines.append(cos_table[index])
    features = torch.stack(sines + cosines, dim=2).reshape(n, -1, h, w)
    return torch.cat([quantize(z, FOURIER_FRACTION_BITS), features], dim=1)


def flat_tables(tables: list[tuple[int, torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The tables one after another (sines, then cosines), their starts and periods: the
    compiled stem input's layout (compiled.fourier)."""
    columns = [t[1] for t in tables] + [t[2] for t in tables]
    flat = torch.cat(columns).cpu() if columns else torch.zeros(1, dtype=torch.float64)
    period = torch.tensor([t.numel() for t in columns], dtype=torch.int64)
    return flat, torch.cumsum(period, 0) - period, period


def compiled_loops_agree() -> bool:
    """Whether the compiled loops (compiled.py) can be used here: built and loaded, not turned
    off (DIFFCODEC_KERNEL=off), and giving bit for bit what the torch code gives on a small
    quantization-aware convolution, an upsampler, float64 convolutions, a norm with SiLU, a
    SiLU, a rounding to the grid and the stem's input (a compiler that broke the IEEE
    arithmetic despite its flags is caught here, and the torch code runs instead; checked
    once per library and path)."""
    if not compiled.available():
        return False
    return _loops_agree(id(compiled.library()), compiled.setting())


@lru_cache(maxsize=None)
def _loops_agree(library: int, path: str | None) -> bool:
    try:
        with torch.random.fork_rng(devices=[]), torch.device("cpu"):
            return _compare_loops()
    except Exception:  # noqa: BLE001 - whatever failed, the torch code is the safe choice
        return False


def _compare_loops() -> bool:
    """The compiled loops against the torch code on a quantization-aware convolution, an
    upsampler, and a norm before its lookup, with and without a FiLM, and after it; a SiLU
    alone; a sum rounded to the grid (one operand a view with gaps between its rows); 3x3 and
    1x1 float64 convolutions of inputs on the stem's fine grid; the stem's input of an image
    with values beyond both clamps and between grid points."""
    from .network import ChannelNorm, QuantizedConv2d

    generator = torch.Generator().manual_seed(0)
    conv = QuantizedConv2d(6, 20, 3, padding=1, weight_bits=8)
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator))
        conv.bias.copy_(torch.randn(conv.bias.shape, generator=generator))
    conv.input_exponent.fill_(-9)
    x = quantize(40 * torch.randn(5, 7, 6, generator=generator, dtype=torch.float64))  # odd: the loops' tails
    norm = ChannelNorm(6)
    with torch.no_grad():
        norm.weight.copy_(1 + torch.randn(6, generator=generator))
        norm.bias.copy_(torch.randn(6, generator=generator))
    norm = _Norm(norm, x.device)
    film = (torch.randn(1, 6, generator=generator, dtype=torch.float64), torch.randn(1, 6, generator=generator, dtype=torch.float64))
    table = torch.from_numpy(_silu_table())
    offset, limit = int(ACT_LIMIT * _ACT_SCALE), ACT_LIMIT * _ACT_SCALE
    with torch.no_grad():
        pairs = [(layer._compiled_conv(x), layer._torch_conv(x)) for layer in (_Layer(conv, x.device), _Upsampler(conv, x.device))]
        normed, filmed = norm(x), norm(x) * (1 + film[0]) + film[1]
        pairs.append((compiled.norm_silu(x, norm.weight, norm.bias, None, None, None), normed))
        pairs.append((compiled.norm_silu(x, norm.weight, norm.bias, 1 + film[0], film[1], None), filmed))
        pairs.append((compiled.norm_silu(x, norm.weight, norm.bias, 1 + film[0], film[1], table, offset, limit),
                      _silu_lookup(filmed, table, offset)))
        pairs.append((compiled.silu(filmed, table, offset, limit), _silu_lookup(filmed, table, offset)))
        table16 = _Layer(conv, x.device)._input(table).to(torch.int16)  # as a layer on the grid 2^-9 reads it
        for mul, add, y in ((None, None, normed), (1 + film[0], film[1], filmed)):
            fused = compiled.norm_silu_int16(x, norm.weight, norm.bias, mul, add, table16, offset, limit, SAME_PADDING)
            read = torch.clamp(torch.round(_silu_lookup(y, table, offset) * 2.0**9), -INPUT_LIMIT, INPUT_LIMIT)
            pairs.append((fused.double(), F.pad(read, (0, 0, 1, 1, 1, 2)).to(torch.int16).double()))
        off_grid = 50 * torch.randn(5, 9, 6, generator=generator, dtype=torch.float64)[:, 1:8]  # gaps between rows
        fused = compiled.norm_silu_int16(off_grid, norm.weight, norm.bias, None, None, table16, offset, limit,
                                         SAME_PADDING, (ACT_LIMIT, _magic(ACT_FRACTION_BITS)))
        read = torch.round(_silu_lookup(norm(quantize(off_grid)), table, offset) * 2.0**9).clamp(-INPUT_LIMIT, INPUT_LIMIT)
        pairs.append((fused.double(), F.pad(read, (0, 0, 1, 1, 1, 2)).to(torch.int16).double()))
        wide = 300 * torch.randn(5, 10, 6, generator=generator, dtype=torch.float64)  # some beyond the clamps
        fine = 2.0 ** (FOURIER_FRACTION_BITS + 2)  # between the stem's grid points
        z = torch.round(torch.cat([6 * torch.randn(1, 3, 4, 6, generator=generator, dtype=torch.float64),
                                   wide[:4, :6, :3].permute(2, 0, 1)[None]], dim=2) * fine) / fine
        tables = [fourier_table(n) for n in (7, 8)]
        for layer in (torch.nn.Conv2d(6, 20, 3, padding=1), torch.nn.Conv2d(6, 20, 1)):
            layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
            layer = _Layer(layer, x.device)
            pairs.append((layer._float_conv(quantize(wide[:, :8], FOURIER_FRACTION_BITS)),
                          layer._torch_conv(quantize(wide[:, :8], FOURIER_FRACTION_BITS))))
        stem_input = compiled.fourier(z, 2, *flat_tables(tables), ACT_LIMIT, _magic(FOURIER_FRACTION_BITS), FOURIER_LIMIT)
        pairs.append((stem_input, F.pixel_unshuffle(fourier_features(z, tables), 2)[0].permute(1, 2, 0)))
        magic = _magic(ACT_FRACTION_BITS)
        pairs.append((compiled.to_grid(wide[:, :7], x, ACT_LIMIT, magic), quantize(wide[:, :7] + x)))
        pairs.append((compiled.to_grid(wide[:, :7], None, ACT_LIMIT, magic), quantize(wide[:, :7])))
    return all(a.shape == b.shape and torch.equal(a.view(torch.int64), b.contiguous().view(torch.int64)) for a, b in pairs)


FILM_GAMMAS = 1024  # gammas whose FiLMs an ExactNetwork keeps (about 20 kB each; as many as a file's steps can be)


class ExactNetwork:
    """:class:`UNet`'s forward in exact arithmetic (float64 tensors on its device)."""

    def __init__(self, network: UNet) -> None:
        self.config = config = network.config
        device = next(network.parameters()).device
        self.device = device
        layer = lambda m: _Layer(m, device)  # noqa: E731
        self.embed = [layer(network.embed[0]), layer(network.embed[2])]
        self.stem = layer(network.stem)
        self.down_blocks = [[_Block(b, device) for b in blocks] for blocks in network.down_blocks]
        self.downsamplers = [layer(m) for m in network.downsamplers]
        self.mid = _Block(network.mid, device)
        self.up_blocks = [[_Block(b, device) for b in blocks] for blocks in network.up_blocks]
        self.upsamplers = [_Upsampler(m, device) for m in network.upsamplers]
        self.out_norm = _Norm(network.out_norm, device)
        heads = []
        if config.progressive_heads:
            heads = [network.image_out, network.scale_out] + ([network.chain_scale_out] if config.chain_scale_head else [])
        # the eps output and every head's first convolution read the same features: one product
        self.first = _Layer.stacked([layer(network.out)] + [layer(h[0]) for h in heads])  # one stack per input grid
        self.head_lasts = [layer(h[2]) for h in heads]
        # the bits-back chain reads the progressive heads only at its bands' top rows (edge_rows)
        self.chain_first = self.edge_first = None
        if config.chain_scale_head:
            self.chain_first = _Layer.stacked([layer(network.out), layer(network.chain_scale_out[0])])
            self.edge_first = _Layer.stacked([layer(h[0]) for h in heads[:2]])
        self.silu_table = torch.from_numpy(_silu_table()).to(device)
        self.silu_offset = int(ACT_LIMIT * _ACT_SCALE)
        self.silu_tables16: dict[int, torch.Tensor] = {}  # the SiLU table as each input grid reads it
        self._films: dict[float, dict] = {}
        self.fourier_tables = [fourier_table(n, device) for n in config.fourier_exponents]
        self.fourier_flat = flat_tables(self.fourier_tables)
        half = config.time_embedding_dim // 2
        self.embedding_frequencies = exact.exp(-np.log(10000.0) * np.arange(half) / max(1, half - 1))

    @property
    def edge_heads(self) -> bool:
        """Whether ``edge_rows`` applies: with the chain's head, x_direct and the progressive
        log-scale are then given over the top rows only (outputs 1 and 2)."""
        return self.chain_first is not None

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU of x rounded to the activation grid, looked up: the result is on the grid (on
        the CPU in a compiled pass, compiled.py)."""
        if x.device.type == "cpu" and compiled_loops_agree():
            return compiled.silu(x, self.silu_table, self.silu_offset, ACT_LIMIT * _ACT_SCALE)
        return _silu_lookup(x, self.silu_table, self.silu_offset)

    def stem_input(self, z: torch.Tensor) -> torch.Tensor:
        """z and its Fourier features, unshuffled by the patch size, channels last (H/p, W/p,
        C): on the CPU in one compiled pass (compiled.py), the same numbers."""
        if z.device.type == "cpu" and compiled_loops_agree():
            return compiled.fourier(z, self.config.patch_size, *self.fourier_flat, ACT_LIMIT,
                                    _magic(FOURIER_FRACTION_BITS), FOURIER_LIMIT)
        return F.pixel_unshuffle(fourier_features(z, self.fourier_tables), self.config.patch_size)[0].permute(1, 2, 0)

    def embedding(self, gamma: float) -> torch.Tensor:
        """The time embedding after the embedding MLP, (1, dim), from portable sin and cos."""
        config = self.config
        position = (np.float64(gamma) - config.gamma_min) / (config.gamma_max - config.gamma_min) * 1000.0
        angles = position * self.embedding_frequencies
        emb = torch.from_numpy(np.concatenate([exact.sin(angles), exact.cos(angles)]))[None].to(self.device)
        emb = self.silu(self.embed[0].linear(emb))
        return self.embed[1].linear(emb)

    def grid(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """quantize(x), or quantize(x + y): on the CPU in one compiled pass (compiled.py)."""
        if x.device.type == "cpu" and compiled_loops_agree():
            return compiled.to_grid(x, y, ACT_LIMIT, _magic(ACT_FRACTION_BITS))
        return quantize(x if y is None else x + y)

    def norm_silu(self, norm: _Norm, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """SiLU of the norm of x (on the grid), with a FiLM (scale, shift) between them where
        given; on the CPU in one compiled pass with the same operations (compiled.py)."""
        if x.device.type == "cpu" and compiled_loops_agree():
            mul, add = (None, None) if film is None else (1 + film[0], film[1])
            return compiled.norm_silu(x, norm.weight, norm.bias, mul, add, self.silu_table, self.silu_offset,
                                        ACT_LIMIT * _ACT_SCALE)
        h = norm(x)
        if film is not None:
            h = h * (1 + film[0]) + film[1]
        return self.silu(h)

    def norm_silu_conv(self, norm: _Norm, x: torch.Tensor, layer: _Layer,
                       film: tuple[torch.Tensor, torch.Tensor] | None = None, on_grid: bool = True) -> torch.Tensor:
        """layer.conv(self.norm_silu(norm, x, film)), of x put on the grid first unless it is
        ``on_grid``. Where the layer is a compiled 3x3 integer convolution, that is one pass
        that gives the layer its 16-bit inputs directly (the lookup in a table of the SiLU's
        values as that layer reads them): the same integers, without the float64 between."""
        if not layer.reads_int16_same(x):
            return layer.conv(self.norm_silu(norm, x if on_grid else self.grid(x), film))
        if layer.exponent not in self.silu_tables16:  # the table's values as the layer reads its input
            self.silu_tables16[layer.exponent] = layer._input(self.silu_table.cpu()).to(torch.int16)
        mul, add = (None, None) if film is None else (1 + film[0], film[1])
        q = compiled.norm_silu_int16(x, norm.weight, norm.bias, mul, add, self.silu_tables16[layer.exponent],
                                     self.silu_offset, ACT_LIMIT * _ACT_SCALE, SAME_PADDING,
                                     None if on_grid else (ACT_LIMIT, _magic(ACT_FRACTION_BITS)))
        return layer.same_products(q, *x.shape[:2])

    def films(self, gamma: float) -> dict[_Block, tuple[torch.Tensor, torch.Tensor]]:
        """Every block's FiLM (scale, shift: (1, C) each, over (H, W, C)) at ``gamma``: the
        same for every pass at one step (a chain runs every band through the same steps), so
        kept for up to FILM_GAMMAS gammas."""
        key = float(gamma)
        films = self._films.get(key)
        if films is None:
            if len(self._films) >= FILM_GAMMAS:
                self._films.clear()
            emb = self.embedding(gamma)
            blocks = [b for level in self.down_blocks + self.up_blocks for b in level] + [self.mid]
            films = self._films[key] = {b: b.film.linear(emb).chunk(2, dim=1) for b in blocks}
        return films

    def block(self, block: _Block, x: torch.Tensor, film: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """A ResBlock on x (on the grid) with its FiLM; its output is on the grid."""
        h = self.norm_silu_conv(block.norm1, x, block.conv1)
        h = self.norm_silu_conv(block.norm2, h, block.conv2, film, on_grid=False)
        skip = x if block.skip is None else block.skip.conv(x)
        return self.grid(skip, h)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, gamma: float, edge_rows: int | None = None) -> tuple[torch.Tensor, ...]:
        """The network's outputs for one image z (1, C, H, W) float64 at a float ``gamma``:
        eps_hat, and with the progressive heads x_direct, the log-scales (as UNet.forward).
        ``edge_rows`` (a model with the chain's head): x_direct and the progressive log-scale
        over the top edge_rows rows only, the same values there (their convolutions read
        every row they read in the whole image), a fraction of the heads' work."""
        with compiled.pinned_setting():
            return self._forward(z, gamma, edge_rows)

    def _forward(self, z: torch.Tensor, gamma: float, edge_rows: int | None) -> tuple[torch.Tensor, ...]:
        config = self.config
        n, _, height, width = z.shape
        if n != 1:
            raise ValueError("the exact network runs one image at a time")
        if not bool(torch.isfinite(z).all()):  # (where the compiled loops and the torch code would part)
            raise ValueError("the exact network reads finite values only")
        stride = config.stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h), mode="replicate")
        films = self.films(gamma)
        # the stem reads z itself on the fine Fourier grid (its sums stay below 2^53: 2^24 x 2^15
        # x at most 9 * 4 * 5 * 4 channels), the features on the coarser one, a subset of it
        features = self.stem_input(z)
        h = self.grid(self.stem.conv(features))  # channels-last (H, W, C) from here on
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = self.block(block, h, films[block])
            skips.append(h)
            if level < len(self.downsamplers):
                h = self.grid(self.downsamplers[level].conv(h))
        h = self.block(self.mid, h, films[self.mid])
        for index, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=-1)
            for block in blocks:
                h = self.block(block, h, films[block])
            if index < len(self.upsamplers):
                h = self.grid(self.upsamplers[index].conv(h))
        h = self.norm_silu(self.out_norm, h)

        def crop(out: torch.Tensor, rows: int = height) -> torch.Tensor:
            return F.pixel_shuffle(out.permute(2, 0, 1)[None], config.patch_size)[:, :, :rows, :width]

        def first(stacks: list[_Layer], x: torch.Tensor) -> list[torch.Tensor]:
            return [part for stack in stacks for part in stack.conv(x).split(stack.widths, dim=-1)]

        if edge_rows is None or not self.edge_heads:
            eps, *hidden = first(self.first, h)
            return tuple([crop(eps)] + [crop(last.conv(self.silu(x))) for last, x in zip(self.head_lasts, hidden)])
        eps, chain_hidden = first(self.chain_first, h)
        chain_scale = crop(self.head_lasts[2].conv(self.silu(chain_hidden)))
        rows = -(-edge_rows // config.patch_size)  # feature rows of the top edge_rows pixel rows
        # 3x3 'same' convolutions: the last one's rows < rows read the first one's rows <= rows,
        # which read the features' rows <= rows + 1 (and the zeros above row 0, as everywhere)
        if not rows:
            nothing = h.new_zeros(1, config.image_channels, 0, width)
            return crop(eps), nothing, nothing, chain_scale
        edge = first(self.edge_first, h[: rows + 2])
        x_direct, log_scale = (crop(last.conv(self.silu(x[: rows + 1]))[:rows], min(edge_rows, height))
                               for last, x in zip(self.head_lasts, edge))
        return crop(eps), x_direct, log_scale, chain_scale
