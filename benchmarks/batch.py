#!/usr/bin/env python3
"""A folder in one command against one command per image: ``diffcodec encode DIR -o OUT``
loads the model once; N separate ``diffcodec encode IMG -o OUT/IMG.dfc`` commands each
start Python and load it again. Both write the same bytes (checked).

    python benchmarks/batch.py IMAGES_DIR [--bpp 0.25] [--model default|PATH] [--limit N]
        [--out results/batch]

Every file gets the same size target (``--bpp``: it keeps the run short, and the per-image
overhead is what is measured). Writes ``batch.json`` and ``batch.md`` to --out, with the folder run's
summary line.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import list_images, markdown_table, write_results  # noqa: E402


def diffcodec(*args) -> tuple[subprocess.CompletedProcess, float]:
    """One ``diffcodec`` command in a fresh process, and its wall-clock seconds."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "diffcodec.cli", *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"diffcodec {' '.join(map(str, args))} failed: {done.stderr.strip()[-500:]}")
    return done, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path)
    parser.add_argument("--bpp", default="0.25", help="the size target of every file (encode --bpp)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path, default=Path("results/batch"))
    args = parser.parse_args()
    paths = list_images(args.images)[: args.limit]
    if not paths:
        parser.error(f"no images in {args.images}")
    options = ("--bpp", args.bpp, "--model", args.model)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        folder = work / "images"
        folder.mkdir()
        for path in paths:  # the folder run sees exactly the images the separate runs do
            shutil.copy(path, folder / path.name)
        done, folder_seconds = diffcodec("encode", folder, "-o", work / "folder", *options)
        summary = done.stderr.strip().splitlines()[-1]
        (work / "single").mkdir()
        single_seconds = []
        for path in paths:
            _, seconds = diffcodec("encode", path, "-o", work / "single" / f"{path.stem}.dfc", "-q", *options)
            single_seconds.append(seconds)
            print(f"{path.name}: {seconds:.1f} s", flush=True)
        same = all((work / "folder" / f"{p.stem}.dfc").read_bytes() == (work / "single" / f"{p.stem}.dfc").read_bytes()
                   for p in paths)
    count = len(paths)
    result = dict(images=count, bpp=float(args.bpp), model=args.model, folder_seconds=folder_seconds,
                  single_seconds=single_seconds, single_total_seconds=sum(single_seconds), same_bytes=same,
                  folder_summary=summary)
    table = markdown_table(["run", "commands", "seconds", "seconds per image"], [
        ["encode DIR -o OUT", 1, f"{folder_seconds:.1f}", f"{folder_seconds / count:.2f}"],
        ["encode IMG -o OUT/IMG.dfc, each", count, f"{sum(single_seconds):.1f}", f"{sum(single_seconds) / count:.2f}"],
    ])
    write_results(args.out, "batch", result, f"{table}\n\nSame bytes: {same}. The folder run's summary: `{summary}`\n")


if __name__ == "__main__":
    main()
