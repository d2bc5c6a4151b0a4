#!/usr/bin/env python3
"""What `diffcodec encode` writes by default against what `encode --mode lossless` writes.

    python benchmarks/full_file.py IMAGES_DIR [--model default|PATH] [--steps K]
        [--lossless-steps 16 | --no-lossless] [--limit N] [--skip N] [--quick] [--out results/]
    python benchmarks/full_file.py --merge part1/full_file.json part2/full_file.json --out all/

For every image: the default progressive file (K rate-placed layers, then the tail) and the
lossless-mode file (T steps), both as users get them (fallback coders allowed), each
decoded and checked exact. Reported per image and as means: bits per dimension of both
files (headers included) and their ratio; the lossy layers' bits per pixel; the tail's
coder (bits-back, predictive or zlib) and bits per dimension; encode and decode seconds of
the lossy part (the layers alone, encoding timed without the tail, decoding the prefix) and
of the whole file. Written to --out as ``full_file.json`` and ``full_file_table.md``.
``--no-lossless`` measures the default file alone (when only the progressive coder changed).
``--merge`` joins runs over different images (a long run done in parts, with ``--skip``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import joined_parts, load_images  # noqa: E402

from diffcodec import Codec  # noqa: E402
from diffcodec.coding import tail  # noqa: E402
from diffcodec.format.container import Mode, parse_file  # noqa: E402


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def measure(codec: Codec, image: np.ndarray, steps: int | None, lossless_steps: int | None) -> dict:
    dims = image.size
    tail_seconds = []
    encode_tail = tail.encode

    def timed_tail(*args, **kwargs):
        result, seconds = timed(encode_tail, *args, **kwargs)
        tail_seconds.append(seconds)
        return result

    tail.encode = timed_tail
    try:
        data, encode_s = timed(codec.encode, image, steps=steps)
    finally:
        tail.encode = encode_tail
    f = parse_file(data)
    lossy = f.header.lossy_steps
    lossy_bytes = f.header_size + sum(layer.size for layer in f.header.layers[:lossy])
    _, lossy_decode_s = timed(codec.decode, data, layers=lossy)
    decoded, decode_s = timed(codec.decode, data)
    record = dict(
        bpd=8 * len(data) / dims, exact=bool(np.array_equal(decoded, image)),
        lossy_layers=lossy, lossy_bpp=8 * lossy_bytes / (dims / 3), t_end=f.header.times[lossy] / 2**24,
        tail=str(Mode(f.header.tail_mode)), tail_bpd=8 * f.header.layers[-1].size / dims,
        encode_s=encode_s, lossy_encode_s=encode_s - sum(tail_seconds), decode_s=decode_s,
        lossy_decode_s=lossy_decode_s)
    if lossless_steps is None:
        return record
    lossless, lossless_encode_s = timed(codec.encode, image, steps=lossless_steps, mode="lossless")
    lossless_decoded, lossless_decode_s = timed(codec.decode, lossless)
    return dict(record, lossless_bpd=8 * len(lossless) / dims, ratio=len(data) / len(lossless),
                lossless_exact=bool(np.array_equal(lossless_decoded, image)),
                lossless_coder=str(parse_file(lossless).header.mode),
                lossless_encode_s=lossless_encode_s, lossless_decode_s=lossless_decode_s)


def table(records: list[dict], means: dict) -> str:
    columns = ["bpd", "lossless_bpd", "ratio", "lossy_bpp", "tail", "tail_bpd", "lossy_encode_s", "encode_s",
               "lossy_decode_s", "decode_s", "lossless_encode_s", "lossless_decode_s"]
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| image | " + " | ".join(columns) + " | exact |", "|---" * (len(columns) + 2) + "|"]
    for r in records + [dict(image="mean", **means)]:
        lines.append(f"| {r['image']} | " + " | ".join(fmt(r.get(c, "")) for c in columns)
                     + f" | {r.get('exact', '')} |")
    return "\n".join(lines) + "\n"


def summary(records: list[dict], lossless_steps: int | None) -> dict:
    numeric = [k for k, v in records[0].items() if isinstance(v, float)]
    means = {k: float(np.mean([r[k] for r in records])) for k in numeric}
    if lossless_steps is not None:
        means["ratio_of_means"] = means["bpd"] / means["lossless_bpd"]
    means["exact"] = all(r["exact"] and r.get("lossless_exact", True) for r in records)
    means["tails"] = {m: sum(r["tail"] == m for r in records) for m in sorted({r["tail"] for r in records})}
    return means


def write(out: Path, run: dict) -> None:
    (out / "full_file.json").write_text(json.dumps(run, indent=1))
    (out / "full_file_table.md").write_text(table(run["images"], run["means"]))


def merged(parser, paths: list[Path]) -> dict:
    """One run from its parts: the same model and steps, no image twice."""
    parts, records = joined_parts(parser, paths, lambda p: [p["model"], p["steps"], p["lossless_steps"]],
                                  "model or steps", "image")
    first = parts[0]
    return dict(model=first["model"], steps=first["steps"], skip=0, lossless_steps=first["lossless_steps"],
                merged=[str(path) for path in paths], images=records,
                means=summary(records, first["lossless_steps"]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("images", nargs="?")
    parser.add_argument("--merge", type=Path, nargs="+", help="join these parts' full_file.json (no images read)")
    parser.add_argument("--model", default="default")
    parser.add_argument("--steps", type=int, default=None, help="rate-placed layers (default: the codec's)")
    parser.add_argument("--lossless-steps", type=int, default=16)
    parser.add_argument("--no-lossless", action="store_true", help="the default file only")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--skip", type=int, default=0, help="start after this many images (to split a run)")
    parser.add_argument("--quick", action="store_true", help="two 64x64 crops: a smoke run")
    parser.add_argument("--out", default="benchmarks/results/full_file")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.merge:
        if args.images is not None:
            parser.error("--merge reads no images: give the parts only")
        run = merged(parser, args.merge)
        out.mkdir(parents=True, exist_ok=True)
        write(out, run)
        print(json.dumps(run["means"], indent=1))
        return 0
    if args.images is None:
        parser.error("give an images folder (or --merge)")
    codec = Codec(args.model)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    lossless_steps = None if args.no_lossless else args.lossless_steps
    images = load_images(args.images, args.limit, args.quick, args.skip)
    for name, image in images:
        records.append(dict(image=name, **measure(codec, image, args.steps, lossless_steps)))
        means = summary(records, lossless_steps)
        write(out, dict(model=args.model, steps=args.steps, skip=args.skip, lossless_steps=lossless_steps,
                        images=records, means=means))
        last = records[-1]
        against = f" vs {last['lossless_bpd']:.3f} (x{last['ratio']:.3f})" if "ratio" in last else ""
        print(f"{name}: {last['bpd']:.3f}{against} bits/dim, tail {last['tail']}, exact {last['exact']}", flush=True)
    print(json.dumps(means, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
