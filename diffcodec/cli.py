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
@click.option("--objective", type=click.Choice(["elbo", "uq"]), default="elbo", show_default=True,
              help="elbo: Gaussian NELBO (lossless); uq: progressive layers (trains the progressive heads).")
@click.option("--init", "init", type=click.Path(path_type=Path), help="Start from this checkpoint's weights.")
@click.option("--train-trunk", is_flag=True, help="With --objective uq: train the whole network, not only the progressive heads.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train(data, val, out, resume, force, max_steps, max_minutes, batch_size, crop, lr, warmup_steps,
          grad_clip, ema_decay, val_every_minutes, checkpoint_every_minutes, val_crop, val_samples,
          device, no_bf16, threads, seed, no_variance_schedule, schedule, channels, blocks, patch,
          name, objective, init, train_trunk, quiet):
    """Train a diffusion model on random crops of image folders (torchrun for several GPUs)."""
    from .config import ModelConfig
    from .training import Trainer, TrainOptions

    try:
        widths = tuple(int(c) for c in channels.split(","))
        config = ModelConfig(name=name, level_channels=widths, blocks_per_level=blocks,
                             patch_size=patch, schedule=schedule,
                             progressive_heads=objective == "uq")
    except ValueError as exc:
        raise DiffcodecError(f"invalid model options: {exc}") from None
    options = TrainOptions(
        data=[str(d) for d in data], out=str(out), val=str(val) if val else None,
        batch_size=batch_size, crop=crop, lr=lr, warmup_steps=warmup_steps, grad_clip=grad_clip,
        ema_decay=ema_decay, max_steps=max_steps, max_minutes=max_minutes,
        val_every_minutes=val_every_minutes, checkpoint_every_minutes=checkpoint_every_minutes,
        val_crop=val_crop, val_samples=val_samples, variance_schedule=not no_variance_schedule,
        seed=seed, device=device, bf16=not no_bf16, threads=threads, resume=resume, force=force,
        progress=not quiet, objective=objective, init=str(init) if init else None, train_trunk=train_trunk,
    )
    summary = Trainer(config, options, on_skip=_warn_skip,
                      log=lambda m: click.echo(m, err=True)).run()
    click.echo(json.dumps(summary))


@main.command(name="eval")
@click.option("--model", "model_path", default="default", show_default=True, help="Model name or checkpoint path.")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--samples", default=8, show_default=True, type=click.IntRange(min=1), help="(t, eps) draws per image.")
@click.option("--steps", type=click.IntRange(min=1), help="T-step NELBO instead of continuous time.")
@click.option("--seed", default=0, show_default=True)
@click.option("--device", default="cpu", show_default=True)
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the results here.")
@friendly_errors
def evaluate(model_path, folder, samples, steps, seed, device, json_path):
    """Per-image and mean NELBO (bits/dim) of the images in FOLDER."""
    from .evaluation import image_nelbo, mean_report
    from .images import iter_folder_images
    from .models import load_named_model

    model = load_named_model(model_path, device)
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


# -- coding commands ---------------------------------------------------------------------
def _write_output(path: Path, data: bytes | None, force: bool, image=None) -> None:
    """Write bytes or a PIL image to ``path`` atomically; never overwrite without --force."""
    import os

    if path.exists() and not force:
        raise DiffcodecError(f"{path} already exists (use --force to overwrite)")
    if path.parent and not path.parent.exists():
        raise DiffcodecError(f"output folder does not exist: {path.parent}")
    tmp = path.with_name(f".{path.name}.partial")
    try:
        if image is not None:
            try:
                image.save(tmp, format=_image_format(path))
            except (KeyError, ValueError, OSError) as exc:
                raise DiffcodecError(f"cannot write {path}: {exc}") from None
        else:
            tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _image_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None:
        raise DiffcodecError(f"cannot tell the image format from '{path.name}': use .png, .bmp, .tif, ...")
    return fmt


def _read_input(path: Path) -> bytes:
    if not path.exists():
        raise DiffcodecError(f"file not found: {path}")
    if not path.is_file():
        raise DiffcodecError(f"not a file: {path}")
    return path.read_bytes()


def _codec(model: str | None, device: str):
    from .codec import Codec

    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise DiffcodecError("--device cuda asked for, but no CUDA GPU is available")
    return Codec(model or "default", device=device)


_model_option = click.option("--model", "model", default=None, help="Model name or checkpoint path [default: default].")
_device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
_force_option = click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
_quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="The .dfc file to write.")
@click.option("--mode", type=click.Choice(["progressive", "lossless"]), default="progressive", show_default=True,
              help="progressive: truncatable layers; lossless: bits-back, smallest file, not truncatable.")
@click.option("--steps", default=None, type=click.IntRange(1, 1024),
              help="Diffusion steps: layers in progressive mode [default: 8], chain length in lossless mode [default: 32].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**64 - 1), help="Seed of the shared dither.")
@_model_option
@_device_option
@_force_option
@_quiet_option
@friendly_errors
def encode(source, output, mode, steps, seed, model, device, force, quiet):
    """Encode an image into a .dfc file."""
    import time

    from PIL import Image

    from .codec import DEFAULT_STEPS
    from .imagetypes import to_array

    if output.exists() and not force:
        raise DiffcodecError(f"{output} already exists (use --force to overwrite)")
    if not source.is_file():
        raise DiffcodecError(f"file not found: {source}")
    try:
        with Image.open(source) as image:
            image.load()
            array = to_array(image)
    except DiffcodecError:
        raise
    except Exception as exc:  # Pillow raises many types for unreadable files
        raise DiffcodecError(f"cannot read {source} as an image: {exc}") from None
    codec = _codec(model, device)
    start = time.perf_counter()
    data = codec.encode(array, steps=steps, seed=seed, mode=mode, progress=not quiet)
    seconds = time.perf_counter() - start
    _write_output(output, data, force)
    if not quiet:
        h, w = array.shape[:2]
        shape = f"{(steps or DEFAULT_STEPS) + 1} layers" if mode == "progressive" else "lossless"
        click.echo(f"{output}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp "
                   f"({8 * len(data) / array.size:.4f} bits/dim), {shape}, {seconds:.2f} s", err=True)


def _byte_budget(data: bytes, max_bytes: int | None, bpp: float | None) -> int | None:
    from .container import parse_header

    if bpp is None:
        return max_bytes
    header, _ = parse_header(data)
    return int(bpp * header.height * header.width / 8)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path), help="Image to write (.png, ...).")
@click.option("--layers", type=click.IntRange(min=0), help="Use only the first K complete layers.")
@click.option("--bytes", "max_bytes", type=click.IntRange(min=1), help="Use only the first N bytes of the file.")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), help="Use only the first B bits per pixel.")
@click.option("--steps", "completion_steps", default=0, show_default=True, type=click.IntRange(0, 10000),
              help="Reverse diffusion steps after the last layer used (0 = denoised estimate).")
@_model_option
@_device_option
@_force_option
@_quiet_option
@friendly_errors
def decode(source, output, layers, max_bytes, bpp, completion_steps, model, device, force, quiet):
    """Decode a .dfc file (or a prefix of one) to an image."""
    from .container import parse_file
    from .imagetypes import to_pil

    if sum(v is not None for v in (layers, max_bytes, bpp)) > 1:
        raise DiffcodecError("use only one of --layers, --bytes and --bpp")
    if output.exists() and not force:
        raise DiffcodecError(f"{output} already exists (use --force to overwrite)")
    _image_format(output)
    data = _read_input(source)
    budget = _byte_budget(data, max_bytes, bpp)
    parsed = parse_file(data[:budget] if budget is not None else data)
    codec = _codec(model or _model_for(parsed.header), device)
    array = codec.decode(data, layers=layers, max_bytes=budget, completion_steps=completion_steps,
                         progress=not quiet)
    _write_output(output, None, force, image=to_pil(array))
    if not quiet:
        used = parsed.complete_layers() if layers is None else min(layers, parsed.complete_layers())
        exact = used == len(parsed.header.layers)
        click.echo(f"{output}: {array.shape[1]}x{array.shape[0]}, {used} of {len(parsed.header.layers)} "
                   f"layers{' (exact)' if exact else ''}", err=True)


def _model_for(header) -> str:
    """The registered model a file names, when it is one we have; else the default."""
    from .models import REGISTRY

    return header.model_name if header.model_name in REGISTRY else "default"


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def info(source, as_json):
    """Layers, bytes and bpp per layer, model and checksums of a .dfc file."""
    from .inspect import describe

    report = describe(_read_input(source))
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    click.echo(f"mode {report['mode']}, {report['width']}x{report['height']}, {report['channels']} channel(s), "
               f"{report['steps']} steps, seed {report['seed']}")
    click.echo(f"model {report['model_name']} ({report['model_hash']}), header {report['header_bytes']} bytes, "
               f"file {report['file_bytes']} bytes ({report['file_bpp']:.4f} bpp)")
    if report["mode"] == "lossless":
        click.echo(f"bands (rows) {' '.join(map(str, report['bands']))}; "
                   f"step scale indices {' '.join(map(str, report['chain_scales']))}")
    click.echo(f"{'layer':>5} {'step':>13} {'bytes':>9} {'bpp':>8} {'cum. bpp':>9} {'model est.':>10} "
               f"{'diff':>7} {'crc32':>8}  state")
    for row in report["layers"]:
        diff = "-"
        if row["state"] == "complete" and row["estimated_bytes"] >= 1:
            diff = f"{row['bytes'] / row['estimated_bytes'] - 1:+.2%}"
        click.echo(f"{row['layer']:>5} {row['step']:>13} {row['bytes']:>9} {row['bpp']:>8.4f} "
                   f"{row['cumulative_bpp']:>9.4f} {row['estimated_bytes']:>10.1f} {diff:>7} "
                   f"{row['crc32']:>8}  {row['state']}")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path))
@click.option("--layers", type=click.IntRange(min=0), help="Keep the first K layers.")
@click.option("--bytes", "max_bytes", type=click.IntRange(min=1), help="Keep at most N bytes.")
@click.option("--bpp", type=click.FloatRange(min=0, min_open=True), help="Keep at most B bits per pixel.")
@_force_option
@friendly_errors
def truncate(source, output, layers, max_bytes, bpp, force):
    """Cut a .dfc file to a layer, byte or bpp budget without re-encoding."""
    from .inspect import truncation_point

    if sum(v is not None for v in (layers, max_bytes, bpp)) != 1:
        raise DiffcodecError("give exactly one of --layers, --bytes and --bpp")
    data = _read_input(source)
    cut = truncation_point(data, layers=layers, max_bytes=_byte_budget(data, max_bytes, bpp))
    if output.resolve() == source.resolve():
        raise DiffcodecError("write the truncated file to a new path (-o), not over its source")
    _write_output(output, data[:cut], force)
    click.echo(f"{output}: {cut} of {len(data)} bytes", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def models(as_json):
    """The registered models, with their data, size and measured BPD."""
    from .models import list_models

    rows = list_models()
    if as_json:
        click.echo(json.dumps(rows, indent=1))
        return
    for row in rows:
        if not row["installed"]:
            click.echo(f"{row['name']}: not installed ({row['path']})")
            continue
        meta = row.get("metadata", {})
        click.echo(f"{row['name']}: {row['parameters'] / 1e6:.2f}M parameters, hash {row['hash']}")
        for key, value in meta.items():
            click.echo(f"    {key}: {value}")


if __name__ == "__main__":
    main()
