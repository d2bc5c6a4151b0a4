"""The model registry: named models shipped inside the package, or checkpoint paths."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from ..errors import CheckpointError
from .checkpoint import load_model
from .vdm import DiffusionModel

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
REGISTRY = {
    "default": WEIGHTS_DIR / "default.pt",  # one model for both modes (MODEL_CARD.md)
}


def resolve_model(spec: str | Path) -> Path:
    """A registered name or a path to a checkpoint file."""
    name = str(spec)
    if name in REGISTRY:
        path = REGISTRY[name]
        if not path.is_file():
            raise CheckpointError(f"the '{name}' model is not installed ({path} is missing)")
        return path
    path = Path(spec)
    if not path.exists():
        known = ", ".join(sorted(REGISTRY))
        raise CheckpointError(f"unknown model '{name}': not a registered name ({known}) nor an existing file")
    return path


@lru_cache(maxsize=4)
def _cached(path: str, mtime: float, device: str) -> DiffusionModel:
    return load_model(path, device)


def registered_or_default(name: str) -> str:
    """The registered model a file names (its header's model name), when it is one we have;
    else the default: how both the library and the CLI pick the model for a file."""
    return name if name in REGISTRY else "default"


def load_named_model(spec: str | Path, device: str = "cpu") -> DiffusionModel:
    path = resolve_model(spec)
    return _cached(str(path.resolve()), path.stat().st_mtime, str(device))


def list_models() -> list[dict]:
    rows = []
    for name, path in sorted(REGISTRY.items()):
        row = {"name": name, "path": str(path), "installed": path.is_file()}
        if row["installed"]:
            model = load_named_model(name)
            metadata = dict(model.metadata)
            if "time_grids" in metadata:  # T + 1 times for every T: listed by T only
                grids = metadata["time_grids"]
                metadata["time_grids"] = f"optimised grids for T in {min(map(int, grids['grids']), default=0)}.." \
                                         f"{max(map(int, grids['grids']), default=0)} (times k/{grids['denominator']})"
            row.update(parameters=sum(p.numel() for p in model.parameters()), hash=model.model_hash[:16],
                       config=model.config.to_dict(), metadata=metadata)
        rows.append(row)
    return rows
