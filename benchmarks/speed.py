#!/usr/bin/env python3
"""Encode and decode speed of diffcodec per step count, network vs entropy coding.

    python benchmarks/speed.py IMAGES_DIR [--model default|PATH] [--steps 4,8,16]
        [--limit N] [--quick] [--out results/] [--device cpu|cuda]

For each step count every image is encoded and decoded in full (the decode is checked to
be exact). Time inside ``Codec.runner.predict`` counts as network time; the rest of the
call (dither and noise generation, the UQ recursion, entropy coding, container) counts as
coding time. One untimed warm-up encode/decode runs first. Writes ``speed.json`` and
``speed_table.md`` to --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (  # noqa: E402
    NetworkTimer, add_common_arguments, center_crop, load_codec, load_images, machine_description,
    markdown_table, megapixels, parse_int_list, timed, write_json,
)


def measure(codec, image: np.ndarray, steps: int) -> dict:
    """Seconds of one full encode and decode, each split into network and coding time."""
    with NetworkTimer(codec) as network:
        data, encode_seconds = timed(codec.encode, image, steps=steps, seed=0)
    encode_network = network.seconds
    with NetworkTimer(codec) as network:
        decoded, decode_seconds = timed(codec.decode, data)
    return dict(bytes=len(data), bpp=8 * len(data) / (image.shape[0] * image.shape[1]),
                lossless=bool(np.array_equal(decoded, image)),
                encode_seconds=encode_seconds, encode_network_seconds=encode_network,
                encode_coding_seconds=encode_seconds - encode_network,
                decode_seconds=decode_seconds, decode_network_seconds=network.seconds,
                decode_coding_seconds=decode_seconds - network.seconds, network_calls=network.calls)


def summarize(runs: list[dict], total_megapixels: float) -> dict:
    """Totals over the images and megapixels per second of the whole set."""
    summary = {key: float(sum(r[key] for r in runs)) for key in runs[0] if key.endswith("seconds")}
    summary["encode_megapixels_per_s"] = total_megapixels / summary["encode_seconds"]
    summary["decode_megapixels_per_s"] = total_megapixels / summary["decode_seconds"]
    summary["mean_bpp"] = float(np.mean([r["bpp"] for r in runs]))
    summary["all_lossless"] = all(r["lossless"] for r in runs)
    return summary


def speed_table(results: dict, header: str) -> str:
    def share(part, whole):
        return f"{part:.3f} ({100 * part / whole:.0f}%)" if whole > 0 else f"{part:.3f}"

    rows = []
    for steps, s in results.items():
        rows.append([steps, f"{s['encode_seconds']:.3f}", share(s["encode_network_seconds"], s["encode_seconds"]),
                     share(s["encode_coding_seconds"], s["encode_seconds"]), f"{s['encode_megapixels_per_s']:.4f}",
                     f"{s['decode_seconds']:.3f}", share(s["decode_network_seconds"], s["decode_seconds"]),
                     share(s["decode_coding_seconds"], s["decode_seconds"]), f"{s['decode_megapixels_per_s']:.4f}",
                     f"{s['mean_bpp']:.3f}", s["all_lossless"]])
    headers = ["steps", "encode s", "network s", "coding s", "encode MP/s",
               "decode s", "network s", "coding s", "decode MP/s", "bpp", "exact"]
    return f"{header}\n\nSeconds are totals over all images.\n\n{markdown_table(headers, rows)}\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser)
    parser.add_argument("--steps", type=parse_int_list, default=[4, 8, 16], help="comma-separated step counts")
    args = parser.parse_args(argv)

    images = load_images(args.images, args.limit, args.quick)
    codec = load_codec(args.model, args.device)
    warm = center_crop(images[0][1], 32)
    codec.decode(codec.encode(warm, steps=1))  # first-call overheads stay out of the figures
    total_megapixels = sum(megapixels(image) for _, image in images)

    per_image, results = {}, {}
    for steps in tqdm(args.steps, desc="step counts", dynamic_ncols=True):
        runs = [measure(codec, image, steps)
                for _, image in tqdm(images, desc=f"{steps} steps", leave=False, dynamic_ncols=True)]
        per_image[steps] = [dict(name=name, **run) for (name, _), run in zip(images, runs)]
        results[steps] = summarize(runs, total_megapixels)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    machine = machine_description(args.device)
    write_json(out / "speed.json", dict(
        model=args.model, device=args.device, machine=machine, images=len(images), megapixels=total_megapixels,
        quick=args.quick, results={str(k): v for k, v in results.items()},
        per_image={str(k): v for k, v in per_image.items()}))
    header = (f"# Speed: {len(images)} image(s) ({total_megapixels:.3f} MP) from {args.images}"
              f"{' (quick: centre crops)' if args.quick else ''}, model {args.model}, {machine}")
    table = speed_table(results, header)
    (out / "speed_table.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
