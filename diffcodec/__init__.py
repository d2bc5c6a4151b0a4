"""diffcodec: a trained diffusion model as a progressive and lossless image codec.

    import diffcodec
    data = diffcodec.encode(image)            # PIL image, uint8 array (H, W[, C]) or tensor
    pixels = diffcodec.decode(data)           # exact uint8 array
    preview = diffcodec.decode(data[:2000])   # any prefix decodes (with a PrefixWarning)
    codec = diffcodec.Codec("default")        # keep a loaded model for many images
"""

from __future__ import annotations

import os as _os
import sys as _sys

if "torch" not in _sys.modules:
    # OpenMP threads spin between parallel regions unless told otherwise. The exact network runs
    # hundreds of short regions per pass, and beside any other busy process a spinning thread
    # holds a core its partner needs: a pass then takes up to 100x its idle time. libgomp reads
    # this once, when torch loads it (docs/portability.md, "Threads").
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .codec import DEFAULT_LOSSLESS_STEPS, DEFAULT_STEPS, Codec, DecodeLimits, Decoded, PrefixWarning
from .errors import CheckpointError, DiffcodecError, ImageReadError, LimitError
from .format import ContainerError, DfcFile, Mode, describe, parse_file
from .model import DiffusionModel, ModelConfig, load_model, registered_or_default, save_model

__version__ = "0.1.0"

__all__ = [
    "Codec", "Decoded", "DecodeLimits", "PrefixWarning", "DiffusionModel", "ModelConfig", "Mode", "DfcFile",
    "DiffcodecError", "CheckpointError", "ContainerError", "ImageReadError", "LimitError",
    "encode", "decode", "decode_result", "info", "truncate", "parse_file", "load_model", "save_model",
    "DEFAULT_STEPS", "DEFAULT_LOSSLESS_STEPS",
]


def encode(image, steps: int | None = None, model="default", seed: int = 0, mode: str = "progressive",
           bpp: float | None = None, max_bytes: int | None = None) -> bytes:
    """Encode an image into .dfc bytes with the named model (or a checkpoint path / model);
    ``bpp`` or ``max_bytes``: a lossy file of at most that size (Codec.encode)."""
    return Codec(model).encode(image, steps=steps, seed=seed, mode=mode, bpp=bpp, max_bytes=max_bytes)


def _codec_for(f: DfcFile, model) -> Codec:
    """``model``, or else the registered model the file names (else the default)."""
    return Codec(model if model is not None else registered_or_default(f.header.model_name))


def decode_result(data: bytes, model=None, layers: int | None = None, max_bytes: int | None = None,
                  bpp: float | None = None, completion_steps: int = 0) -> Decoded:
    """Decode .dfc bytes (or a prefix) and say how: layers used, and whether it is exact.
    ``model=None`` takes the registered model the file names (else the default)."""
    f = parse_file(data)
    return _codec_for(f, model).decode_result(f, layers=layers, max_bytes=max_bytes, bpp=bpp,
                                              completion_steps=completion_steps)


def decode(data: bytes, model=None, layers: int | None = None, max_bytes: int | None = None,
           completion_steps: int = 0, output: str = "numpy"):
    """Decode .dfc bytes (or a prefix; with a PrefixWarning when no budget was asked for).
    ``output``: "numpy" (H, W[, C]) uint8, "pil", or "tensor" (C, H, W)."""
    if output not in ("numpy", "pil", "tensor"):
        raise DiffcodecError(f"unknown output type {output!r}: numpy, pil or tensor")
    f = parse_file(data)
    array = _codec_for(f, model).decode(f, layers=layers, max_bytes=max_bytes, completion_steps=completion_steps)
    if output == "pil":
        from .images import to_pil

        return to_pil(array)
    if output == "tensor":
        import torch

        tensor = torch.from_numpy(array.copy())
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    return array


def info(data: bytes) -> dict:
    """Header fields and per-layer sizes of .dfc bytes, without a model (``diffcodec info``)."""
    return describe(data)


def truncate(data: bytes, layers: int | None = None, max_bytes: int | None = None, bpp: float | None = None) -> bytes:
    """The longest prefix of a .dfc file within the given layers / bytes / bpp that ends on
    a chunk boundary: a smaller file that still decodes (``diffcodec truncate``)."""
    return data[: parse_file(data).prefix(layers=layers, max_bytes=max_bytes, bpp=bpp).size]
