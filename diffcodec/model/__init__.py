"""The diffusion model: configuration, noise schedule, U-Net, the VDM and its NELBO, the
diffusion math both training and coding use, checkpoints and the registry of named models.

Nothing here knows about bitstreams or training loops.
"""

from .checkpoint import load_model, model_hash, save_model
from .config import ModelConfig
from .registry import REGISTRY, load_named_model, registered_or_default
from .vdm import DiffusionModel, Nelbo

__all__ = ["DiffusionModel", "ModelConfig", "Nelbo", "REGISTRY", "load_model", "load_named_model",
           "model_hash", "registered_or_default", "save_model"]
