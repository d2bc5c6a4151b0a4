"""Encoding to a size against cutting a whole file to it: for each image and target,
``encode --bpp B`` (a lossy file whose last layer is placed to end at B) against
``truncate --bpp B`` of the whole default-style file with ``--steps`` layers, decoded at
the same budget. Both must stay within the target; the PSNR says which image is better.

    python benchmarks/size_target.py IMAGES_DIR --targets 0.25 0.5 1 --limit 3 --out results/size_target
    python benchmarks/size_target.py IMAGES_DIR --skip 12 --out part2   # a part of a run, then:
    python benchmarks/size_target.py --merge part1/size_target.json part2/size_target.json --out ...
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_codec, load_images, markdown_table, psnr, write_results  # noqa: E402
from diffcodec.format import parse_file  # noqa: E402


def measure(codec, name: str, image: np.ndarray, targets: list[float], steps: int) -> list[dict]:
    pixels = image.shape[0] * image.shape[1]
    whole = codec.encode(image, steps=steps)
    rows = []
    for bpp in targets:
        start = time.perf_counter()
        sized = codec.encode(image, bpp=bpp)
        seconds = time.perf_counter() - start
        cut = whole[: parse_file(whole).prefix(bpp=bpp).size]
        rows.append(dict(image=name, target=bpp, sized_bpp=8 * len(sized) / pixels,
                         sized_psnr=psnr(image, codec.decode(sized)), sized_seconds=seconds,
                         cut_bpp=8 * len(cut) / pixels, cut_psnr=psnr(image, codec.decode(cut, max_bytes=len(cut)))))
        print(rows[-1], flush=True)
    return rows


def summary(rows: list[dict], targets: list[float], steps: int) -> str:
    """Mean size and PSNR per target, of the sized files and of the cut whole files."""
    table = []
    for bpp in targets:
        mine = [r for r in rows if r["target"] == bpp]
        table.append([bpp, len(mine), f"{np.mean([r['sized_bpp'] for r in mine]):.4f}",
                      f"{max(r['sized_bpp'] for r in mine):.4f}", f"{np.mean([r['sized_psnr'] for r in mine]):.2f}",
                      f"{np.mean([r['cut_bpp'] for r in mine]):.4f}", f"{np.mean([r['cut_psnr'] for r in mine]):.2f}",
                      f"{np.mean([r['sized_seconds'] for r in mine]):.1f}"])
    return markdown_table(["target bpp", "images", "encode --bpp: mean bpp", "max bpp", "PSNR dB",
                           f"truncate of a {steps}-layer file: bpp", "PSNR dB", "encode s"], table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="?")
    parser.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    parser.add_argument("--steps", type=int, default=4, help="layers of the whole file that is cut")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip", type=int, default=0, help="start after this many images (to split a run)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--merge", type=Path, nargs="+", help="size_target.json files of parts of one run to join")
    parser.add_argument("--out", type=Path, default=Path("results/size_target"))
    args = parser.parse_args()
    if args.merge:
        parts = [json.loads(p.read_text()) for p in args.merge]
        if len({(part["model"], part["steps"]) for part in parts}) != 1:
            parser.error("the parts were run with different models or step counts")
        rows = [row for part in parts for row in part["rows"]]
        if len({(r["image"], r["target"]) for r in rows}) != len(rows):
            parser.error("the parts share images")
        args.model, args.steps = parts[0]["model"], parts[0]["steps"]
        args.targets = sorted({r["target"] for r in rows})
    elif args.images is None:
        parser.error("give an images folder, or --merge")
    else:
        codec = load_codec(args.model)
        images = load_images(args.images, args.limit, skip=args.skip)
        rows = [row for name, image in images for row in measure(codec, name, image, args.targets, args.steps)]
    write_results(args.out, "size_target", dict(model=args.model, steps=args.steps, rows=rows),
                  summary(rows, args.targets, args.steps))


if __name__ == "__main__":
    main()
