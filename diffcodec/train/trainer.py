"""Training loop: an objective (losses.py), Adam with warm-up, clipping, EMA, validation,
periodic checkpoints, resume, bf16 autocast on CUDA and DistributedDataParallel.

A run directory holds:
  options.json   the options the run resolved (options.py); --resume reads them back
  model.pt       EMA weights of the latest checkpoint (a normal model checkpoint)
  best.pt        EMA weights with the best validation BPD so far
  state.pt       everything needed to resume (raw weights, optimiser, EMA, RNG states)
  curve.jsonl    one JSON line per logging interval / validation

The loop, its checkpoints and resume share one state and stay in one module (over 300
lines), so that a resumed run is visibly the run it continues.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import CheckpointError, DiffcodecError
from ..images import SkipHandler, load_folder_images
from ..model import DiffusionModel, ModelConfig
from ..model.checkpoint import atomic_save, load_model, read_torch_file, save_model
from ..model.network import calibrate_inputs, extra_block_prefixes
from .data import CropSampler, center_crop
from ..model.time_grid import grid_fractions
from .evaluation import chain_validation, mean_nelbo, progressive_code_length
from .losses import Objective
from .options import OPTIONS_FILE, TrainOptions

STATE_FORMAT = "diffcodec-train-state"
HEAD_PREFIXES = ("network.image_out.", "network.scale_out.", "network.chain_scale_out.")
CALIBRATION_BATCHES = 8  # training batches that fix a quantization-aware model's input grids


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, 0
    return int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0"))


class EMA:
    """Exponential moving average of a model's parameters (buffers copied as they are)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        # Warm-up of the decay so early averages are not dominated by the random init.
        decay = min(self.decay, (1 + step) / (10 + step))
        for ema_p, p in zip(self.model.parameters(), model.parameters()):
            ema_p.lerp_(p.detach(), 1 - decay)
        for ema_b, b in zip(self.model.buffers(), model.buffers()):
            ema_b.copy_(b)


def training_device(name: str, world: int = 1, local_rank: int = 0) -> torch.device:
    """The device to train on, made current: under torchrun each process takes its own GPU;
    a bare "cuda" becomes the current GPU's index (torch.cuda.set_device needs one)."""
    device = torch.device(name)
    if device.type != "cuda":
        return device
    if not torch.cuda.is_available():
        raise DiffcodecError("--device cuda asked for, but no CUDA GPU is available")
    if world > 1:
        device = torch.device("cuda", local_rank)
    elif device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    return device


def learning_rate(step: int, base: float, warmup: int, cooldown: int = 0, max_steps: int | None = None) -> float:
    """Linear warm-up, constant, then (with ``cooldown`` and ``max_steps``) linear decay to zero
    over the last ``cooldown`` steps: the constant phase can be resumed for as long as it
    pays, and a decay branched off it ends a run at a small rate (what that buys:
    docs/training.md#choices-at-equal-steps)."""
    factor = min(1.0, (step + 1) / max(1, warmup))
    if cooldown and max_steps is not None:
        factor = min(factor, (max_steps - step) / cooldown)
    return base * max(0.0, factor)


class Trainer:
    def __init__(self, options: TrainOptions, on_skip: SkipHandler | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        self.options = options
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.rank, self.world, local_rank = _distributed()
        self.out = Path(options.out)
        state_path = self.out / "state.pt"
        if self.rank == 0 and state_path.exists() and not (options.resume or options.force):
            raise DiffcodecError(f"{self.out} already holds a training run: pass --resume to "
                                 "continue it or --force to start over")
        if options.objective == "uq" and not (options.train_trunk or options.init or options.resume):
            raise DiffcodecError("--objective uq trains only the progressive heads, which need a trained network: "
                                 "pass --init CHECKPOINT (or --train-trunk to train everything)")
        if options.resume and not state_path.exists():
            raise DiffcodecError(f"nothing to resume: {state_path} does not exist")

        if options.threads:
            torch.set_num_threads(options.threads)
        device = training_device(options.device, self.world, local_rank)
        self.device = device
        if self.world > 1 and not torch.distributed.is_initialized():
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")

        train_images = [im for _, im in load_folder_images(options.data, on_skip=on_skip)]
        self.sampler = CropSampler(train_images, options.crop, seed=options.seed + 1000 * self.rank)
        self.val_images = []
        if options.val:
            self.val_images = [center_crop(im, options.val_crop)
                               for _, im in load_folder_images(options.val, on_skip=on_skip)]
        self.log(f"training on {len(train_images)} images"
                 + (f", validating on {len(self.val_images)}" if self.val_images else "")
                 + f", device {device}, {self.world} process(es)")

        self.step = 0
        self.best_val = math.inf
        self.elapsed = 0.0
        if options.resume:
            self._load_state(state_path)
        else:
            torch.manual_seed(options.seed)
            self.model = self._initial_model().to(device)
        self.chain_times = None
        if options.objective == "chain":
            if options.chain_times is None:  # fixed when the run starts: the --init model's grid
                options.chain_times = grid_fractions(getattr(self.model, "metadata", {}), options.chain_steps)
            self.chain_times = torch.tensor(options.chain_times, dtype=torch.float32)
        if not options.resume:
            self._calibrate()
            self.ema = EMA(self.model, options.ema_decay)
            self.optimizer = torch.optim.Adam(self._trained_parameters(), lr=options.lr)
        self.model.use_bf16 = options.bf16 and device.type == "cuda"
        self.train_model: nn.Module = Objective(self.model, options.objective, options.variance_schedule,
                                                options.train_trunk, self.chain_times, options.elbo_weight)
        if self.world > 1:
            self.train_model = nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def _initial_model(self) -> DiffusionModel:
        """A fresh model, or one started from --init (gaining a scale head if the objective needs
        it, and grown in depth where the model options ask for more extra_blocks than it has:
        the new blocks start as the identity, so the model computes what it did)."""
        if not self.options.init:
            return DiffusionModel(self.options.model_config())
        base = load_model(self.options.init)
        chain = self.options.objective == "chain"
        extra = self.options.model.get("extra_blocks")
        try:
            wanted = dataclasses.replace(
                base.config, progressive_heads=base.config.progressive_heads or self.options.objective in ("uq", "chain"),
                chain_scale_head=base.config.chain_scale_head or chain,
                weight_bits=self.options.weight_bits or base.config.weight_bits,
                extra_blocks=base.config.extra_blocks if extra is None else tuple(extra))
        except (TypeError, ValueError) as exc:
            raise DiffcodecError(f"invalid model options for {self.options.init}: {exc}") from None
        model = DiffusionModel(wanted)
        try:
            missing, unexpected = model.load_state_dict(base.state_dict(), strict=False)
        except RuntimeError:  # a tensor of another shape: another architecture
            raise CheckpointError(f"{self.options.init} does not fit the model being trained") from None
        grown = tuple("network." + prefix for prefix in extra_block_prefixes(base.config, wanted))
        if grown and self.options.objective == "uq" and not self.options.train_trunk:
            raise DiffcodecError("new blocks with a frozen trunk would stay the identity: pass --train-trunk "
                                 "or leave --extra-blocks out")
        missing = [name for name in missing if not name.endswith(".input_exponent")]  # calibrated below
        if unexpected or any(not name.startswith(HEAD_PREFIXES + grown) for name in missing):
            raise CheckpointError(f"{self.options.init} does not fit the model being trained")
        if chain and not base.config.chain_scale_head and base.config.progressive_heads:
            # the chain head starts as the progressive scale head (the same kind of estimate)
            model.network.chain_scale_out.load_state_dict(model.network.scale_out.state_dict())
        model.metadata = base.metadata  # its grids, for the chain objective
        heads = any(name.startswith(HEAD_PREFIXES) for name in missing)
        self.log(f"initialised from {self.options.init}" + (" (new heads)" if heads else "")
                 + (f" (grown: {len(grown)} new blocks, identity at first)" if grown else ""))
        return model

    def _calibrate(self) -> None:
        """A quantization-aware model's input grids, fixed once from training batches run
        through the objective (the inputs each layer sees in training)."""
        if not self.model.config.weight_bits:
            return
        objective = Objective(self.model, self.options.objective, False, self.options.train_trunk,
                              self.chain_times, self.options.elbo_weight)
        generator = torch.Generator().manual_seed(self.options.seed)

        def run() -> None:
            for _ in range(CALIBRATION_BATCHES):
                objective(self.sampler.sample(self.options.batch_size).to(self.device), generator=generator)

        calibrate_inputs(self.model.network, run)

    def _trained_parameters(self) -> list:
        """With the progressive objective and a frozen trunk, only the progressive heads train."""
        if self.options.objective == "chain":  # everything but the schedule: the grid is in t
            for p in self.model.schedule.parameters():
                p.requires_grad_(False)
            return [p for p in self.model.parameters() if p.requires_grad]
        if self.options.objective == "uq" and not self.options.train_trunk:
            head = [p for name, p in self.model.named_parameters() if name.startswith(HEAD_PREFIXES)]
            ids = {id(p) for p in head}
            for p in self.model.parameters():
                p.requires_grad_(id(p) in ids)
            return head
        return list(self.model.parameters())

    # -- state -------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "format": STATE_FORMAT,
            "config": self.model.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": self.ema.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "elapsed": self.elapsed,
            "best_val": self.best_val,
            "sampler": json.dumps(self.sampler.state()),
            "torch_rng": torch.get_rng_state(),
            "options": json.dumps(asdict(self.options)),
        }

    def _load_state(self, path: Path) -> None:
        state = read_torch_file(path, "training state")
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
            raise CheckpointError(f"{path} is not a diffcodec training state")
        config = ModelConfig.from_dict(state["config"])
        self.model = DiffusionModel(config).to(self.device)
        self.model.load_state_dict(state["model"])
        self.ema = EMA(self.model, self.options.ema_decay)
        self.ema.model.load_state_dict(state["ema"])
        self.optimizer = torch.optim.Adam(self._trained_parameters(), lr=self.options.lr)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step, self.elapsed, self.best_val = state["step"], state["elapsed"], state["best_val"]
        if self.rank == 0:
            self.sampler.set_state(json.loads(state["sampler"]))
        torch.set_rng_state(state["torch_rng"])
        self.log(f"resumed {path} at step {self.step} ({self.elapsed / 60:.1f} min trained)")

    def _metadata(self) -> dict:
        return {"step": self.step, "train_minutes": round(self.elapsed / 60, 2),
                "best_val_bpd": None if math.isinf(self.best_val) else self.best_val,
                "data": [str(d) for d in self.options.data], **self.options.extra,
                **({"chain_training": {"steps": self.options.chain_steps, "times": self.options.chain_times}}
                   if self.options.objective == "chain" else {})}

    def save(self) -> None:
        if self.rank != 0:
            return
        atomic_save(self._state(), self.out / "state.pt")
        save_model(self.ema.model, self.out / "model.pt", self._metadata())

    def _append_curve(self, record: dict) -> None:
        if self.rank == 0:
            with open(self.out / "curve.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def validate(self) -> dict | None:
        if self.rank != 0 or not self.val_images:
            return None
        if self.options.objective == "uq":
            result = progressive_code_length(self.ema.model, self.val_images, self.options.val_samples)
        elif self.options.objective == "chain":
            result = chain_validation(self.ema.model, self.val_images, self.chain_times)
            if self.options.elbo_weight:
                nelbo = mean_nelbo(self.ema.model, self.val_images, self.options.val_samples)
                result = {**result, "chain": result["total"], "nelbo": nelbo["total"],
                          "total": result["total"] + self.options.elbo_weight * nelbo["total"]}
        else:
            result = mean_nelbo(self.ema.model, self.val_images, self.options.val_samples)
        improved = result["total"] < self.best_val
        if improved:
            self.best_val = result["total"]
            save_model(self.ema.model, self.out / "best.pt", self._metadata())
        self._append_curve({"step": self.step, "minutes": round(self.elapsed / 60, 3),
                            "val": result, "best": improved})
        return result

    # -- loop --------------------------------------------------------------------------
    def train_step(self, generator: torch.Generator) -> float:
        opts = self.options
        x = self.sampler.sample(opts.batch_size).to(self.device, non_blocking=True)
        loss_per_example, box = self.train_model(x, generator=generator)
        if box is not None:
            box[0] = 2 * loss_per_example.detach()
        loss = loss_per_example.mean()
        if not torch.isfinite(loss):
            raise DiffcodecError(f"training diverged at step {self.step} (loss {loss.item()}); "
                                 "lower --lr or resume from the last checkpoint")
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(self.step, opts.lr, opts.warmup_steps, opts.cooldown_steps, opts.max_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        # Clip the network and the schedule separately: the schedule's variance gradient
        # (d E[L^2]) is on another scale and must not shrink the network's step.
        for params in (self.model.network.parameters(), self.model.schedule.parameters()):
            nn.utils.clip_grad_norm_([p for p in params if p.requires_grad], opts.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model, self.step)
        self.step += 1
        return loss.item()

    def run(self) -> dict:
        opts = self.options
        self.out.mkdir(parents=True, exist_ok=True)
        if self.rank == 0:
            (self.out / OPTIONS_FILE).write_text(opts.to_json())
        # a crop stream per (seed, step, rank), so a resumed run or another GPU never repeats one
        generator = torch.Generator().manual_seed(opts.seed * 7919 + self.step + 17 * self.rank)
        bar = None
        if opts.progress and self.rank == 0:
            from tqdm import tqdm
            bar = tqdm(total=opts.max_steps, initial=self.step if opts.max_steps else 0,
                       desc="train", unit="step", dynamic_ncols=True, file=sys.stderr)
        start = time.time() - self.elapsed
        last_ckpt = last_val = time.time()
        running, count, t_log, crops = 0.0, 0, time.time(), 0
        val_result = None
        try:
            while True:
                if opts.max_steps is not None and self.step >= opts.max_steps:
                    break
                if opts.max_minutes is not None and (time.time() - start) / 60 >= opts.max_minutes:
                    break
                loss = self.train_step(generator)
                running, count, crops = running + loss, count + 1, crops + opts.batch_size * self.world
                self.elapsed = time.time() - start
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(bpd=f"{loss:.3f}", refresh=False)
                if self.step % opts.log_every_steps == 0:
                    now = time.time()
                    self._append_curve({"step": self.step, "minutes": round(self.elapsed / 60, 3),
                                        "train_bpd": running / count,
                                        "lr": self.optimizer.param_groups[0]["lr"],
                                        "crops_per_s": crops / (now - t_log)})
                    running, count, t_log, crops = 0.0, 0, now, 0
                if (time.time() - last_val) / 60 >= opts.val_every_minutes:
                    val_result = self.validate() or val_result
                    if bar is not None and val_result:
                        bar.write(f"step {self.step}: validation {val_result['total']:.4f} bpd")
                    last_val = time.time()
                if (time.time() - last_ckpt) / 60 >= opts.checkpoint_every_minutes:
                    self.save()
                    last_ckpt = time.time()
        finally:
            if bar is not None:
                bar.close()
        val_result = self.validate() or val_result
        self.save()
        return {"step": self.step, "minutes": self.elapsed / 60, "val": val_result,
                "best_val_bpd": None if math.isinf(self.best_val) else self.best_val}
