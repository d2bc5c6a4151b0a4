"""Training options: one dataclass, filled from defaults, a run's stored options (on
resume), a config file (TOML or JSON) and command-line flags, in that order.

A config file holds the same names as :class:`TrainOptions`, with the architecture of a
new model in a ``[model]`` table (ModelConfig fields), for example::

    data = ["data/cid22/training", "data/clic2025-test"]
    val = "data/cid22/validation"
    batch_size = 16
    lr = 3e-4
    max_minutes = 60

    [model]
    level_channels = [32, 64, 128, 128]

Every run stores the options it resolved in ``options.json``, so ``--resume`` needs
nothing but ``--out``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DiffcodecError
from ..model import ModelConfig

OPTIONS_FILE = "options.json"


@dataclass
class TrainOptions:
    data: list[str] = field(default_factory=list)  # folders of training images
    out: str = ""  # run directory
    val: str | None = None  # folder of validation images
    model: dict = field(default_factory=dict)  # ModelConfig fields of a new model
    objective: str = "elbo"  # "uq": progressive code length (trains the progressive heads); "chain": the lossless chain
    chain_steps: int = 16  # with "chain": T, on the --init model's optimised grid for T (uniform without one)
    chain_times: list | None = None  # the chain's grid as t_0 = 0 .. t_T = 1, fixed when the run starts
    elbo_weight: float = 0.0  # with "chain": plus this times the continuous NELBO (keeps the bound while tuning)
    init: str | None = None  # start from this checkpoint's weights
    train_trunk: bool = False  # with "uq": also train the trunk (otherwise only the heads)
    weight_bits: int = 0  # 8: train quantization-aware for the exact network's 8-bit weights (ModelConfig)
    batch_size: int = 8
    crop: int = 64
    lr: float = 5e-4
    warmup_steps: int = 500
    cooldown_steps: int = 0  # the last N steps before max_steps take the lr linearly down to zero
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    max_steps: int | None = None
    max_minutes: float | None = None
    val_every_minutes: float = 10.0
    checkpoint_every_minutes: float = 5.0
    log_every_steps: int = 25
    val_crop: int = 256  # centre crop of validation images (0 = whole)
    val_samples: int = 4
    variance_schedule: bool = True  # train the learned schedule to minimise the loss variance
    seed: int = 0
    device: str = "cpu"
    bf16: bool = True  # autocast the network on CUDA only
    threads: int | None = None
    resume: bool = False
    force: bool = False
    progress: bool = True
    extra: dict = field(default_factory=dict)  # stored in the checkpoints' metadata

    def model_config(self) -> ModelConfig:
        """The architecture of a new model (the progressive heads come with the uq and chain
        objectives, the chain scale head with chain)."""
        values = {"progressive_heads": self.objective in ("uq", "chain"),
                  "chain_scale_head": self.objective == "chain", **self.model}
        if self.weight_bits:
            values["weight_bits"] = self.weight_bits
        try:
            return ModelConfig.from_dict(values)
        except DiffcodecError as exc:
            raise DiffcodecError(f"invalid model options: {exc}") from None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


_FIELDS = {f.name for f in dataclasses.fields(TrainOptions)}
# Options that describe one invocation, not the run: never taken from a stored run.
_PER_INVOCATION = {"resume", "force", "progress", "init"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A TOML (.toml) or JSON file of options; unknown names are an error."""
    path = Path(path)
    if not path.is_file():
        raise DiffcodecError(f"config file not found: {path}")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            values = tomllib.loads(path.read_text())
        else:
            values = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:  # TOMLDecodeError and JSONDecodeError are ValueErrors
        raise DiffcodecError(f"cannot read config file {path}: {exc}") from None
    if not isinstance(values, dict):
        raise DiffcodecError(f"config file {path} must hold a table of options")
    unknown = set(values) - _FIELDS
    if unknown:
        raise DiffcodecError(f"config file {path}: unknown options {sorted(unknown)}")
    return values


def stored_options(out: str | Path) -> dict[str, Any]:
    """The options a run resolved when it started, if it stored them."""
    path = Path(out) / OPTIONS_FILE
    if not path.is_file():
        return {}
    values = read_config_file(path)
    return {k: v for k, v in values.items() if k not in _PER_INVOCATION}


def resolve_options(config: str | Path | None = None, overrides: dict[str, Any] | None = None) -> TrainOptions:
    """Defaults, then the run's stored options (when resuming), the config file, the flags."""
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    values: dict[str, Any] = {}
    file_values = read_config_file(config) if config else {}
    out = overrides.get("out", file_values.get("out"))
    if overrides.get("resume", file_values.get("resume")) and out:
        values.update(stored_options(out))
    values.update(file_values)
    model = {**values.get("model", {}), **overrides.pop("model", {})}
    values.update(overrides)
    values["model"] = model
    if isinstance(values.get("data"), str):
        values["data"] = [values["data"]]
    options = TrainOptions(**values)
    if not options.data:
        raise DiffcodecError("no training data: pass --data (or 'data' in the config file)")
    if not options.out:
        raise DiffcodecError("no run directory: pass --out (or 'out' in the config file)")
    if options.cooldown_steps and options.max_steps is None:
        raise DiffcodecError("--cooldown counts back from the last step: pass --steps too")
    if options.weight_bits not in (0, 8):
        raise DiffcodecError(f"weight_bits {options.weight_bits!r}: 0 (a float network) or 8")
    return options
