#!/usr/bin/env python3
"""The lossless coder's bound against the number of steps T, on the uniform and on the
model's optimised time grid.

    python benchmarks/lossless_curve.py IMAGES_DIR [--model default|PATH] [--steps 8,16,32,64]
        [--grids uniform,model] [--limit N] [--skip N] [--quick] [--out results/]
    python benchmarks/lossless_curve.py --merge part1/lossless_curve.json part2/... --out all/

For every image, T and grid: the T-step NELBO of the model the lossless coder uses
(Codec.lossless_bound: calibrated reverse variances, all T steps, one noise sample each),
which is what a lossless file of that T and grid costs up to the coder's overhead; files
themselves (encode, decode, exactness, file / bound) are benchmarks/lossless.py's job, at
a few T. Measuring bounds, not files, makes the full curve affordable on a CPU: one
network pass per step over the image, no bands. Written to --out after every image:
``lossless_curve.json`` and ``lossless_curve.md``. ``--merge`` joins runs over different
images (a long run done in parts, with ``--skip``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_common_arguments, joined_parts, load_codec, load_images, machine_description,  # noqa: E402
                    parse_int_list)

DEFAULT_STEPS = [8, 16, 32, 64]
GRIDS = ("uniform", "model")


def measure(codec, image, steps_list: list[int], grids=GRIDS) -> dict:
    """{grid: {T: bound bits/dim}} and the seconds each bound took."""
    bounds, seconds = {grid: {} for grid in grids}, {grid: {} for grid in grids}
    for grid in grids:
        for steps in steps_list:
            start = time.perf_counter()
            bounds[grid][str(steps)] = codec.lossless_bound(image, steps, uniform_grid=grid == "uniform")["total"]
            seconds[grid][str(steps)] = time.perf_counter() - start
    return dict(bound_bpd=bounds, seconds=seconds)


def table(records: list[dict], steps_list: list[int], grids, header: str) -> str:
    columns = [f"{grid} T={t}" for grid in grids for t in steps_list]
    lines = [header, "", "| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for record in records + [mean_record(records, steps_list, grids)]:
        cells = [f"{record['bound_bpd'][grid][str(t)]:.3f}" for grid in grids for t in steps_list]
        lines.append(f"| {record['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_record(records: list[dict], steps_list: list[int], grids) -> dict:
    return dict(name=f"**mean ({len(records)})**", bound_bpd={
        grid: {str(t): sum(r["bound_bpd"][grid][str(t)] for r in records) / len(records) for t in steps_list}
        for grid in grids})


def parse_grids(text: str) -> list[str]:
    grids = [g for g in text.split(",") if g]
    if not grids or any(g not in GRIDS for g in grids):
        raise argparse.ArgumentTypeError(f"expected grids from {','.join(GRIDS)}, got {text!r}")
    return grids


def merged(parser, paths: list[Path]) -> tuple[dict, list[dict]]:
    """One run from its parts: the same model, steps and grids, no image twice."""
    parts, records = joined_parts(parser, paths, lambda p: [p["config"][k] for k in ("model", "steps", "grids")],
                                  "model, steps or grids", "name")
    config = dict(parts[0]["config"], images=len(records), merged=[str(path) for path in paths],
                  images_dir=sorted({p["config"]["images_dir"] for p in parts}))
    return config, records


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser, merges=True)
    parser.add_argument("--steps", type=parse_int_list, default=DEFAULT_STEPS, help="step counts T, e.g. 8,16,32,64")
    parser.add_argument("--grids", type=parse_grids, default=list(GRIDS),
                        help="time grids: uniform, model (the optimised one), or both")
    parser.add_argument("--skip", type=int, default=0, help="start after this many images (to split a run)")
    parser.add_argument("--merge", type=Path, nargs="+", help="join these parts' lossless_curve.json (no images read)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        if args.images is not None:
            parser.error("--merge reads no images: give the parts only")
        config, records = merged(parser, args.merge)
        out.mkdir(parents=True, exist_ok=True)
        print(write(out, config, records, f"{len(records)} image(s) from {len(args.merge)} parts"))
        return
    if args.images is None:
        parser.error("give an images folder (or --merge)")
    images = load_images(args.images, args.limit, args.quick, args.skip)
    codec = load_codec(args.model, args.device)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(images_dir=str(args.images), images=len(images), skip=args.skip, model=args.model,
                  steps=args.steps, grids=args.grids, quick=args.quick, machine=machine_description(args.device))
    records = []
    for name, image in tqdm(images, desc="images", dynamic_ncols=True):
        records.append(dict(name=name, **measure(codec, image, args.steps, args.grids)))
        text = write(out, config, records, f"{len(records)} of {len(images)} image(s) from {args.images}")
    print(text)


def write(out: Path, config: dict, records: list[dict], what: str) -> str:
    """Both files, after every image."""
    steps_list, grids = config["steps"], config["grids"]
    means = mean_record(records, steps_list, grids)["bound_bpd"]
    (out / "lossless_curve.json").write_text(json.dumps(dict(config=config, mean_bound_bpd=means, images=records),
                                                        indent=1))
    header = (f"# The lossless coder's bound (bits/dim) against T: {what}, model {config['model']}, "
              f"time grids: {', '.join(grids)} (model = the optimised one)")
    text = table(records, steps_list, grids, header)
    (out / "lossless_curve.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
