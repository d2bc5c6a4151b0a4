"""Helpers shared by the benchmark scripts: images, classical codecs, timers, tables (the
metrics come from diffcodec.metrics).

Everything here is plain numpy/torch/Pillow so that the figures can be recomputed and
checked without extra dependencies (matplotlib is needed for the plots only, and
JPEG-XL comes from the optional ``pillow-jxl-plugin``).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import diffcodec  # noqa: E402,F401  (before torch: it sets OpenMP's wait policy, which torch reads as it loads)
import torch  # noqa: E402
from diffcodec.codec import Codec  # noqa: E402
from diffcodec.images import list_images, read_rgb  # noqa: E402
from diffcodec.metrics import bd_rate, interpolate_at, ms_ssim, psnr  # noqa: E402,F401  (used by the scripts)
from diffcodec.train.data import center_crop  # noqa: E402,F401  (re-exported for the scripts)

QUICK_IMAGES = 2
QUICK_CROP = 64

# --------------------------------------------------------------------------------------
# Images and command lines
# --------------------------------------------------------------------------------------


def load_images(folder: str | Path, limit: int | None = None, quick: bool = False,
                skip: int = 0) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB uint8 array) of the folder's images, sorted by name: ``limit`` of them
    after the first ``skip`` (a part of a run), which are not read; an error exit when none are
    left (or ``skip`` is negative).

    ``quick``: the first two only, centre-cropped to 64x64, so a full run takes seconds.
    """
    if skip < 0:
        sys.exit("error: --skip must be 0 or more")
    paths = list_images(folder)
    limit = None if limit is None else skip + limit
    if quick:
        limit = QUICK_IMAGES if limit is None else min(limit, QUICK_IMAGES)
    if limit is not None:
        paths = paths[:limit]
    paths = paths[skip:]
    if not paths:
        sys.exit(f"error: no images in {folder} after skipping {skip}")
    images = [(p.name, read_rgb(p)) for p in paths]
    if quick:
        images = [(name, center_crop(rgb, QUICK_CROP)) for name, rgb in images]
    return images


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str = "results", merges: bool = False) -> None:
    """Arguments every benchmark script takes, spelled the same way (``merges``: the script
    can also join parts of a run instead of measuring, so IMAGES_DIR may be left out)."""
    parser.add_argument("images", metavar="IMAGES_DIR", nargs="?" if merges else None,
                        help="folder of test images (e.g. Kodak)")
    parser.add_argument("--model", default="default", help="registered model name or checkpoint path")
    parser.add_argument("--device", default="cpu", help="device for the network (cpu, cuda)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N images only")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_IMAGES} images, centre-cropped to {QUICK_CROP}x{QUICK_CROP}, few points")
    parser.add_argument("--out", default=out_default, help="output folder (created)")


def joined_parts(parser: argparse.ArgumentParser, paths: list[Path], settings: Callable[[dict], object],
                 what: str, name: str) -> tuple[list[dict], list[dict]]:
    """The parts of a run done over different images (their JSON files) and their image
    records, in order: ``settings(part)`` must agree between parts (else a usage error naming
    ``what``), and no image (``record[name]``) may be in two of them."""
    parts = [json.loads(path.read_text()) for path in paths]
    if len({json.dumps(settings(part)) for part in parts}) > 1:
        parser.error(f"the parts differ in {what}")
    records = [record for part in parts for record in part["images"]]
    if len({record[name] for record in records}) != len(records):
        parser.error("an image is in more than one part")
    return parts, records


def parse_int_list(text: str) -> list[int]:
    """'0,20' -> [0, 20] (for argparse)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 0:
        raise argparse.ArgumentTypeError(f"expected non-negative integers, got {text!r}")
    return values


def load_codec(model: str, device: str = "cpu", chunk_symbols: int | None = None) -> Codec:
    """A Codec for a registered name or checkpoint path (codec's default chunk size unless given)."""
    if chunk_symbols is None:
        return Codec(model, device=device)
    return Codec(model, device=device, chunk_symbols=chunk_symbols)


def megapixels(image: np.ndarray) -> float:
    return image.shape[0] * image.shape[1] / 1e6


# --------------------------------------------------------------------------------------
# Classical codecs through Pillow
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassicalCodec:
    """One Pillow format with a quality sweep; ``options(q)`` gives the save() arguments."""

    name: str
    format: str
    description: str
    qualities: tuple[float, ...]
    quick_qualities: tuple[float, ...]
    options: Callable[[float], dict] = field(repr=False)

    def sweep(self, quick: bool) -> tuple[float, ...]:
        return self.quick_qualities if quick else self.qualities


def _jxl_available() -> bool:
    try:
        import pillow_jxl  # noqa: F401  (registers the JXL format with Pillow)
    except ImportError:
        return False
    return True


def classical_codecs() -> tuple[list[ClassicalCodec], list[str]]:
    """The classical codecs this machine can run, and notes about those it cannot.

    Sweeps aim at roughly 0.05-2 bpp on photographs; JPEG cannot go much below
    0.15 bpp, and on tiny images every format's header dominates the rate.
    """
    from PIL import features

    codecs = [
        ClassicalCodec("JPEG", "JPEG", "libjpeg via Pillow, 4:2:0, optimized Huffman tables",
                       (2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), (5, 30, 70, 95),
                       lambda q: dict(quality=int(q), optimize=True)),
        ClassicalCodec("WebP", "WEBP", "libwebp lossy via Pillow, method 6",
                       (0, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), (0, 30, 70, 95),
                       lambda q: dict(quality=int(q), method=6)),
        ClassicalCodec("AVIF", "AVIF", "libavif via Pillow, 4:2:0, speed 6",
                       (2, 10, 20, 30, 40, 50, 60, 70, 80, 90), (10, 40, 70, 90),
                       lambda q: dict(quality=int(q), speed=6)),
        ClassicalCodec("JPEG 2000", "JPEG2000",
                       "OpenJPEG via Pillow, irreversible 9/7 wavelet, mct=1; quality = target bpp",
                       (0.05, 0.1, 0.15, 0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0), (0.1, 0.5, 1.0, 2.0),
                       # 'rates' are compression ratios relative to 24-bit RGB
                       lambda q: dict(irreversible=True, mct=1, quality_mode="rates", quality_layers=[24.0 / q])),
    ]
    notes = []
    available = [c for c in codecs if features.check({"JPEG": "jpg", "WEBP": "webp", "AVIF": "avif",
                                                        "JPEG2000": "jpg_2000"}[c.format])]
    for c in codecs:
        if c not in available:
            notes.append(f"{c.name} skipped: this Pillow build lacks it")
    if _jxl_available():
        available.append(ClassicalCodec("JPEG-XL", "JXL", "libjxl via pillow-jxl-plugin, effort 7",
                                        (2, 10, 20, 30, 40, 50, 60, 70, 80, 90, 95), (10, 40, 70, 95),
                                        lambda q: dict(quality=int(q), effort=7)))
    else:
        notes.append("JPEG-XL skipped: pillow-jxl-plugin is not installed (pip install pillow-jxl-plugin)")
    return available, notes


def run_classical(codec: ClassicalCodec, image: np.ndarray, quality: float) -> dict:
    """Encode in memory at one quality, decode, and measure; rate from the real byte count."""
    pil = Image.fromarray(image)
    buffer = io.BytesIO()
    start = time.perf_counter()
    pil.save(buffer, format=codec.format, **codec.options(quality))
    encode_seconds = time.perf_counter() - start
    data = buffer.getvalue()
    start = time.perf_counter()
    with Image.open(io.BytesIO(data)) as decoded_image:
        decoded = np.asarray(decoded_image.convert("RGB"))
    decode_seconds = time.perf_counter() - start
    decoded_ok = decoded.shape == image.shape and decoded.dtype == np.uint8
    height, width = image.shape[:2]
    return point(8 * len(data) / (height * width), image, decoded if decoded_ok else None,
                 encode_seconds, decode_seconds, quality=quality, bytes=len(data), round_trip_decoded=decoded_ok)


def point(bpp: float, original: np.ndarray, decoded: np.ndarray | None, encode_seconds: float,
          decode_seconds: float, **extra) -> dict:
    """One rate-distortion measurement of one image (metrics None when nothing decoded)."""
    return dict(bpp=bpp, psnr=psnr(original, decoded) if decoded is not None else None,
                ms_ssim=ms_ssim(original, decoded) if decoded is not None else None,
                encoding_time=encode_seconds, decoding_time=decode_seconds, **extra)


# --------------------------------------------------------------------------------------
# Timing the network apart from the entropy coding
# --------------------------------------------------------------------------------------


class NetworkTimer:
    """Counts the seconds spent in ``codec.runner.predict`` (the network, tiling included)
    while active; the rest of an encode or decode is the entropy-coding side."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self.seconds = 0.0
        self.calls = 0

    def __enter__(self) -> "NetworkTimer":
        original = self.codec.runner.predict

        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - start
                self.calls += 1

        self.codec.runner.predict = timed  # instance attribute shadows the method
        return self

    def __exit__(self, *exc) -> None:
        del self.codec.runner.predict


def timed(function: Callable, *args, **kwargs):
    """(result, seconds) of one call."""
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


# --------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------


def slug(name: str) -> str:
    """A file name for a method name: 'diffcodec (completion 20)' -> 'diffcodec-completion-20'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def finite_or_none(value):
    """JSON has no inf/nan: write them as null, recursively."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(finite_or_none(data), indent=1, allow_nan=False) + "\n")


def write_results(out: Path, name: str, data: dict, table: str) -> None:
    """``out/name.json`` (everything measured) and ``out/name.md`` (the table), and the table
    printed."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", data)
    (out / f"{name}.md").write_text(table)
    print(table)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub markdown table; None cells print as an en dash."""
    def cell(v):
        return "–" if v is None else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine_description(device: str) -> str:
    import platform

    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))
    name = platform.processor() or platform.machine()
    try:  # the CPU's model where Linux says it: what another machine's results need to name
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu ({torch.get_num_threads()} threads, {name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()})"
