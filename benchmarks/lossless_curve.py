#!/usr/bin/env python3
"""The lossless coder's bound against the number of steps T, on the uniform and on the
model's optimised time grid.

    python benchmarks/lossless_curve.py IMAGES_DIR [--model default|PATH] [--steps 8,16,32,64]
        [--limit N] [--quick] [--out results/]

For every image, T and grid: the T-step NELBO of the model the lossless coder uses
(Codec.lossless_bound: calibrated reverse variances, all T steps, one noise sample each),
which is what a lossless file of that T and grid costs up to the coder's overhead; files
themselves (encode, decode, exactness, file / bound) are benchmarks/lossless.py's job, at
a few T. Measuring bounds, not files, makes the full curve affordable on a CPU: one
network pass per step over the image, no bands. Written to --out after every image:
``lossless_curve.json`` and ``lossless_curve.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import (add_common_arguments, load_codec, load_images, machine_description,  # noqa: E402
                    parse_int_list)

DEFAULT_STEPS = [8, 16, 32, 64]
GRIDS = ("uniform", "model")


def measure(codec, image, steps_list: list[int]) -> dict:
    """{grid: {T: bound bits/dim}} and the seconds each bound took."""
    bounds, seconds = {grid: {} for grid in GRIDS}, {grid: {} for grid in GRIDS}
    for grid in GRIDS:
        for steps in steps_list:
            start = time.perf_counter()
            bounds[grid][str(steps)] = codec.lossless_bound(image, steps, uniform_grid=grid == "uniform")["total"]
            seconds[grid][str(steps)] = time.perf_counter() - start
    return dict(bound_bpd=bounds, seconds=seconds)


def table(records: list[dict], steps_list: list[int], header: str) -> str:
    columns = [f"{grid} T={t}" for grid in GRIDS for t in steps_list]
    lines = [header, "", "| image | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for record in records + [mean_record(records, steps_list)]:
        cells = [f"{record['bound_bpd'][grid][str(t)]:.3f}" for grid in GRIDS for t in steps_list]
        lines.append(f"| {record['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def mean_record(records: list[dict], steps_list: list[int]) -> dict:
    return dict(name=f"**mean ({len(records)})**", bound_bpd={
        grid: {str(t): sum(r["bound_bpd"][grid][str(t)] for r in records) / len(records) for t in steps_list}
        for grid in GRIDS})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_arguments(parser)
    parser.add_argument("--steps", type=parse_int_list, default=DEFAULT_STEPS, help="step counts T, e.g. 8,16,32,64")
    args = parser.parse_args(argv)
    images = load_images(args.images, args.limit, args.quick)
    if not images:
        parser.error(f"no images found in {args.images}")
    codec = load_codec(args.model, args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    config = dict(images_dir=str(args.images), images=len(images), model=args.model, steps=args.steps,
                  quick=args.quick, machine=machine_description(args.device))
    records = []
    for name, image in tqdm(images, desc="images", dynamic_ncols=True):
        records.append(dict(name=name, **measure(codec, image, args.steps)))
        header = (f"# The lossless coder's bound (bits/dim) against T: {len(records)} of {len(images)} image(s) "
                  f"from {args.images}, model {args.model}, uniform and optimised time grid")
        text = write(out, config, records, args.steps, header)  # after every image
    print(text)


def write(out: Path, config: dict, records: list[dict], steps_list: list[int], header: str) -> str:
    means = mean_record(records, steps_list)["bound_bpd"]
    (out / "lossless_curve.json").write_text(json.dumps(dict(config=config, mean_bound_bpd=means, images=records),
                                                        indent=1))
    text = table(records, steps_list, header)
    (out / "lossless_curve.md").write_text(text)
    return text


if __name__ == "__main__":
    main()
