"""The ``diffcodec`` command line: argument parsing and printing only.

Every command reports bad input as one ``error: ...`` line on stderr with exit status 1;
a traceback means a bug. Over 300 lines because it is every command's options in one
place, read top to bottom; the work is done by the library.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import click

from .errors import DiffcodecError


class FiniteFloat(click.FloatRange):
    """A number option that must be finite (click's FloatRange lets inf and nan through)."""

    name = "number"

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def _fail(message: str, status: int = 1) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(status)


class _Commands(click.Group):
    """click's group, with usage errors (a bad option or value) as one line and exit status 2."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except click.ClickException as exc:
            _fail(exc.format_message().replace("\n", " "), exc.exit_code)
        except click.Abort:
            _fail("interrupted")
        sys.exit(result if isinstance(result, int) else 0)


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


@click.group(cls=_Commands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="diffcodec")
def main() -> None:
    """diffcodec: a diffusion model as a progressive and lossless image codec."""


# -- training and evaluation ------------------------------------------------------------
# Every train flag names a TrainOptions field (train/options.py) and defaults to None: a
# flag given overrides the config file, which overrides the run's stored options.
_MODEL_FLAGS = {"channels": "level_channels", "blocks": "blocks_per_level", "patch": "patch_size",
                "schedule": "schedule", "name": "name", "extra_blocks": "extra_blocks"}


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path), help="TOML or JSON file of options (flags override it).")
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="Folder of training images (repeat for several).")
@click.option("--val", type=click.Path(path_type=Path), help="Folder of validation images.")
@click.option("--out", type=click.Path(path_type=Path), help="Run directory.")
@click.option("--resume", is_flag=True, default=None, help="Continue the run in --out (with its stored options).")
@click.option("--force", is_flag=True, default=None, help="Start over even if --out holds a run.")
@click.option("--steps", "max_steps", type=click.IntRange(min=1), help="Stop after this many steps.")
@click.option("--minutes", "max_minutes", type=FiniteFloat(min=0), help="Stop after this much training time.")
@click.option("--batch-size", type=click.IntRange(min=1), help="[default: 8]")
@click.option("--crop", type=click.IntRange(min=1), help="Training crop side [default: 64].")
@click.option("--lr", type=FiniteFloat(min=0, min_open=True), help="[default: 5e-4]")
@click.option("--warmup", "warmup_steps", type=click.IntRange(min=0), help="[default: 500]")
@click.option("--cooldown", "cooldown_steps", type=click.IntRange(min=0),
              help="Take the lr linearly to zero over the last N of --steps [default: 0, none].")
@click.option("--grad-clip", type=FiniteFloat(), help="[default: 1.0]")
@click.option("--ema", "ema_decay", type=FiniteFloat(0, 1), help="[default: 0.999]")
@click.option("--val-every", "val_every_minutes", type=FiniteFloat(min=0), help="Minutes between validations [default: 10].")
@click.option("--checkpoint-every", "checkpoint_every_minutes", type=FiniteFloat(min=0), help="Minutes between checkpoints [default: 5].")
@click.option("--val-crop", type=click.IntRange(min=0), help="Centre crop of validation images, 0 = whole [default: 256].")
@click.option("--val-samples", type=click.IntRange(min=1), help="[default: 4]")
@click.option("--device", help="cpu, cuda or cuda:N [default: cpu].")
@click.option("--bf16/--no-bf16", default=None, help="bf16 autocast on CUDA [default: on].")
@click.option("--threads", type=click.IntRange(min=1), help="CPU threads for torch.")
@click.option("--seed", type=int, help="[default: 0]")
@click.option("--variance-schedule/--no-variance-schedule", default=None,
              help="Train the learned schedule to reduce loss variance [default: on].")
@click.option("--schedule", type=click.Choice(["learned", "fixed_linear"]), help="Noise schedule of a new model [default: learned].")
@click.option("--channels", help="U-Net widths per level of a new model [default: 32,64,128,128].")
@click.option("--blocks", type=click.IntRange(min=1), help="Res blocks per level of a new model [default: 1].")
@click.option("--patch", type=click.IntRange(min=1), help="Pixel-unshuffle patch size of a new model [default: 2].")
@click.option("--name", help="Model name stored in the checkpoint [default: default].")
@click.option("--extra-blocks", help="Extra res blocks per level after its down-path blocks, e.g. 0,0,1,1; each starts "
                                     "as the identity, so with --init this grows the model in depth [default: none].")
@click.option("--objective", type=click.Choice(["elbo", "uq", "chain"]),
              help="elbo: the continuous Gaussian NELBO (the whole network); uq: the progressive layers' code "
                   "length (the progressive heads only, unless --train-trunk); chain: the bits-back chain's code "
                   "length at --chain-steps on the --init model's grid (the chain scale head and trunk) "
                   "[default: elbo].")
@click.option("--chain-steps", type=click.IntRange(min=1, max=128), help="With --objective chain: steps T [default: 16].")
@click.option("--elbo-weight", type=FiniteFloat(min=0),
              help="With --objective chain: add this times the continuous NELBO to the loss [default: 0].")
@click.option("--init", "init", type=click.Path(path_type=Path), help="Start from this checkpoint's weights.")
@click.option("--train-trunk", is_flag=True, default=None, help="With --objective uq: train the whole network, not only the progressive heads.")
@click.option("--weight-bits", type=click.Choice(["8"]), callback=lambda ctx, param, v: None if v is None else int(v),
              help="Train quantization-aware for the exact network's 8-bit weights and 16-bit inputs "
                   "(a float --init model becomes one; its input grids are fixed from the first batches).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly_errors
def train(config, quiet, **flags):
    """Train a diffusion model on random crops of image folders (torchrun for several GPUs)."""
    from .train import Trainer, resolve_options

    model = {}
    for flag, field in _MODEL_FLAGS.items():
        value = flags.pop(flag)
        if value is not None:
            model[field] = value
    for field, flag in (("level_channels", "--channels"), ("extra_blocks", "--extra-blocks")):
        if field in model:
            try:
                model[field] = [int(c) for c in model[field].split(",")]
            except ValueError:
                raise DiffcodecError(f"invalid model options: {flag} {model[field]!r}") from None
    flags = {k: (str(v) if isinstance(v, Path) else v) for k, v in flags.items()}
    flags["data"] = [str(d) for d in flags["data"]] or None
    if quiet:
        flags["progress"] = False
    options = resolve_options(config, {**flags, "model": model})
    summary = Trainer(options, on_skip=_warn_skip, log=lambda m: click.echo(m, err=True)).run()
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
    from .images import iter_folder_images
    from .model import load_named_model
    from .train.evaluation import image_nelbo, mean_report

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


@main.command(name="tune-grid")
@click.option("--model", "model_path", default="default", show_default=True, help="Model name or checkpoint path.")
@click.option("--data", "data", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Folder of images to take pilot crops from (training data; repeat for several).")
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Checkpoint to write: the model with the grids in its metadata.")
@click.option("--crops", default=32, show_default=True, type=click.IntRange(1, 4096), help="Pilot crops.")
@click.option("--crop", default=128, show_default=True, type=click.IntRange(8, 1024), help="Pilot crop side.")
@click.option("--candidates", default=256, show_default=True, type=click.Choice(["64", "128", "256", "512", "1024"]),
              help="Candidate times k / N the grids are chosen from.")
@click.option("--seed", default=0, show_default=True)
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
@friendly_errors
def tune_grid(model_path, data, out, crops, crop, candidates, seed, force):
    """Choose the lossless chain's time grid for every T <= 128 by dynamic programming over
    the model's error profile on pilot crops, and store the grids with the model."""
    from .train.grid_fit import fit_time_grids
    from .coding.runner import ModelRunner
    from .images import load_folder_images
    from .model import load_named_model
    from .model.checkpoint import save_model
    from .train.data import CropSampler

    _check_output(out, force)
    images = [image for _, image in load_folder_images(list(data), on_skip=_warn_skip)]
    pilot = CropSampler(images, crop, seed).sample(crops).permute(0, 2, 3, 1).numpy()
    model = load_named_model(model_path)
    fitted = fit_time_grids(ModelRunner(model), pilot, candidates=int(candidates), seed=seed)
    fitted["time_grid_fit"]["data"] = ["/".join(Path(d).resolve().parts[-2:]) for d in data]  # no local paths
    save_model(model, out, {**model.metadata, **fitted})
    click.echo(json.dumps(fitted["time_grid_fit"]))


# -- coding commands ---------------------------------------------------------------------
def _check_output(path: Path, force: bool, source: Path | None = None) -> None:
    """Refuse, before any work, an output that would overwrite the input, an existing file
    without --force, a folder, or a place that is not a writable folder."""
    import os

    if source is not None and path.exists() and source.exists() and os.path.samefile(path, source):
        raise DiffcodecError(f"{path} is the input: write the output to another path")
    if path.is_dir():
        raise DiffcodecError(f"{path} is a folder: give a file name")
    if (path.exists() or path.is_symlink()) and not force:
        raise DiffcodecError(f"{path} already exists (use --force to overwrite)")
    parent = path.parent
    if not parent.exists():
        raise DiffcodecError(f"output folder does not exist: {parent}")
    if not parent.is_dir():
        raise DiffcodecError(f"{parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DiffcodecError(f"cannot write to {parent}: permission denied")


def _write_output(path: Path, data: bytes | None = None, image=None, fmt: str | None = None) -> None:
    """Write bytes, or a PIL image in format ``fmt``, to ``path`` (checked by _check_output
    before the work) atomically: files.write_atomic never writes through a link, and a
    crash leaves the old file as it was."""
    from .files import write_atomic

    def write(out) -> None:
        if image is None:
            out.write(data)
            return
        try:
            image.save(out, format=fmt, **_LOSSLESS_SAVE.get(fmt, {}))
        except (KeyError, ValueError, TypeError) as exc:
            raise DiffcodecError(f"cannot write {path} as {fmt}: {exc}") from None

    try:
        write_atomic(path, write)
    except OSError as exc:
        raise DiffcodecError(f"cannot write {path}: {exc.strerror or exc}") from None


# Formats that store 8-bit pixels exactly (WebP only when asked to); any other one is warned of.
_LOSSLESS_SAVE = {"PNG": {}, "BMP": {}, "TIFF": {}, "PPM": {}, "TGA": {}, "WEBP": {"lossless": True, "quality": 100}}


def _image_format(path: Path) -> str:
    from PIL import Image

    Image.init()
    fmt = Image.EXTENSION.get(path.suffix.lower())
    if fmt is None or fmt not in Image.SAVE:
        raise DiffcodecError(f"cannot tell the image format from '{path.name}': use .png, .bmp, .tif, ...")
    return fmt


def _read_input(path: Path) -> bytes:
    if not path.exists():
        raise DiffcodecError(f"file not found: {path}")
    if not path.is_file():
        raise DiffcodecError(f"not a file: {path}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DiffcodecError(f"cannot read {path}: {exc.strerror or exc}") from None


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(exist_ok=True)
    except OSError as exc:
        raise DiffcodecError(f"cannot make the folder {path}: {exc.strerror or exc}") from None


def _codec(model: str, device: str, max_pixels: int | None = None, max_work: int | None = None):
    import torch

    from .codec import Codec, DecodeLimits

    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError):
        raise DiffcodecError(f"unknown device {device!r}: cpu, cuda or cuda:N") from None
    if kind not in ("cpu", "cuda"):
        raise DiffcodecError(f"unsupported device {device!r}: cpu, cuda or cuda:N")
    if kind == "cuda" and not torch.cuda.is_available():
        raise DiffcodecError("--device cuda asked for, but no CUDA GPU is available")
    default = DecodeLimits()
    limits = DecodeLimits(default.max_pixels if max_pixels is None else (max_pixels or None),
                          default.max_work if max_work is None else (max_work or None))
    return Codec(model, device=device, limits=limits)


def _one_budget(layers, max_bytes, bpp, required: bool) -> None:
    given = sum(v is not None for v in (layers, max_bytes, bpp))
    if given > 1 or (required and given == 0):
        raise DiffcodecError(f"give {'exactly' if required else 'at most'} one of --layers, --bytes and --bpp")


_model_option = click.option("--model", "model", default=None,
                             help="Model name or checkpoint path [default: encode: default; decode: the model "
                                  "the file names if registered, else default].")
_device_option = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")
_force_option = click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
_quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
_budget_options = [
    click.option("--layers", type=click.IntRange(min=0), help="Only the first K complete layers."),
    click.option("--bytes", "max_bytes", type=click.IntRange(min=1), help="Only the first N bytes of the file."),
    click.option("--bpp", type=FiniteFloat(min=0, min_open=True), help="Only the first B bits per pixel."),
]


def _budget(func):
    for option in reversed(_budget_options):
        func = option(func)
    return func


def _pairs(sources: tuple[Path, ...], output: Path, suffix: str, kinds: set[str], what: str,
           force: bool) -> tuple[list, bool]:
    """(input, output) per file, checked before any work, and whether it is a batch: one input
    file goes to the file OUTPUT; several inputs, or a folder's files with a suffix in
    ``kinds``, go into the folder OUTPUT (made if missing) as <name><suffix>."""
    if len(sources) == 1 and not sources[0].is_dir():
        _check_output(output, force, sources[0])
        return [(sources[0], output)], False
    if output.exists() and not output.is_dir():
        raise DiffcodecError(f"{output} is a file: several inputs need an output folder")
    if not output.parent.is_dir():
        raise DiffcodecError(f"output folder does not exist: {output.parent}")
    files: list[Path] = []
    for source in sources:
        if source.is_dir():
            found = sorted(p for p in source.iterdir() if p.is_file() and p.suffix.lower() in kinds)
            if not found:
                raise DiffcodecError(f"no {what} files in {source}")
            files += found
        else:
            files.append(source)  # a missing or unreadable one fails on its own
    targets: dict[Path, Path] = {}
    for source in files:
        target = output / (source.stem + suffix)
        if target in targets:
            raise DiffcodecError(f"{targets[target]} and {source} would both be written to {target}")
        targets[target] = source
        if output.is_dir():
            _check_output(target, force, source)
    _make_folder(output)
    return [(source, target) for target, source in targets.items()], True


def _run(pairs: list, batch: bool, work, quiet: bool, as_json: bool, what: str) -> None:
    """``work(source, target, progress)`` -> a report dict for each pair. A batch goes on
    past a failed file (one ``error:`` line for it), shows one progress bar and ends with a
    summary; it exits 1 if any file failed."""
    import time

    from tqdm import tqdm

    reports, failed, start = [], 0, time.perf_counter()
    bar = tqdm(pairs, desc=what, unit="file", disable=quiet or not batch or as_json, leave=False)
    for source, target in bar:
        if not batch:
            reports.append(work(source, target, not quiet and not as_json))
            continue
        try:
            reports.append(work(source, target, False))
            if not quiet and not as_json:
                tqdm.write(reports[-1]["line"], file=sys.stderr)
        except DiffcodecError as exc:
            failed += 1
            reports.append({"input": str(source), "error": str(exc)})
            tqdm.write(f"error: {exc}" if str(source) in str(exc) else f"error: {source}: {exc}", file=sys.stderr)
    bar.close()
    done = [r for r in reports if "error" not in r]
    seconds = time.perf_counter() - start
    summary = {"files": len(done), "failed": failed, "seconds": round(seconds, 3)}
    if any("bytes" in r for r in done):
        summary["bytes"] = sum(r["bytes"] for r in done)
        summary["bpp"] = round(8 * summary["bytes"] / max(1, sum(r["pixels"] for r in done)), 6)
    if as_json:
        shown = [{k: v for k, v in r.items() if k != "line"} for r in reports]
        click.echo(json.dumps({**summary, "results": shown} if batch else shown[0]))
    elif not quiet:
        if not batch:
            click.echo(reports[0]["line"], err=True)
        else:
            rate = f", {summary['bytes']} bytes, {summary['bpp']:.4f} bpp" if "bytes" in summary else ""
            click.echo(f"{what}d {len(done)} of {len(pairs)} files{rate}, {seconds:.1f} s"
                       + (f"; {failed} failed" if failed else ""), err=True)
    if failed:
        sys.exit(1)


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="The .dfc file to write; with several inputs or a folder, the folder to write them into.")
@click.option("--mode", type=click.Choice(["progressive", "lossless"]), default="progressive", show_default=True,
              help="progressive: truncatable layers; lossless: bits-back only, not truncatable.")
@click.option("--steps", default=None, type=click.IntRange(1, 1024),
              help="Progressive: layers placed by rate, ending at 0.05, 0.2, 0.8, 3.2 ... bpp [default: 2] (the bits-back tail follows); lossless: chain length [default: 16].")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**64 - 1), help="Seed of the shared dither.")
@click.option("--bpp", "target_bpp", type=FiniteFloat(min=0, min_open=True),
              help="A lossy file of at most B bits per pixel: layers on the ladder, the last ending there, no tail.")
@click.option("--bytes", "target_bytes", type=click.IntRange(min=1), help="A lossy file of at most N bytes (as --bpp).")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON on stdout.")
@_model_option
@_device_option
@_force_option
@_quiet_option
@friendly_errors
def encode(sources, output, mode, steps, seed, target_bpp, target_bytes, as_json, model, device, force, quiet):
    """Encode images (files, or the images of a folder) into .dfc files, loading the model once."""
    import time

    from .format.container import parse_file
    from .images import IMAGE_SUFFIXES, read_image

    if target_bpp is not None and target_bytes is not None:
        raise click.UsageError("give at most one of --bpp and --bytes")
    if (target_bpp is not None or target_bytes is not None) and (steps is not None or mode == "lossless"):
        raise click.UsageError("a size target makes a lossy progressive file: its layers are placed by the "
                               "target (no --steps, no --mode lossless)")
    pairs, batch = _pairs(sources, output, ".dfc", IMAGE_SUFFIXES, "image", force)
    codecs: dict[str, object] = {}  # loaded at the first image that reads (a bad image is said first)

    def work(source: Path, target: Path, progress: bool) -> dict:
        array = read_image(source)
        if not codecs:
            codecs["model"] = _codec(model or "default", device)
        start = time.perf_counter()
        data = codecs["model"].encode(array, steps=steps, seed=seed, mode=mode, progress=progress,
                                      bpp=target_bpp, max_bytes=target_bytes)
        seconds = time.perf_counter() - start
        _write_output(target, data)
        h, w = array.shape[:2]
        parsed = parse_file(data)
        header, complete = parsed.header, parsed.complete_layers()
        shape = str(header.mode) if mode != "progressive" else f"{complete} layers" + (
            ", lossy" if header.lossy else "") + (
            f" (cut to the target: part of layer {complete + 1})" if complete < len(header.layers) else "")
        line = (f"{target}: {len(data)} bytes, {8 * len(data) / (h * w):.4f} bpp "
                f"({8 * len(data) / array.size:.4f} bits/dim), {shape}, {seconds:.2f} s")
        return {"input": str(source), "output": str(target), "bytes": len(data), "pixels": h * w,
                "bpp": round(8 * len(data) / (h * w), 6), "mode": str(header.mode), "layers": len(header.layers),
                "seconds": round(seconds, 3), "line": line}

    _run(pairs, batch, work, quiet, as_json, "encode")


@main.command()
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Image to write (.png, ...); with several inputs or a folder, the folder to write PNGs into.")
@_budget
@click.option("--steps", "completion_steps", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Reverse diffusion steps after the last layer used (0 = denoised estimate).")
@click.option("--max-pixels", type=click.IntRange(min=0),
              help="Largest image to decode, in pixels [default: 33554432]; 0: no limit.")
@click.option("--max-work", type=click.IntRange(min=0),
              help="Most network work to do, in pixels x steps, completion steps included [default: 2147483648, "
                   "64 steps of the largest image]; 0: no limit.")
@click.option("--json", "as_json", is_flag=True, help="Print what was decoded as JSON on stdout.")
@_model_option
@_device_option
@_force_option
@_quiet_option
@friendly_errors
def decode(sources, output, layers, max_bytes, bpp, completion_steps, max_pixels, max_work, as_json, model, device,
           force, quiet):
    """Decode .dfc files (or prefixes of them) to images, loading each model once."""
    from .format import parse_file
    from .images import to_pil
    from .model import registered_or_default

    _one_budget(layers, max_bytes, bpp, required=False)
    pairs, batch = _pairs(sources, output, ".png", {".dfc"}, ".dfc", force)
    formats = {target: _image_format(target) for _, target in pairs}
    codecs: dict[str, object] = {}
    asked = layers is not None or max_bytes is not None or bpp is not None

    def work(source: Path, target: Path, progress: bool) -> dict:
        parsed = parse_file(_read_input(source))
        name = model or registered_or_default(parsed.header.model_name)
        if name not in codecs:
            codecs[name] = _codec(name, device, max_pixels, max_work)
        result = codecs[name].decode_result(parsed, layers=layers, max_bytes=max_bytes, bpp=bpp,
                                            completion_steps=completion_steps, progress=progress)
        fmt = formats[target]
        _write_output(target, image=to_pil(result.image), fmt=fmt)
        if fmt not in _LOSSLESS_SAVE:
            click.echo(f"warning: {fmt} does not store the pixels exactly: {target} differs from the decoded "
                       "image (use .png for the exact pixels)", err=True)
        line = f"{target}: {result.image.shape[1]}x{result.image.shape[0]}, {result.describe()}"
        if quiet and not result.exact and not result.whole and not asked and not as_json:
            click.echo(line, err=True)  # a preview the user did not ask for is said even with -q
        return {"input": str(source), "output": str(target), "width": result.image.shape[1],
                "height": result.image.shape[0], "layers_used": result.layers_used,
                "layers_total": result.layers_total, "bytes_used": result.bytes_used,
                "bytes_total": result.bytes_total, "exact": result.exact, "whole": result.whole,
                "lossy": result.lossy, "line": line}

    _run(pairs, batch, work, quiet, as_json, "decode")


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("-o", "--output", "output", required=True, type=click.Path(path_type=Path),
              help="Folder for the previews (made if missing).")
@click.option("--original", type=click.Path(path_type=Path), help="The original image: PSNR in the labels.")
@click.option("--steps", "completion_steps", default=0, show_default=True, type=click.IntRange(0, 1000),
              help="Reverse diffusion steps after each preview's last layer (0 = denoised estimate).")
@_model_option
@_device_option
@_force_option
@_quiet_option
@friendly_errors
def previews(source, output, original, completion_steps, model, device, force, quiet):
    """The image after every layer of a progressive file, and a contact sheet of them."""
    from .images import read_image, to_pil
    from .format import parse_file
    from .model import registered_or_default
    from .sheet import contact_sheet, labels

    data = _read_input(source)
    parsed = parse_file(data)
    header = parsed.header
    names = [f"{source.stem}.layer{k}.png" for k in range(parsed.layers_with_data() + 1)] + [f"{source.stem}.sheet.png"]
    if output.exists() and not output.is_dir():
        raise DiffcodecError(f"{output} is a file: give a folder for the previews")
    if not output.parent.is_dir():
        raise DiffcodecError(f"output folder does not exist: {output.parent}")
    for name in names:
        if output.is_dir():
            _check_output(output / name, force)
    reference = read_image(original) if original is not None else None
    if reference is not None and reference.ndim == 3 and reference.shape[2] == 1:
        reference = reference[:, :, 0]  # a grey original, as a grey file decodes
    codec = _codec(model or registered_or_default(header.model_name), device)
    images = codec.decode_every_layer(data, completion_steps=completion_steps)
    if reference is not None and reference.shape != images[-1].shape:
        raise DiffcodecError(f"{original} is {reference.shape[1]}x{reference.shape[0]}, the file's image "
                             f"{images[-1].shape[1]}x{images[-1].shape[0]}: not its original")
    captions = labels(data, images, reference)
    _make_folder(output)
    for name, image in zip(names, images):
        _write_output(output / name, image=to_pil(image), fmt="PNG")
    _write_output(output / names[-1], image=contact_sheet(images, captions), fmt="PNG")
    if not quiet:
        for name, caption in zip(names, captions):
            click.echo(f"{output / name}: {caption}", err=True)
        click.echo(f"{output / names[-1]}: the contact sheet", err=True)


@main.command()
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@friendly_errors
def info(source, as_json):
    """Layers, bytes and bpp per layer, model and checksums of a .dfc file."""
    from .format import describe
    from .format.container import CHAIN_PARAMS_PER_STEP

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
                   f"{len(report['chain_params']) // CHAIN_PARAMS_PER_STEP} steps of {CHAIN_PARAMS_PER_STEP} parameters (--json lists them)")
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
@_budget
@_force_option
@friendly_errors
def truncate(source, output, layers, max_bytes, bpp, force):
    """Cut a .dfc file to a layer, byte or bpp budget without re-encoding."""
    from . import truncate as cut_file

    _one_budget(layers, max_bytes, bpp, required=True)
    _check_output(output, force, source)
    data = _read_input(source)
    kept = cut_file(data, layers=layers, max_bytes=max_bytes, bpp=bpp)
    _write_output(output, kept)
    click.echo(f"{output}: {len(kept)} of {len(data)} bytes", err=True)


@main.command()
@click.option("--json", "as_json", is_flag=True)
@friendly_errors
def models(as_json):
    """The registered models, with their data, size and measured BPD."""
    from .model.registry import list_models

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
