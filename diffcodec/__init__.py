"""diffcodec: a trained diffusion model as a progressive and lossless image codec.

    import diffcodec
    data = diffcodec.encode(image)            # PIL image, uint8 array (H, W[, C]) or tensor
    pixels = diffcodec.decode(data)           # exact uint8 array
    preview = diffcodec.decode(data[:2000])   # any prefix decodes
    codec = diffcodec.Codec("default")        # keep a loaded model for many images
"""

from __future__ import annotations

from .checkpoint import load_model, save_model
from .codec import DEFAULT_STEPS, Codec
from .config import ModelConfig
from .errors import CheckpointError, DiffcodecError, ImageReadError
from .model import DiffusionModel

__version__ = "0.1.0"

__all__ = [
    "Codec", "DiffusionModel", "ModelConfig", "DiffcodecError", "CheckpointError", "ImageReadError",
    "encode", "decode", "load_model", "save_model", "DEFAULT_STEPS",
]


def encode(image, steps: int = DEFAULT_STEPS, model="default", seed: int = 0) -> bytes:
    """Encode an image into .dfc bytes with the named model (or a checkpoint path / model)."""
    return Codec(model).encode(image, steps=steps, seed=seed)


def decode(data: bytes, model="default", layers: int | None = None, max_bytes: int | None = None,
           completion_steps: int = 0, output: str = "numpy"):
    """Decode .dfc bytes (or a prefix). ``output``: "numpy" (H, W[, C]) uint8, "pil", or "tensor" (C, H, W)."""
    array = Codec(model).decode(data, layers=layers, max_bytes=max_bytes, completion_steps=completion_steps)
    if output == "pil":
        from .imagetypes import to_pil

        return to_pil(array)
    if output == "tensor":
        import torch

        tensor = torch.from_numpy(array.copy())
        return tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
    if output != "numpy":
        raise DiffcodecError(f"unknown output type {output!r}: numpy, pil or tensor")
    return array
