"""Self-describing model checkpoints: config + weights + a content hash.

A checkpoint is a ``torch.save`` dict of plain types and tensors only, so it loads with
``weights_only=True`` (no pickled code runs). The hash covers the config and every
weight; it identifies the model inside every bitstream and detects damaged files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from ..errors import CheckpointError
from .vdm import DiffusionModel

CHECKPOINT_FORMAT = "diffcodec-model"
CHECKPOINT_VERSION = 1


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
    """torch.save to a temporary file, then rename: a crash never leaves half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


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
    except (pickle.UnpicklingError, zipfile.BadZipFile, EOFError, RuntimeError, ValueError,
            AttributeError, TypeError, KeyError, IndexError, OSError) as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{path} is not a readable {what} (damaged or not a diffcodec file): "
                              f"{first_line[:200]}") from None


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
    if not isinstance(stored_config, dict):
        raise CheckpointError(f"{path} holds no model configuration")
    config = ModelConfig.from_dict(stored_config)
    state = data.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} holds no weights")
    if weights_hash(stored_config, state) != data.get("hash"):  # the config as stored
        raise CheckpointError(f"{path} is damaged: its weights do not match the stored hash")
    model = DiffusionModel(config)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{path}: weights do not fit the architecture in its config") from None
    model.model_hash = data["hash"]
    try:
        model.metadata = json.loads(data.get("metadata") or "{}")
    except json.JSONDecodeError:
        model.metadata = {}
    return model.to(device).eval()
