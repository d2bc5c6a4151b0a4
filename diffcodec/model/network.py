"""The denoising network: a fully convolutional U-Net conditioned on gamma_t.

Design choices, each for the codec's sake:

* Fourier features sin/cos(2^n pi z) of the input expose pixel-level detail (VDM).
* Normalisation is per pixel over channels, never over space, so the output at a pixel
  depends only on a bounded neighbourhood: the network behaves the same on a 64x64
  training crop, a full image, or a tile of one.
* Inputs of any size are padded (edge replication) to a multiple of the U-Net stride and
  the output is cropped back.
* With ``weight_bits`` set, every convolution after the stem trains for the exact network's
  integer arithmetic (quantization-aware, straight-through): the weights it will have and the
  inputs it will read (:class:`QuantizedConv2d`).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from .config import ModelConfig


class FourierFeatures(nn.Module):
    """Append sin(2^n pi z) and cos(2^n pi z) for each configured exponent n."""

    def __init__(self, exponents: tuple[int, ...]) -> None:
        super().__init__()
        self.register_buffer(
            "frequencies", torch.tensor([math.pi * 2.0**n for n in exponents]), persistent=False
        )

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if self.frequencies.numel() == 0:
            return z
        n, c, h, w = z.shape
        phases = z.unsqueeze(2) * self.frequencies.view(1, 1, -1, 1, 1)
        features = torch.cat([phases.sin(), phases.cos()], dim=2).reshape(n, -1, h, w)
        return torch.cat([z, features], dim=1)


class ChannelNorm(nn.Module):
    """Layer norm over the channels of each pixel (no statistics across space)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # layer_norm over a channels-last view: each pixel's statistics are reduced within
        # one row, so the result does not depend on the number of CPU threads (a mean over
        # dim 1 does), which the coder needs: encoder and decoder must agree bit for bit.
        y = F.layer_norm(x.permute(0, 2, 3, 1), (x.shape[1],), self.weight, self.bias, eps=1e-6)
        return y.permute(0, 3, 1, 2)


# Quantization-aware layers read their inputs as INPUT_BITS-bit integers times a power of two.
INPUT_BITS = 16
INPUT_LIMIT = 2 ** (INPUT_BITS - 1) - 1
UNCALIBRATED = 1 << 10  # an input_exponent no calibrated layer has: such a layer reads its input as it is
EXPONENT_RANGE = 100  # a calibrated input grid is 2^e with |e| <= this


def _straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """rounded in the forward pass, the identity's gradient in the backward pass."""
    return x + (rounded - x).detach()


def weight_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Each output channel's step: its largest |weight| maps to 2^(bits-1) - 1."""
    peak = weight.detach().reshape(weight.shape[0], -1).abs().amax(dim=1)
    steps = torch.where(peak > 0, peak, torch.ones_like(peak)) / (2 ** (bits - 1) - 1)
    return steps.view(-1, *([1] * (weight.ndim - 1)))


class QuantizedConv2d(nn.Conv2d):
    """A convolution trained for the exact network's arithmetic: weights rounded to ``bits``
    bits per output channel, inputs to INPUT_BITS-bit integers on a fixed power-of-two grid
    (2^input_exponent, fixed once from training inputs by :func:`calibrate_inputs`), both with
    straight-through gradients. The exact network computes the same layer in integers."""

    def __init__(self, *args, weight_bits: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.weight_bits = weight_bits
        self.register_buffer("input_exponent", torch.tensor(UNCALIBRATED, dtype=torch.int64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):  # 16-bit inputs do not fit bf16
            x = x.float()
            step = weight_scales(self.weight, self.weight_bits)
            weight = _straight_through(self.weight, torch.round(self.weight / step) * step)
            exponent = int(self.input_exponent)
            if exponent != UNCALIBRATED:
                grid = 2.0**exponent
                x = _straight_through(x, torch.clamp(torch.round(x / grid), -INPUT_LIMIT, INPUT_LIMIT) * grid)
            return self._conv_forward(x, weight, self.bias)


@torch.no_grad()
def calibrate_inputs(network: nn.Module, run: Callable[[], None]) -> None:
    """Fix every uncalibrated quantized layer's input grid: the finest power of two whose
    INPUT_BITS-bit range holds the largest input the layer saw while ``run`` ran the network."""
    layers = [m for m in network.modules() if isinstance(m, QuantizedConv2d) and int(m.input_exponent) == UNCALIBRATED]
    peaks = {m: 0.0 for m in layers}

    def record(module, inputs):
        peaks[module] = max(peaks[module], float(inputs[0].detach().abs().max()))

    hooks = [m.register_forward_pre_hook(record) for m in layers]
    try:
        run()
    finally:
        for hook in hooks:
            hook.remove()
    for module, peak in peaks.items():
        if peak > 0:  # a layer that did not run (or saw only zeros) waits for a later calibration
            exponent = math.ceil(math.log2(min(peak, 2.0**EXPONENT_RANGE) / INPUT_LIMIT))
            module.input_exponent.fill_(max(-EXPONENT_RANGE, min(EXPONENT_RANGE, exponent)))


def gamma_embedding(gamma: torch.Tensor, dim: int, gamma_min: float, gamma_max: float) -> torch.Tensor:
    """Sinusoidal embedding of gamma rescaled to [0, 1000], as VDM embeds time."""
    position = (gamma - gamma_min) / (gamma_max - gamma_min) * 1000.0
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=gamma.device) / max(1, half - 1))
    angles = position.unsqueeze(1) * freqs.unsqueeze(0)
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class ResBlock(nn.Module):
    """Norm -> SiLU -> conv, FiLM from the time embedding, norm -> SiLU -> conv, + skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, conv: Callable[..., nn.Conv2d] = nn.Conv2d) -> None:
        super().__init__()
        self.norm1 = ChannelNorm(in_ch)
        self.conv1 = conv(in_ch, out_ch, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = ChannelNorm(out_ch)
        self.conv2 = conv(out_ch, out_ch, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = conv(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


# Initial log of the scale head's output (the expected |x - x_hat| in data units).
SCALE_HEAD_INIT = math.log(0.05)


def _head(width: int, out_ch: int, bias: float, conv: Callable[..., nn.Conv2d]) -> nn.Sequential:
    """Two conv layers on the trunk's last features; starts out predicting ``bias``."""
    last = conv(width, out_ch, 3, padding=1)
    nn.init.zeros_(last.weight)
    nn.init.constant_(last.bias, bias)
    return nn.Sequential(conv(width, width, 3, padding=1), nn.SiLU(), last)


def extra_block_prefixes(base: ModelConfig, grown: ModelConfig) -> list[str]:
    """The state-dict prefixes (within the network) of the extra blocks ``grown`` has beyond
    ``base``'s: the only weights a model grown in depth lacks from the one it grows from."""
    have = base.extra_blocks or (0,) * len(base.level_channels)
    want = grown.extra_blocks or (0,) * len(grown.level_channels)
    return [f"down_blocks.{level}.{grown.blocks_per_level + k}."
            for level in range(len(want)) for k in range(have[level] if level < len(have) else 0, want[level])]


class UNet(nn.Module):
    """eps-prediction U-Net; optionally with the progressive heads.

    ``forward(z, gamma)`` returns eps_hat, or with ``progressive_heads`` the triple
    (eps_hat, x_direct, log_scale): a direct estimate of the image and the log of the
    expected error of the progressive coder's denoised estimate, in data units.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c = config.image_channels
        widths = config.level_channels
        emb_dim = config.time_embedding_dim
        # every convolution after the stem (which reads the Fourier features on a finer grid)
        conv = partial(QuantizedConv2d, weight_bits=config.weight_bits) if config.weight_bits else nn.Conv2d
        self.fourier = FourierFeatures(config.fourier_exponents)
        in_ch = c * (1 + 2 * len(config.fourier_exponents)) * config.patch_size**2
        self.embed = nn.Sequential(
            nn.Linear(emb_dim, 4 * emb_dim), nn.SiLU(), nn.Linear(4 * emb_dim, emb_dim)
        )
        self.stem = nn.Conv2d(in_ch, widths[0], 3, padding=1)

        self.down_blocks = nn.ModuleList()
        self.downsamplers = nn.ModuleList()
        prev = widths[0]
        for level, width in enumerate(widths):
            blocks = nn.ModuleList()
            for _ in range(config.blocks_per_level):
                blocks.append(ResBlock(prev, width, emb_dim, conv))
                prev = width
            # extra blocks (grown depth) after these, in the same list: the identity at first
            # (ResBlock's conv2 starts at zero, its skip is the identity), so a model grown from
            # a trained one computes what it did; features() and the exact network run them as any
            for _ in range(config.extra_blocks[level] if config.extra_blocks else 0):
                blocks.append(ResBlock(width, width, emb_dim, conv))
            self.down_blocks.append(blocks)
            if level < len(widths) - 1:
                self.downsamplers.append(conv(width, width, 3, stride=2, padding=1))

        self.mid = ResBlock(prev, prev, emb_dim, conv)

        self.up_blocks = nn.ModuleList()
        self.upsamplers = nn.ModuleList()
        for level in reversed(range(len(widths))):
            width = widths[level]
            blocks = nn.ModuleList([ResBlock(prev + width, width, emb_dim, conv)])
            for _ in range(config.blocks_per_level - 1):
                blocks.append(ResBlock(width, width, emb_dim, conv))
            prev = width
            self.up_blocks.append(blocks)
            if level > 0:
                self.upsamplers.append(conv(width, widths[level - 1], 3, padding=1))
                prev = widths[level - 1]

        self.out_norm = ChannelNorm(prev)
        out_ch = c * config.patch_size**2
        self.out = conv(prev, out_ch, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        if config.progressive_heads:
            # Separate heads, so a model trained without them can be extended and the heads
            # trained on their own (the eps-prediction, the lossless model, stays as it was).
            self.image_out = _head(prev, out_ch, 0.0, conv)
            self.scale_out = _head(prev, out_ch, SCALE_HEAD_INIT, conv)
        if config.chain_scale_head:
            self.chain_scale_out = _head(prev, out_ch, SCALE_HEAD_INIT, conv)

    def features(self, z: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
        """The trunk: last feature map (padded, at patch resolution) both heads read."""
        n, _, height, width = z.shape
        stride = self.config.stride
        pad_h, pad_w = (-height) % stride, (-width) % stride
        if pad_h or pad_w:
            z = F.pad(z, (0, pad_w, 0, pad_h), mode="replicate")
        emb = gamma_embedding(
            gamma.expand(n).to(z.dtype), self.config.time_embedding_dim,
            self.config.gamma_min, self.config.gamma_max,
        )
        emb = self.embed(emb)

        h = self.stem(F.pixel_unshuffle(self.fourier(z), self.config.patch_size))
        skips = []
        for level, blocks in enumerate(self.down_blocks):
            for block in blocks:
                h = block(h, emb)
            skips.append(h)
            if level < len(self.downsamplers):
                h = self.downsamplers[level](h)
        h = self.mid(h, emb)
        for index, blocks in enumerate(self.up_blocks):
            h = torch.cat([h, skips.pop()], dim=1)
            for block in blocks:
                h = block(h, emb)
            if index < len(self.upsamplers):
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
                h = self.upsamplers[index](h)
        return F.silu(self.out_norm(h))

    def heads(self, h: torch.Tensor, size: tuple[int, int]):
        """eps_hat (and x_direct, log_scale with the progressive heads, and the chain's
        log-scale with its head), cropped to ``size``."""
        height, width = size
        patch = self.config.patch_size

        def crop(out: torch.Tensor) -> torch.Tensor:
            return F.pixel_shuffle(out, patch)[:, :, :height, :width]

        eps = crop(self.out(h))
        if not self.config.progressive_heads:
            return eps
        heads = [self.image_out, self.scale_out] + ([self.chain_scale_out] if self.config.chain_scale_head else [])
        return (eps, *(crop(head(h)) for head in heads))

    def forward(self, z: torch.Tensor, gamma: torch.Tensor):
        return self.heads(self.features(z, gamma), z.shape[-2:])
