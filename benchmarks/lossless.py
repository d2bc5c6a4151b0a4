#!/usr/bin/env python3
"""Lossless rates of diffcodec against its own NELBO and against classical lossless codecs.

    python benchmarks/lossless.py IMAGES_DIR [--model default|PATH] [--steps 16,32,64]
        [--limit N] [--quick] [--out results/] [--nelbo-samples 8] [--progressive-steps 10]
        [--grid model|uniform]

For every image and every step count T the bits-back lossless file is encoded and decoded
(checked pixel-exact, both timed); its size is set against two bounds:

* bound_T, the T-step NELBO of the model the coder uses (Codec.lossless_bound: reverse
  steps with the per-image calibrated variance): the rate bits-back coding aims at, so
  bound_ratio = file BPD / bound_T is the coding overhead (header, the direct first band,
  band edges, ANS and grid losses); both are for the time grid the file uses (--grid: the
  model's optimised grid for T where it stores one, else uniform);
* NELBO_T, the model's T-step NELBO with VDM's fixed reverse variance (what training
  optimises), computed like bound_T over all T steps with the same noise samples
  (fixed_variance_total of Codec.lossless_bound; x_eps clipped to [-1, 1]);
  ratio = file BPD / NELBO_T. A sampled estimate (--nelbo-samples random steps, the
  estimator training uses) is kept in the JSON as sampled_nelbo_bpd: with few samples it
  is noisy, and the same times for every image make its error common to all of them.

The continuous-time NELBO is the model's T -> infinity bound. The full progressive file (every layer) is
also lossless and is measured once. PNG, WebP lossless, JPEG 2000 (reversible 5/3, mct=1)
and (when installed) JPEG-XL encode the same pixels, each round trip checked exact.

Rates are bits per dimension, BPD = 8 * file bytes / (H * W * 3), headers included for
every method. Means are unweighted over images; the mean ratio is mean file BPD / mean
NELBO_T. Written to --out: ``lossless.json`` and ``lossless_table.md``.
"""

from __future__ import annotations

import argparse
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, features
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    _jxl_available, add_common_arguments, center_crop, load_codec, load_images, machine_description,
    markdown_table, parse_int_list, timed, write_json,
)
from diffcodec.codec import DEFAULT_STEPS as PROGRESSIVE_STEPS  # noqa: E402
from diffcodec.errors import DiffcodecError  # noqa: E402
from diffcodec.train.evaluation import image_nelbo  # noqa: E402
from diffcodec.format import describe  # noqa: E402

DEFAULT_STEPS = [16, 32, 64]
QUICK_STEPS = [2, 4]
QUICK_CROP = 48  # smaller than the shared --quick crop: the lossless chain runs per band


@dataclass(frozen=True)
class LosslessCodec:
    """One Pillow format in a lossless setting; ``feature`` is Pillow's name for its library."""

    name: str
    format: str
    feature: str | None
    description: str
    options: dict


LOSSLESS_CODECS = (
    LosslessCodec("PNG", "PNG", "zlib", "libpng/zlib via Pillow, optimize=True", dict(optimize=True)),
    LosslessCodec("WebP-LL", "WEBP", "webp", "libwebp lossless via Pillow, method 6, quality 100",
                  dict(lossless=True, method=6, quality=100)),
    # no_jp2: the bare codestream; the JP2 box wrapper adds ~85 bytes that carry no image data
    LosslessCodec("JPEG 2000 (mct=1)", "JPEG2000", "jpg_2000",
                  "OpenJPEG via Pillow, reversible 5/3 wavelet, RCT (mct=1), one lossless layer, .j2k codestream",
                  dict(irreversible=False, mct=1, no_jp2=True)),
    LosslessCodec("JPEG-XL", "JXL", None, "libjxl via pillow-jxl-plugin, lossless=True (default effort)",
                  dict(lossless=True)),
)


def bits_per_dim(size: int, image: np.ndarray) -> float:
    return 8 * size / image.size


def available_codecs() -> tuple[list[LosslessCodec], list[str]]:
    """The lossless codecs this machine can run, and a note for each it cannot."""
    available, notes = [], []
    for codec in LOSSLESS_CODECS:
        if codec.format == "JXL":
            ok = _jxl_available()  # registers JXL with Pillow as a side effect
            reason = "pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)"
        else:
            ok = features.check(codec.feature)
            reason = "this Pillow build lacks it"
        if ok:
            available.append(codec)
        else:
            notes.append(f"{codec.name} skipped: {reason}")
    return available, notes


def run_lossless_classical(codec: LosslessCodec, image: np.ndarray) -> dict:
    """Encode in memory, decode, and check the pixels are identical; rate from the real bytes."""
    buffer = io.BytesIO()
    _, encode_seconds = timed(Image.fromarray(image).save, buffer, format=codec.format, **codec.options)
    data = buffer.getvalue()

    def decode() -> np.ndarray:
        with Image.open(io.BytesIO(data)) as decoded:
            return np.asarray(decoded.convert("RGB"))

    decoded, decode_seconds = timed(decode)
    return dict(bytes=len(data), bpd=bits_per_dim(len(data), image), encode_seconds=encode_seconds,
                decode_seconds=decode_seconds, round_trip=bool(np.array_equal(decoded, image)))


def round_trip(codec, image: np.ndarray, steps: int, mode: str) -> tuple[bytes, dict]:
    """Encode, decode the whole file and compare; a decoder error counts as a failed round trip.
    Lossless files always use the chain (no zlib fallback): the chain is what is measured."""
    options = dict(stored_fallback=False) if mode == "lossless" else {}
    data, encode_seconds = timed(codec.encode, image, steps=steps, seed=0, mode=mode, **options)
    facts = dict(bytes=len(data), bpd=bits_per_dim(len(data), image), header_bytes=describe(data)["header_bytes"],
                 encode_seconds=encode_seconds)
    try:
        decoded, facts["decode_seconds"] = timed(codec.decode, data)
        facts["round_trip"] = bool(np.array_equal(decoded, image))
    except DiffcodecError as exc:
        facts.update(decode_seconds=None, round_trip=False, error=str(exc))
    return data, facts


def measure_diffcodec(codec, image: np.ndarray, steps_list: list[int], samples: int, progressive_steps: int) -> dict:
    """Lossless file vs T-step NELBO for each T, the continuous NELBO, and the progressive file."""
    lossless = {}
    for steps in tqdm(steps_list, desc="steps", leave=False, dynamic_ncols=True):
        data, facts = round_trip(codec, image, steps, "lossless")
        report = describe(data)
        facts["bands"], facts["times"] = report["bands"], report["times"]
        facts["sampled_nelbo_bpd"] = image_nelbo(codec.model, image, samples=samples, steps=steps).total
        bound = codec.lossless_bound(image, steps)
        facts["bound_bpd"], facts["nelbo_bpd"] = bound["total"], bound["fixed_variance_total"]
        facts["ratio"] = facts["bpd"] / facts["nelbo_bpd"]
        facts["bound_ratio"] = facts["bpd"] / facts["bound_bpd"]
        lossless[str(steps)] = facts
    continuous = image_nelbo(codec.model, image, samples=samples).total
    _, progressive = round_trip(codec, image, progressive_steps, "progressive")
    return dict(lossless=lossless, continuous_nelbo_bpd=continuous,
                progressive=dict(steps=progressive_steps, **progressive))


def mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def progressive_name(steps: int) -> str:
    return f"diffcodec progressive ({steps} steps, full)"


def method_records(record: dict) -> dict[str, dict]:
    """{method name: facts with bpd, seconds and round_trip} of one image, in table order."""
    methods = {f"diffcodec lossless T={t}": facts for t, facts in record["diffcodec"]["lossless"].items()}
    progressive = record["diffcodec"]["progressive"]
    methods[progressive_name(progressive["steps"])] = progressive
    methods.update(record["classical"])
    return methods


def summarize(records: list[dict], steps_list: list[int], codecs: list[LosslessCodec]) -> dict:
    """Unweighted means over images; mean ratios = mean file BPD / mean bound."""
    lossless = {}
    for steps in map(str, steps_list):
        runs = [r["diffcodec"]["lossless"][steps] for r in records]
        bpd, nelbo = mean(f["bpd"] for f in runs), mean(f["nelbo_bpd"] for f in runs)
        bound = mean(f["bound_bpd"] for f in runs)
        lossless[steps] = dict(bpd=bpd, nelbo_bpd=nelbo, ratio=bpd / nelbo,
                               mean_of_ratios=mean(f["ratio"] for f in runs),
                               bound_bpd=bound, bound_ratio=bpd / bound,
                               sampled_nelbo_bpd=mean(f["sampled_nelbo_bpd"] for f in runs))
    methods = {}
    for name in method_records(records[0]):
        runs = [method_records(r)[name] for r in records]
        methods[name] = dict(bpd=mean(f["bpd"] for f in runs), encode_seconds=mean(f["encode_seconds"] for f in runs),
                             decode_seconds=mean(f["decode_seconds"] for f in runs),
                             round_trips=sum(f["round_trip"] for f in runs), images=len(runs))
    for codec in LOSSLESS_CODECS:
        if codec not in codecs:
            methods[codec.name] = None
    return dict(lossless=lossless, continuous_nelbo_bpd=mean(r["diffcodec"]["continuous_nelbo_bpd"] for r in records),
                methods=methods)


def tables(records: list[dict], means: dict, steps_list: list[int], progressive_steps: int, header: str,
           notes: list[str]) -> str:
    """BPD per image (plus a mean row) and mean seconds per method, as markdown."""
    def num(value, pattern="{:.3f}"):
        return None if value is None else pattern.format(value)

    def bpd_cell(facts: dict | None) -> str | None:
        if facts is None:
            return None
        return num(facts["bpd"]) + ("" if facts["round_trip"] else " (NOT EXACT)")

    def ratios(facts: dict) -> str:
        return f"×{facts['bound_ratio']:.3f}, ×{facts['ratio']:.3f}"

    classical_names = [c.name for c in LOSSLESS_CODECS]
    headers = (["image"] + [f"diffcodec T={t} (×bound_T, ×NELBO_T)" for t in steps_list]
               + [f"bound_{t}" for t in steps_list] + [f"NELBO_{t}" for t in steps_list]
               + ["NELBO (cont.)", f"progressive {progressive_steps} (full)"] + classical_names)
    rows = []
    for r in records:
        lossless = r["diffcodec"]["lossless"]
        rows.append([r["name"]]
                    + [f"{bpd_cell(lossless[str(t)])} ({ratios(lossless[str(t)])})" for t in steps_list]
                    + [num(lossless[str(t)]["bound_bpd"]) for t in steps_list]
                    + [num(lossless[str(t)]["nelbo_bpd"]) for t in steps_list]
                    + [num(r["diffcodec"]["continuous_nelbo_bpd"]), bpd_cell(r["diffcodec"]["progressive"])]
                    + [bpd_cell(r["classical"].get(name)) for name in classical_names])
    methods = means["methods"]
    rows.append([f"**mean ({len(records)})**"]
                + [f"{num(means['lossless'][str(t)]['bpd'])} ({ratios(means['lossless'][str(t)])})"
                   for t in steps_list]
                + [num(means["lossless"][str(t)]["bound_bpd"]) for t in steps_list]
                + [num(means["lossless"][str(t)]["nelbo_bpd"]) for t in steps_list]
                + [num(means["continuous_nelbo_bpd"]), num(methods[progressive_name(progressive_steps)]["bpd"])]
                + [num(methods[name]["bpd"]) if methods[name] else None for name in classical_names])
    time_rows = [[name, num(m["encode_seconds"]), num(m["decode_seconds"]), f"{m['round_trips']}/{m['images']}"]
                 for name, m in methods.items() if m is not None]
    parts = [
        header,
        "## Bits per dimension (8 x file bytes / (H x W x 3), headers included)",
        "diffcodec cells: bits-back file BPD (× its ratio to bound_T, × its ratio to NELBO_T). "
        "bound_T: the T-step NELBO of the coder's model (calibrated reverse variances), the rate bits-back "
        "aims at; NELBO_T: the model's T-step NELBO with VDM's fixed reverse variance, both summed over all T "
        "steps with the same noise; NELBO (cont.): the continuous-time bound (sampled). Mean row: unweighted over images, ratios = mean BPD / mean bound. "
        "– : codec not available.",
        markdown_table(headers, rows),
        "## Mean seconds per image",
        markdown_table(["method", "encode s", "decode s", "exact round trips"], time_rows),
    ]
    if notes:
        parts.append("Notes: " + " ".join(notes))
    return "\n\n".join(parts) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    for action in parser._actions:  # this script's --quick crops smaller than the shared default
        if "--quick" in action.option_strings:
            action.help = f"first 2 images, centre-cropped to {QUICK_CROP}x{QUICK_CROP}, steps 2,4"
    parser.add_argument("--steps", type=parse_int_list, default=None,
                        help="comma-separated lossless step counts T (default 16,32,64; --quick: 2,4)")
    parser.add_argument("--nelbo-samples", type=int, default=8, help="(t, eps) samples per NELBO estimate")
    parser.add_argument("--grid", choices=["model", "uniform"], default="model",
                        help="time grid of the chain: the model's optimised one where it has one for T "
                             "(diffcodec tune-grid), or uniform")
    parser.add_argument("--progressive-steps", type=int, default=PROGRESSIVE_STEPS,
                        help="rate-placed layers of the progressive file (the codec's default)")
    args = parser.parse_args(argv)
    steps_list = args.steps or (QUICK_STEPS if args.quick else DEFAULT_STEPS)
    if min(steps_list) < 1 or args.nelbo_samples < 1 or args.progressive_steps < 1:
        parser.error("--steps, --nelbo-samples and --progressive-steps must be positive")

    images = load_images(args.images, args.limit, args.quick)
    if args.quick:
        images = [(name, center_crop(rgb, QUICK_CROP)) for name, rgb in images]
    if not images:
        parser.error(f"no images found in {args.images}")
    codec = load_codec(args.model, args.device)
    if args.grid == "uniform":  # the chain falls back to the uniform grid without stored grids
        codec.model.metadata = {k: v for k, v in codec.model.metadata.items() if k != "time_grids"}
    codecs, notes = available_codecs()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    # one untimed round trip so that the first image's seconds do not include warm-up
    warm = center_crop(images[0][1], 16)
    codec.decode(codec.encode(warm, steps=min(steps_list), mode="lossless"))

    records = []
    for name, image in tqdm(images, desc="images", unit="image", dynamic_ncols=True):
        record = dict(name=name, height=image.shape[0], width=image.shape[1])
        record["diffcodec"] = measure_diffcodec(codec, image, steps_list, args.nelbo_samples, args.progressive_steps)
        record["classical"] = {c.name: run_lossless_classical(c, image)
                               for c in tqdm(codecs, desc="classical codecs", leave=False, dynamic_ncols=True)}
        records.append(record)

    means = summarize(records, steps_list, codecs)
    config = dict(images_dir=str(args.images), images=len(images), model=args.model, steps=steps_list, grid=args.grid,
                  progressive_steps=args.progressive_steps, nelbo_samples=args.nelbo_samples, quick=args.quick,
                  machine=machine_description(args.device), notes=notes,
                  codecs={c.name: c.description for c in codecs})
    write_json(out / "lossless.json", dict(config=config, images=records, means=means))
    header = (f"# Lossless: {len(images)} image(s) from {args.images}"
              f"{f' (quick: {QUICK_CROP}x{QUICK_CROP} centre crops)' if args.quick else ''}, model {args.model}, "
              f"{args.grid} time grid, "
              f"sampled NELBOs from {args.nelbo_samples} samples")
    table = tables(records, means, steps_list, args.progressive_steps, header, notes)
    (out / "lossless_table.md").write_text(table)
    print(table)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    failed = [f"{r['name']}: {method}" for r in records
              for method, facts in method_records(r).items() if not facts["round_trip"]]
    if failed:
        sys.exit(f"round trips that were not exact: {failed}")


if __name__ == "__main__":
    main()
