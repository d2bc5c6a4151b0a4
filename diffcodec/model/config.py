"""Model configuration: everything needed to rebuild a network from its weights."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError

NOISE_SCHEDULES = ("fixed_linear", "learned")
# field -> the default a checkpoint without it means
_LATER_FIELDS = {"chain_scale_head": False, "weight_bits": 0, "extra_blocks": ()}


@dataclass(frozen=True)
class ModelConfig:
    """Architecture, noise schedule and data scaling of a diffusion model.

    Stored inside every checkpoint so that a checkpoint describes itself.
    """

    name: str = "default"
    image_channels: int = 3
    # U-Net width at each resolution level; level i works at 1/2**i of the input size.
    level_channels: tuple[int, ...] = (32, 64, 128, 128)
    blocks_per_level: int = 1
    # The U-Net runs on patch_size x patch_size pixel patches folded into channels
    # (pixel unshuffle): much cheaper per pixel, still sees every pixel exactly.
    patch_size: int = 2
    fourier_exponents: tuple[int, ...] = (7, 8)
    time_embedding_dim: int = 128
    schedule: str = "learned"
    gamma_min: float = -13.3
    gamma_max: float = 5.0
    # Heads for the progressive coder on the same trunk: a direct image estimate (well
    # conditioned at high noise, where eps-prediction is not) and the log-scale of its error.
    progressive_heads: bool = False
    # A log-scale head for the error of the eps-based estimate, trained on the lossless
    # chain's step KL (train/losses.py chain_loss): the lossless coder's reverse variance.
    chain_scale_head: bool = False
    # 0: a float network (the exact network rounds its weights to 16 bits); 8: trained
    # quantization-aware for 8-bit weights and 16-bit inputs, whose integer products the exact
    # network sums exactly (network.QuantizedConv2d, exact_network, compiled).
    weight_bits: int = 0
    # Per level, this many more ResBlock(width, width) after the level's down-path blocks,
    # each starting as the identity: how a trained model grows in depth (train --init with
    # --extra-blocks keeps its function). () or all zeros: none (stored as ()).
    extra_blocks: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.schedule not in NOISE_SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose from {NOISE_SCHEDULES}")
        if not self.gamma_min < self.gamma_max:
            raise ValueError("gamma_min must be smaller than gamma_max")
        if not self.level_channels or min(self.level_channels) <= 0:
            raise ValueError("level_channels must be positive widths")
        if self.blocks_per_level < 1 or self.image_channels < 1 or self.patch_size < 1:
            raise ValueError("blocks_per_level, image_channels and patch_size must be at least 1")
        if self.weight_bits not in (0, 8):
            raise ValueError("weight_bits must be 0 (float) or 8")
        if self.chain_scale_head and not self.progressive_heads:
            raise ValueError("chain_scale_head needs progressive_heads")
        extra = tuple(self.extra_blocks)
        if extra and len(extra) != len(self.level_channels):
            raise ValueError(f"extra_blocks needs one count per level ({len(self.level_channels)}), got {len(extra)}")
        if not all(type(n) is int and 0 <= n <= 16 for n in extra) or len(extra) > 8:
            raise ValueError("extra_blocks must be counts from 0 to 16 (at most 8 levels), as a checkpoint stores them")
        object.__setattr__(self, "extra_blocks", extra if any(extra) else ())  # all zeros: the model without

    @property
    def stride(self) -> int:
        """Input sides are padded to a multiple of this."""
        return self.patch_size * 2 ** (len(self.level_channels) - 1)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able fields; fields added later are left out at their default, so the
        hash (and every file) of a model that does not use them is unchanged."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
                if not (k in _LATER_FIELDS and v == _LATER_FIELDS[k])}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name: f for f in dataclasses.fields(cls)}
        data = dict(data)
        if data.pop("scale_head", False):  # early development checkpoints; False changed nothing
            raise CheckpointError("checkpoint uses an early scale-head layout that is no longer supported")
        unknown = set(data) - set(known)
        if unknown:
            raise CheckpointError(f"checkpoint config has unknown fields {sorted(unknown)} (newer diffcodec?)")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"checkpoint config is invalid: {exc}") from None

