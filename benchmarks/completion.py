#!/usr/bin/env python3
"""What generative completion gives at each layer of the default file: the denoised
estimate against ``decode --layers K --steps N`` for a few N.

    python benchmarks/completion.py IMAGES_DIR [--steps 10,50] [--crop 256] [--limit N] [--skip N]
        [--model default|PATH] [--out results/completion] [--sheet SHEET.webp]
    python benchmarks/completion.py --merge PART/completion.json... --out results/completion

For each image (centre-cropped to --crop, 0 for the whole image) the default file is
encoded once; after each of its step layers the estimate and every completion are
measured: PSNR, MS-SSIM, per-channel mean (its distance from the original's) and
standard deviation (against the original's), the high-frequency energy ratio (energy of
the image minus its 5-point local mean, over the original's: 1 is as sharp as the
original, below 1 smoother, above 1 grainier), and seconds. Writes ``completion.json`` and ``completion.md`` (means over images; the energy
ratio's geometric mean, as a smooth original makes any grain a large ratio, and how many
images keep it within 0.7-1.3) to --out; ``--merge`` joins the parts of a run split with
--skip (no image twice, the same model and crop). ``--sheet`` draws the first image's
decodes: a row per layer, the original, the estimate and each completion.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    center_crop, load_codec, load_images, markdown_table, parse_int_list, timed, write_results,
)
from diffcodec.coding import detail  # noqa: E402
from diffcodec.format import parse_file  # noqa: E402
from diffcodec.metrics import ms_ssim, psnr  # noqa: E402
from diffcodec.sheet import contact_sheet  # noqa: E402


def describe(original: np.ndarray, image: np.ndarray, seconds: float) -> dict:
    return dict(psnr=psnr(original, image), ms_ssim=ms_ssim(original, image),
                std=[float(image[..., c].std()) for c in range(3)],
                std_ratio=[float(image[..., c].std() / max(original[..., c].std(), 1e-9)) for c in range(3)],
                mean_shift=[float(image[..., c].mean() - original[..., c].mean()) for c in range(3)],
                high_frequency=detail.energy(image) / max(detail.energy(original), 1e-9),
                seconds=seconds)


def measure(codec, name: str, image: np.ndarray, step_counts: list[int], cells: list | None = None) -> list[dict]:
    """The rows of one image; with ``cells``, (image, caption) of every decode appended to it."""
    data = codec.encode(image)
    layers = parse_file(data).header.lossy_steps
    rows = []
    for layer in range(1, layers + 1):
        if cells is not None:
            cells.append((image, "original"))
        for steps in [0, *step_counts]:
            decoded, seconds = timed(codec.decode, data, layers=layer, completion_steps=steps)
            rows.append(dict(image=name, layer=layer, steps=steps, **describe(image, decoded, seconds)))
            if cells is not None:
                what = "estimate" if steps == 0 else f"{steps} steps"
                cells.append((decoded, f"layer {layer}, {what}, {rows[-1]['psnr']:.2f} dB"))
            print({k: v for k, v in rows[-1].items() if k not in ("std", "std_ratio", "mean_shift")}, flush=True)
    return rows


def summary(rows: list[dict]) -> str:
    table = []
    for layer, steps in sorted({(r["layer"], r["steps"]) for r in rows}):
        mine = [r for r in rows if r["layer"] == layer and r["steps"] == steps]
        ratio = np.mean([r["std_ratio"] for r in mine], axis=0)
        shift = np.mean([np.abs(r.get("mean_shift", [np.nan] * 3)) for r in mine], axis=0)  # older runs lack it
        energy = np.exp(np.mean([np.log(max(r["high_frequency"], 1e-6)) for r in mine]))  # 0: a flat decode
        table.append([layer, "estimate" if steps == 0 else steps, len(mine),
                      f"{np.mean([r['psnr'] for r in mine]):.2f}", f"{np.mean([r['ms_ssim'] for r in mine]):.4f}",
                      " / ".join(f"{v:.2f}" for v in ratio), " / ".join(f"{v:.1f}" for v in shift), f"{energy:.2f}",
                      sum(0.7 <= r["high_frequency"] <= 1.3 for r in mine),
                      f"{np.mean([r['seconds'] for r in mine]):.1f}"])
    return markdown_table(["layer", "completion steps", "images", "PSNR dB", "MS-SSIM", "std / original's (R / G / B)",
                           "|mean - original's| (R / G / B)", "high-frequency energy / original's", "within 0.7-1.3", "decode s"], table)


def merged(parts: list[dict]) -> dict:
    """One run from its parts: the same model and crop, no image twice."""
    if len({(p["model"], p["crop"]) for p in parts}) > 1:
        sys.exit("error: these parts differ in model or crop")
    names = [r["image"] for p in parts for r in p["rows"] if r["layer"] == 1 and r["steps"] == 0]
    if len(names) != len(set(names)):
        sys.exit("error: an image is in more than one part")
    return dict(model=parts[0]["model"], crop=parts[0]["crop"], rows=[r for p in parts for r in p["rows"]])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=Path, nargs="?")
    parser.add_argument("--merge", type=Path, nargs="+", help="join these parts' completion.json (no images read)")
    parser.add_argument("--steps", type=parse_int_list, default=[10, 50], help="completion step counts")
    parser.add_argument("--crop", type=int, default=256, help="centre crop side (0: whole images)")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip", type=int, default=0, help="start after this many images (to split a run)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("results/completion"))
    parser.add_argument("--sheet", type=Path, help="a contact sheet of the first image's decodes")
    args = parser.parse_args()
    if args.merge:
        if args.images is not None:
            parser.error("--merge reads no images: give the parts only")
        data = merged([json.loads(path.read_text()) for path in args.merge])
        write_results(args.out, "completion", data, summary(data["rows"]))
        return
    if args.images is None:
        parser.error("give an images folder (or --merge)")
    images = [(name, center_crop(image, args.crop) if args.crop else image)
              for name, image in load_images(args.images, args.limit, skip=args.skip)]
    codec = load_codec(args.model)
    cells: list = []
    rows = [row for k, (name, image) in enumerate(images)
            for row in measure(codec, name, image, args.steps, cells if args.sheet and k == 0 else None)]
    if args.sheet:
        args.sheet.parent.mkdir(parents=True, exist_ok=True)
        contact_sheet([c[0] for c in cells], [c[1] for c in cells], columns=2 + len(args.steps)).save(args.sheet)
    write_results(args.out, "completion", dict(model=args.model, crop=args.crop, skip=args.skip, rows=rows), summary(rows))


if __name__ == "__main__":
    main()
