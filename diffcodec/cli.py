"""The ``diffcodec`` command line.

Every command reports bad input as one ``error: ...`` line on stderr with exit status 1;
a traceback means a bug.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import click

from .errors import DiffcodecError


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(1)


def friendly_errors(func):
    """Turn DiffcodecError (and Ctrl-C) into one clear line and a non-zero exit."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except DiffcodecError as exc:
            _fail(str(exc))
        except KeyboardInterrupt:
            _fail("interrupted")
        except MemoryError:
            _fail("out of memory (try a smaller image, batch or crop)")

    return wrapper


def _warn_skip(path: Path, reason: str) -> None:
    click.echo(f"warning: skipping {path}: {reason}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffcodec")
def main() -> None:
    """diffcodec: a diffusion model as a progressive and lossless image codec."""


@main.command()
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Folder of training images (repeat for several).")
@click.option("--val", type=click.Path(path_type=Path), help="Folder of validation images.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, help="Continue the run in --out.")
@click.option("--force", is_flag=True, help="Start over even if --out holds a run.")
@click.option("--steps", "max_steps", type=click.IntRange(min=1), help="Stop after this many steps.")
@click.option("--minutes", "max_minutes", type=click.FloatRange(min=0), help="Stop after this much training time.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(min=1))
@click.option("--crop", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--lr", default=5e-4, show_default=True, type=click.FloatRange(min=0, min_open=True))
@click.option("--warmup", "warmup_steps", default=500, show_default=True, type=click.IntRange(min=0))
@click.option("--grad-clip", default=1.0, show_default=True, type=float)
@click.option("--ema", "ema_decay", default=0.999, show_default=True, type=click.FloatRange(0, 1))
@click.option("--val-every", "val_every_minutes", default=10.0, show_default=True, help="Minutes between validations.")
@click.option("--checkpoint-every", "checkpoint_every_minutes", default=5.0, show_default=True, help="Minutes between checkpoints.")
@click.option("--val-crop", default=256, show_default=True, help="Centre crop of validation images (0 = whole).")
@click.option("--val-samples", default=4, show_default=True, type=click.IntRange(min=1))
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@click.option("--no-bf16", is_flag=True, help="Train in float32 on CUDA too.")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--seed", default=0, show_default=True)
@click.option("--no-variance-schedule", is_flag=True, help="Do not train the schedule to reduce loss variance.")
@click.option("--schedule", type=click.Choice(["learned", "fixed_linear"]), default="learned", show_default=True)
@click.option("--channels", default="32,64,128,128", show_default=True, help="U-Net widths per level.")
@click.option("--blocks", default=1, show_default=True, type=click.IntRange(min=1), help="Res blocks per level.")
@click.option("--patch", default=2, show_default=True, type=click.IntRange(min=1), help="Pixel-unshuffle patch size.")
@click.option("--name", default="default", show_default=True, help="Model name stored in the checkpoint.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train(data, val, out, resume, force, max_steps, max_minutes, batch_size, crop, lr, warmup_steps,
          grad_clip, ema_decay, val_every_minutes, checkpoint_every_minutes, val_crop, val_samples,
          device, no_bf16, threads, seed, no_variance_schedule, schedule, channels, blocks, patch,
          name, quiet):
    """Train a diffusion model on random crops of image folders (torchrun for several GPUs)."""
    from .config import ModelConfig
    from .training import Trainer, TrainOptions

    try:
        widths = tuple(int(c) for c in channels.split(","))
        config = ModelConfig(name=name, level_channels=widths, blocks_per_level=blocks,
                             patch_size=patch, schedule=schedule)
    except ValueError as exc:
        raise DiffcodecError(f"invalid model options: {exc}") from None
    options = TrainOptions(
        data=[str(d) for d in data], out=str(out), val=str(val) if val else None,
        batch_size=batch_size, crop=crop, lr=lr, warmup_steps=warmup_steps, grad_clip=grad_clip,
        ema_decay=ema_decay, max_steps=max_steps, max_minutes=max_minutes,
        val_every_minutes=val_every_minutes, checkpoint_every_minutes=checkpoint_every_minutes,
        val_crop=val_crop, val_samples=val_samples, variance_schedule=not no_variance_schedule,
        seed=seed, device=device, bf16=not no_bf16, threads=threads, resume=resume, force=force,
        progress=not quiet,
    )
    summary = Trainer(config, options, on_skip=_warn_skip,
                      log=lambda m: click.echo(m, err=True)).run()
    click.echo(json.dumps(summary))


@main.command(name="eval")
@click.option("--model", "model_path", required=True, type=click.Path(path_type=Path), help="Model checkpoint.")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1), help="(t, eps) draws per image.")
@click.option("--steps", type=click.IntRange(min=1), help="T-step NELBO instead of continuous time.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results here.")
@friendly_errors
def evaluate(model_path, folder, samples, steps, seed, device, json_path):
    """Per-image and mean NELBO (bits/dim) of the images in FOLDER."""
    from .checkpoint import load_model
    from .evaluation import image_nelbo, mean_report
    from .images import iter_folder_images

    model = load_model(model_path, device)
    click.echo(f"{'image':40s} {'total':>8s} {'prior':>8s} {'recon':>8s} {'diffusion':>9s}")
    rows, reports = [], []
    for path, image in iter_folder_images(folder, on_skip=_warn_skip):
        report = image_nelbo(model, image, samples=samples, steps=steps, seed=seed)
        reports.append(report)
        rows.append({"image": path.name, **report.to_dict()})
        click.echo(f"{path.name[:40]:40s} {report.total:8.4f} {report.prior:8.4f} "
                   f"{report.reconstruction:8.4f} {report.diffusion:9.4f}")
    if not reports:
        raise DiffcodecError(f"no readable images in {folder}")
    mean = mean_report(reports)
    click.echo(f"{'mean (' + str(len(reports)) + ' images)':40s} {mean.total:8.4f} {mean.prior:8.4f} "
               f"{mean.reconstruction:8.4f} {mean.diffusion:9.4f}")
    if json_path:
        json_path.write_text(json.dumps({"model": str(model_path), "steps": steps, "samples": samples,
                                         "images": rows, "mean": mean.to_dict()}, indent=1))


if __name__ == "__main__":
    main()
