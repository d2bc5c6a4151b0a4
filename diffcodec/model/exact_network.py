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
* ChannelNorm sums grid values and their squares (exact), then divides and takes one square
  root (correctly rounded IEEE operations, elementwise, in a fixed order).
* SiLU is a table on the activation grid; the Fourier features are tables indexed by the
  input on a 2^-FOURIER_FRACTION_BITS grid; the gamma embedding uses the portable sin and
  cos of :mod:`exact`. Every table is built with :mod:`exact`, so it is the same everywhere.

The float network stays the one that trains; this one is derived from its weights when a
model is loaded (no extra state: every checkpoint is portable). At 16-bit weights and 2^-12
activations it costs about 0.1 % in NELBO (docs); it runs in float64, several times
slower than the float32 network.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

from . import exact
from .network import UNet

WEIGHT_BITS = 16
ACT_FRACTION_BITS = 12
ACT_LIMIT = 256.0  # |activation| <= 2^8: with 16-bit weights, sums of up to 2^13 products stay below 2^53
FOURIER_FRACTION_BITS = 16
FOURIER_LIMIT = 8.0
_ACT_SCALE = float(2**ACT_FRACTION_BITS)


def quantize(x: torch.Tensor, fraction_bits: int = ACT_FRACTION_BITS) -> torch.Tensor:
    """Onto the grid 2^-fraction_bits within +-ACT_LIMIT, rounding half to even: adding and
    subtracting 1.5 * 2^(52 - fraction_bits) rounds to that grid in two IEEE additions."""
    magic = 1.5 * 2.0 ** (52 - fraction_bits)
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


def _silu_table() -> np.ndarray:
    """SiLU at every point of the activation grid (x sigmoid(x), rounded to the grid)."""
    x = np.arange(-ACT_LIMIT * _ACT_SCALE, ACT_LIMIT * _ACT_SCALE + 1) / _ACT_SCALE
    return np.rint(x * exact.sigmoid(x) * _ACT_SCALE) / _ACT_SCALE


class _Layer:
    """A convolution or linear layer's rounded weights (float64) and bias."""

    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.weight = round_weight(module.weight).to(device)
        self.bias = module.bias.detach().to(torch.float64).to(device)
        self.stride = getattr(module, "stride", (1,))[0]
        self.padding = getattr(module, "padding", (0,))[0]
        self.taps = None  # a 3x3 stride-1 'same' convolution's weights per tap, (9, out, in)
        if self.weight.ndim == 4 and self.weight.shape[-2:] == (3, 3) and self.stride == 1 and self.padding == 1:
            self.taps = self.weight.permute(2, 3, 0, 1).reshape(9, self.weight.shape[0], -1).contiguous()

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution of x, which must lie on an activation grid (every caller's input
        does by construction: tests/test_portability.py checks it)."""
        if self.taps is not None and x.shape[0] == 1:
            out = self._shifted_products(x)
        else:  # cuDNN may pick FFT or Winograd algorithms, which are not exact; the native ones are
            with torch.backends.cudnn.flags(enabled=False):
                out = F.conv2d(x, self.weight, stride=self.stride, padding=self.padding)
        return out + self.bias.view(1, -1, 1, 1)

    def _shifted_products(self, x: torch.Tensor) -> torch.Tensor:
        """A 3x3 'same' convolution as nine matrix products with shifted views of x (float64
        convolutions are slow; float64 GEMMs less so): exact for the same reason."""
        _, channels, height, width = x.shape
        padded = F.pad(x[0], (1, 1, 1, 1))
        out = None
        for k, tap in enumerate(self.taps):
            dy, dx = divmod(k, 3)
            part = tap @ padded[:, dy : dy + height, dx : dx + width].reshape(channels, -1)
            out = part if out is None else out + part
        return out.view(1, -1, height, width)

    def linear(self, x: torch.Tensor) -> torch.Tensor:
        return quantize(x) @ self.weight.T + self.bias


class _Norm:
    def __init__(self, module: torch.nn.Module, device: torch.device) -> None:
        self.weight = module.weight.detach().to(torch.float64).to(device).view(1, -1, 1, 1)
        self.bias = module.bias.detach().to(torch.float64).to(device).view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Norm of x, which must lie on the activation grid (so its sums are exact)."""
        channels = x.shape[1]
        mean = x.sum(dim=1, keepdim=True) / channels  # exact sums of grid values
        variance = (x * x).sum(dim=1, keepdim=True) / channels - mean * mean
        y = (x - mean) / torch.sqrt(torch.clamp(variance, min=0.0) + 1e-6)
        return y * self.weight + self.bias


class _Block:
    def __init__(self, block, device) -> None:
        self.norm1, self.norm2 = _Norm(block.norm1, device), _Norm(block.norm2, device)
        self.conv1, self.conv2 = _Layer(block.conv1, device), _Layer(block.conv2, device)
        self.film = _Layer(block.film, device)
        self.skip = None if isinstance(block.skip, torch.nn.Identity) else _Layer(block.skip, device)


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
        self.upsamplers = [layer(m) for m in network.upsamplers]
        self.out_norm = _Norm(network.out_norm, device)
        self.out = layer(network.out)
        self.extra_heads = []
        if config.progressive_heads:
            heads = [network.image_out, network.scale_out] + ([network.chain_scale_out] if config.chain_scale_head else [])
            self.extra_heads = [(layer(h[0]), layer(h[2])) for h in heads]
        self.silu_table = torch.from_numpy(_silu_table()).to(device)
        self.silu_offset = int(ACT_LIMIT * _ACT_SCALE)
        self.fourier_tables = [self._fourier_table(n) for n in config.fourier_exponents]
        half = config.time_embedding_dim // 2
        self.embedding_frequencies = exact.exp(-np.log(10000.0) * np.arange(half) / max(1, half - 1))

    def _fourier_table(self, n: int) -> tuple[int, torch.Tensor, torch.Tensor]:
        """sin and cos of 2^n pi z for z = j 2^-FOURIER_FRACTION_BITS over one period, on the grid."""
        period = 1 << max(0, FOURIER_FRACTION_BITS + 1 - n)
        phase = exact.PI * np.ldexp(np.arange(period, dtype=np.float64), n - FOURIER_FRACTION_BITS)
        grid = lambda v: torch.from_numpy(np.rint(v * _ACT_SCALE) / _ACT_SCALE).to(self.device)  # noqa: E731
        return period, grid(exact.sin(phase)), grid(exact.cos(phase))

    def silu(self, x: torch.Tensor) -> torch.Tensor:
        """SiLU of x rounded to the activation grid, looked up: the result is on the grid."""
        index = (quantize(x) * _ACT_SCALE).long() + self.silu_offset  # exact: integers below 2^21
        return self.silu_table[index]

    def fourier(self, z: torch.Tensor) -> torch.Tensor:
        if not self.fourier_tables:
            return quantize(z, FOURIER_FRACTION_BITS)
        n, c, h, w = z.shape
        k = torch.round(torch.clamp(z, -FOURIER_LIMIT, FOURIER_LIMIT) * 2.0**FOURIER_FRACTION_BITS).long()
        sines, cosines = [], []
        for period, sin_table, cos_table in self.fourier_tables:
            index = torch.remainder(k, period)
            sines.append(sin_table[index])
            cosines.append(cos_table[index])
        features = torch.stack(sines + cosines, dim=2).reshape(n, -1, h, w)
        return torch.cat([quantize(z, FOURIER_FRACTION_BITS), features], dim=1)

    def embedding(self, gamma: float) -> torch.Tensor:
        """The time embedding after the embedding MLP, (1, dim), from portable sin and cos."""
        config = self.config
        position = (np.float64(gamma) - config.gamma_min) / (config.gamma_max - config.gamma_min) * 1000.0
        angles = position * self.embedding_frequencies
        emb = torch.from_numpy(np.concatenate([exact.sin(angles), exact.cos(angles)]))[None].to(self.device)
        emb = self.silu(self.embed[0].linear(emb))
        return self.embed[1].linear(emb)

    def block(self, block: _Block, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """A ResBlock on x (on the grid); its output is on the grid."""
        h = block.conv1.conv(self.silu(block.norm1(x)))
        scale, shift = block.film.linear(emb)[:, :, None, None].chunk(2, dim=1)
        h = block.norm2(quantize(h)) * (1 + scale) + shift
        h = block.conv2.conv(self.silu(h))
        skip = x if block.skip is None else block.skip.conv(x)
        return quantize(skip + h)

    @torch.no_grad()
    def __call__(self, z: torch.Tensor, gamma: float) -> tuple[torch.Tensor, ...]:
        """The network's outputs for one image z (1, C, H, W) float64 at a float ``gamma``:
        eps_hat, and with the progressive heads x_direct, the log-scales (as UNet.forward)."""
        config = self.config
        n, _, height, width = z.shape
        stride = config.stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h), mode="replicate")
        emb = self.embedding(gamma)
        # the stem reads z itself on the fine Fourier grid (its sums stay below 2^53: 2^19 x 2^15
        # x at most 9 * 4 * 5 * 4 channels), the features on the coarser one, a subset of it
        h = quantize(self.stem.conv(F.pixel_unshuffle(self.fourier(z), config.patch_size)))
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = self.block(block, h, emb)
            skips.append(h)
            if level < len(self.downsamplers):
                h = quantize(self.downsamplers[level].conv(h))
        h = self.block(self.mid, h, emb)
        for index, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = self.block(block, h, emb)
            if index < len(self.upsamplers):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = quantize(self.upsamplers[index].conv(h))
        h = self.silu(self.out_norm(h))

        def crop(out: torch.Tensor) -> torch.Tensor:
            return F.pixel_shuffle(out, config.patch_size)[:, :, :height, :width]

        outputs = [crop(self.out.conv(h))]
        for first, last in self.extra_heads:
            outputs.append(crop(last.conv(self.silu(first.conv(h)))))
        return tuple(outputs)
