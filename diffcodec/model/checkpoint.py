"""Self-describing model checkpoints: config + weights + a content hash.

A checkpoint is a ``torch.save`` dict of plain types and tensors only, so it loads with
``weights_only=True`` (no pickled code runs). The hash covers the config and every
weight; it identifies the model inside every bitstream and detects damaged files.

Loading trusts nothing in the file: the config's types and ranges are checked, the
network it describes is built on the meta device (no memory) and every stored tensor's
name, type and shape compared with it before the real model is allocated; only
CheckpointError escapes.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .network import EXPONENT_RANGE, UNCALIBRATED
from ..errors import CheckpointError
from ..files import write_atomic
from .time_grid import check_time_grids
from .vdm import DiffusionModel

CHECKPOINT_FORMAT = "diffcodec-model"
CHECKPOINT_VERSION = 1
MAX_PARAMETERS = 1 << 30

# Each config field: its JSON type, and a check of its value (ranges generous, types strict).
_INT = lambda low, high: (int, lambda v: low <= v <= high)  # noqa: E731
_CONFIG_FIELDS = {
    "name": (str, lambda v: 0 < len(v.encode()) <= 255),
    "image_channels": _INT(1, 4),
    "level_channels": (list, lambda v: 1 <= len(v) <= 8 and all(type(c) is int and 1 <= c <= 4096 for c in v)),
    "blocks_per_level": _INT(1, 16),
    "patch_size": _INT(1, 16),
    "fourier_exponents": (list, lambda v: len(v) <= 16 and all(type(c) is int and 0 <= c <= 32 for c in v)),
    "time_embedding_dim": _INT(1, 4096),
    "schedule": (str, lambda v: True),
    "gamma_min": (float, math.isfinite),
    "gamma_max": (float, math.isfinite),
    "progressive_heads": (bool, lambda v: True),
    "chain_scale_head": (bool, lambda v: True),
    "extra_blocks": (list, lambda v: len(v) <= 8 and all(type(c) is int and 0 <= c <= 16 for c in v)),
}


def _check_config(path, stored: dict) -> None:
    """Types and ranges of a stored config, before anything is built from it."""
    for key, value in stored.items():
        if key not in _CONFIG_FIELDS:
            continue  # ModelConfig.from_dict names unknown fields
        kind, valid = _CONFIG_FIELDS[key]
        typed = isinstance(value, (int, float)) and not isinstance(value, bool) if kind is float else type(value) is kind
        if not typed or not valid(value):
            raise CheckpointError(f"{path} is damaged: invalid config field {key}={str(value)[:60]!r}")


def _check_weights(path, config: ModelConfig, state: Any) -> None:
    """The stored tensors against the network the config describes (built on the meta device,
    so a config with absurd widths costs no memory): names, types and shapes."""
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise CheckpointError(f"{path} is damaged: its weights are not a table of tensors")
    try:
        with torch.device("meta"):
            expected = DiffusionModel(config).state_dict()
    except (ValueError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: its config describes no valid network ({exc})") from None
    if sum(t.numel() for t in expected.values()) > MAX_PARAMETERS:
        raise CheckpointError(f"{path}: its config describes a network too large to load")
    if set(state) != set(expected):
        raise CheckpointError(f"{path}: weights do not fit the architecture in its config")
    for name, tensor in state.items():
        want = expected[name]
        if tensor.shape != want.shape or tensor.dtype != want.dtype or tensor.layout != torch.strided:
            raise CheckpointError(f"{path}: weights do not fit the architecture in its config ({name})")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(f"{path} is damaged: {name} holds a value that is not a finite number")
        if name.endswith(".input_exponent") and not (abs(int(tensor)) <= EXPONENT_RANGE or int(tensor) == UNCALIBRATED):
            raise CheckpointError(f"{path} is damaged: {name} is out of range")


def weights_hash(config: ModelConfig | dict, state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the config (as canonical JSON) and every tensor's name, dtype, shape, bytes."""
    config_dict = config.to_dict() if isinstance(config, ModelConfig) else config
    digest = hashlib.sha256(json.dumps(config_dict, sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def model_hash(model: DiffusionModel) -> str:
    return weights_hash(model.config, model.state_dict())


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save through files.write_atomic: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda out: torch.save(obj, out))


def save_model(model: DiffusionModel, path: str | Path, metadata: dict[str, Any] | None = None) -> str:
    """Write ``model`` as a checkpoint; returns its hash. ``metadata``: plain JSON-able info."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    digest = weights_hash(model.config, state)
    atomic_save(
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "config": model.config.to_dict(),
            "state_dict": state,
            "hash": digest,
            "metadata": json.dumps(metadata or {}),
        },
        Path(path),
    )
    return digest


def read_torch_file(path: str | Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with every failure turned into a CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - torch.load raises many types for bad files
        # (torch's own message suggests weights_only=False, which would run the file's code)
        from ..format.container import MAGIC

        with open(path, "rb") as f:
            start = f.read(len(MAGIC))
        if start == MAGIC:
            raise CheckpointError(f"{path} is a .dfc image file, not a {what}") from None
        raise CheckpointError(f"{path} is not a readable {what}: damaged, or not a diffcodec "
                              "checkpoint") from None


def update_metadata(path: str | Path, updates: dict[str, Any], out: str | Path | None = None) -> None:
    """Add measured facts (BPD, timings, data) to a checkpoint's metadata; weights and hash
    are untouched (the hash covers config and weights only)."""
    model = load_model(path)
    save_model(model, out or path, {**model.metadata, **updates})


def load_model(path: str | Path, device: str | torch.device = "cpu") -> DiffusionModel:
    """Load a checkpoint, verify its hash, and return the model in eval mode."""
    data = read_torch_file(path, "model checkpoint")
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not a diffcodec model checkpoint")
    if data.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')}, "
                              f"this diffcodec reads version {CHECKPOINT_VERSION}")
    stored_config = data.get("config")
    if not isinstance(stored_config, dict) or not all(isinstance(k, str) for k in stored_config):
        raise CheckpointError(f"{path} holds no model configuration")
    _check_config(path, stored_config)
    config = ModelConfig.from_dict(stored_config)
    state = data.get("state_dict")
    _check_weights(path, config, state)
    if not isinstance(data.get("hash"), str) or weights_hash(stored_config, state) != data["hash"]:
        raise CheckpointError(f"{path} is damaged: its weights do not match the stored hash")
    metadata = data.get("metadata") or "{}"
    try:
        metadata = json.loads(metadata) if isinstance(metadata, str) else None
    except json.JSONDecodeError:
        metadata = None
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is damaged: its metadata is not a JSON object")
    try:
        check_time_grids(metadata)
    except ValueError as exc:
        raise CheckpointError(f"{path} is damaged: invalid metadata ({exc})") from None
    model = DiffusionModel(config)
    try:
        model.load_state_dict(state)
        model = model.to(device)
    except (RuntimeError, MemoryError) as exc:
        raise CheckpointError(f"{path}: cannot load the weights ({type(exc).__name__})") from None
    model.model_hash = data["hash"]
    model.metadata = metadata
    return model.eval()
