"""Helpers shared by the benchmark scripts: images, metrics, BD-rate, classical codecs, timers.

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
import torch
import torch.nn.functional as F
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffcodec.data import center_crop  # noqa: E402,F401  (re-exported for the scripts)
from diffcodec.codec import Codec  # noqa: E402
from diffcodec.images import list_images, read_image  # noqa: E402

QUICK_IMAGES = 2
QUICK_CROP = 64

# --------------------------------------------------------------------------------------
# Images and command lines
# --------------------------------------------------------------------------------------


def load_images(folder: str | Path, limit: int | None = None, quick: bool = False) -> list[tuple[str, np.ndarray]]:
    """(file name, RGB uint8 array) of the folder's images, sorted by name.

    ``quick``: the first two only, centre-cropped to 64x64, so a full run takes seconds.
    """
    paths = list_images(folder)
    if quick:
        limit = QUICK_IMAGES if limit is None else min(limit, QUICK_IMAGES)
    if limit is not None:
        paths = paths[:limit]
    images = [(p.name, read_image(p, "RGB")) for p in paths]
    if quick:
        images = [(name, center_crop(rgb, QUICK_CROP)) for name, rgb in images]
    return images


def add_common_arguments(parser: argparse.ArgumentParser, out_default: str = "results") -> None:
    """Arguments every benchmark script takes, spelled the same way."""
    parser.add_argument("images", metavar="IMAGES_DIR", help="folder of test images (e.g. Kodak)")
    parser.add_argument("--model", default="default", help="registered model name or checkpoint path")
    parser.add_argument("--device", default="cpu", help="device for the network (cpu, cuda)")
    parser.add_argument("--limit", type=int, default=None, metavar="N", help="use the first N images only")
    parser.add_argument("--quick", action="store_true",
                        help=f"first {QUICK_IMAGES} images, centre-cropped to {QUICK_CROP}x{QUICK_CROP}, few points")
    parser.add_argument("--out", default=out_default, help="output folder (created)")


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
# Metrics
# --------------------------------------------------------------------------------------


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    """RGB PSNR in dB for 8-bit images, from the MSE over all pixels and channels
    (not a mean of per-channel PSNRs); ``inf`` for identical images."""
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")
    mse = np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filter over (N, C, H, W), 'valid' borders as in Wang et al."""
    channels = x.shape[1]
    x = F.conv2d(x, window.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, window.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def _ssim_and_cs(x: torch.Tensor, y: torch.Tensor, window: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean SSIM and mean contrast-structure term, for data range 255."""
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = _blur(x, window), _blur(y, window)
    var_x = _blur(x * x, window) - mu_x**2
    var_y = _blur(y * y, window) - mu_y**2
    cov = _blur(x * y, window) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(dim=(0, 2, 3)), cs_map.mean(dim=(0, 2, 3))


def ms_ssim_scales(height: int, width: int, window: int = SSIM_WINDOW) -> int:
    """Number of scales used: the standard 5 when every scale is at least the window wide,
    fewer for small images (each scale halves the sides)."""
    side = min(height, width)
    scales = 1
    while scales < len(MS_SSIM_WEIGHTS) and side // 2**scales >= window:
        scales += 1
    return scales


def ms_ssim(reference: np.ndarray, test: np.ndarray) -> float:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) of two RGB uint8 images.

    Gaussian window 11, sigma 1.5, K1 = 0.01, K2 = 0.03, data range 255, 2x2 average
    pooling between scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333); negative
    contrast-structure terms are clamped to 0 before the weighted product. Each channel
    gets its own MS-SSIM and the result is their mean.

    Small images: 5 scales need a shorter side of at least 176 pixels (11 * 16). Below
    that only the first M scales whose sides are still >= 11 are used, with their weights
    renormalised to sum to 1 (M = 1 is plain SSIM); below 11 pixels the window shrinks to
    the largest odd size that fits. Figures on such images are comparable between methods
    of one run, not with 5-scale MS-SSIM published elsewhere.
    """
    if reference.shape != test.shape:
        raise ValueError(f"shape mismatch: {reference.shape} vs {test.shape}")

    def tensor(a: np.ndarray) -> torch.Tensor:
        a = a if a.ndim == 3 else a[:, :, None]
        return torch.from_numpy(a.astype(np.float64)).permute(2, 0, 1).unsqueeze(0)

    x, y = tensor(reference), tensor(test)
    height, width = x.shape[-2:]
    size = min(SSIM_WINDOW, min(height, width))
    size -= 1 - size % 2  # odd
    window = _gaussian_window(size, SSIM_SIGMA)
    scales = ms_ssim_scales(height, width, size)
    weights = torch.tensor(MS_SSIM_WEIGHTS[:scales], dtype=torch.float64)
    weights = weights / weights.sum()
    terms = []
    for scale in range(scales):
        ssim, cs = _ssim_and_cs(x, y, window)
        if scale == scales - 1:
            terms.append(torch.relu(ssim))
        else:
            terms.append(torch.relu(cs))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    per_channel = torch.prod(torch.stack(terms) ** weights[:, None], dim=0)
    return float(per_channel.mean())


# --------------------------------------------------------------------------------------
# Bjøntegaard delta rate
# --------------------------------------------------------------------------------------


def _pchip_slopes(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Fritsch-Carlson slopes of the monotone piecewise cubic Hermite interpolant (as SciPy's
    PchipInterpolator): no overshoot between rate points, unlike one global cubic."""
    h, delta = np.diff(x), np.diff(y) / np.diff(x)
    if len(x) == 2:
        return np.array([delta[0], delta[0]])
    d = np.zeros_like(y)
    w1, w2 = 2 * h[1:] + h[:-1], h[1:] + 2 * h[:-1]
    same_sign = delta[:-1] * delta[1:] > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        d[1:-1] = np.where(same_sign, (w1 + w2) / (w1 / delta[:-1] + w2 / delta[1:]), 0.0)

    def edge(h0, h1, m0, m1):
        s = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(s) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(s) > 3 * abs(m0):
            return 3 * m0
        return s

    d[0] = edge(h[0], h[1], delta[0], delta[1])
    d[-1] = edge(h[-1], h[-2], delta[-1], delta[-2])
    return d


def _pchip(x: np.ndarray, y: np.ndarray, at: np.ndarray) -> np.ndarray:
    d = _pchip_slopes(x, y)
    k = np.clip(np.searchsorted(x, at, side="right") - 1, 0, len(x) - 2)
    h = x[k + 1] - x[k]
    t = (at - x[k]) / h
    h00, h10, h01, h11 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t, -2 * t**3 + 3 * t**2, t**3 - t**2
    return h00 * y[k] + h10 * h * d[k] + h01 * y[k + 1] + h11 * h * d[k + 1]


def _rd_points(bpp, quality) -> tuple[np.ndarray, np.ndarray]:
    """(quality, log rate) of the curve's efficient points, by increasing quality.

    Non-finite points are dropped, and so is any point that another beats or matches in
    quality at no more rate (e.g. a generative prefix that scores below a shorter one), so
    that log(rate) is a function of quality, as the Bjøntegaard fit assumes.
    """
    r, q = np.asarray(bpp, dtype=np.float64), np.asarray(quality, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(q) & (r > 0)
    r, q = r[keep], q[keep]
    order = np.lexsort((-q, r))  # by rate, best quality first among equal rates
    r, q = r[order], q[order]
    efficient = q > np.maximum.accumulate(np.concatenate(([-np.inf], q[:-1])))
    return q[efficient], np.log(r[efficient])


def bd_rate(anchor_bpp, anchor_psnr, test_bpp, test_psnr, samples: int = 2001) -> float | None:
    """Bjøntegaard delta rate of ``test`` against ``anchor``, in percent (negative: the
    test method needs less rate for the same PSNR).

    log(rate) is interpolated as a function of PSNR with a monotone piecewise cubic
    (PCHIP, as in later revisions of VCEG-M33) and the difference is averaged over the
    PSNR interval both curves cover. None when a curve has fewer than two distinct points
    or the PSNR ranges do not overlap.
    """
    qa, la = _rd_points(anchor_bpp, anchor_psnr)
    qt, lt = _rd_points(test_bpp, test_psnr)
    if len(qa) < 2 or len(qt) < 2:
        return None
    low, high = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if not high > low:
        return None
    grid = np.linspace(low, high, samples)
    integrate = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has trapz only
    mean_diff = integrate(_pchip(qt, lt, grid) - _pchip(qa, la, grid), grid) / (high - low)
    return float((math.exp(mean_diff) - 1.0) * 100.0)


def interpolate_at(bpp, values, target: float) -> float | None:
    """Value of a rate curve at ``target`` bpp, linear in log(bpp); None outside its range."""
    r, v = np.asarray(bpp, dtype=np.float64), np.asarray(values, dtype=np.float64)
    keep = np.isfinite(r) & np.isfinite(v) & (r > 0)
    r, v = r[keep], v[keep]
    if len(r) == 0 or not r.min() <= target <= r.max():
        return None
    order = np.argsort(r, kind="stable")
    return float(np.interp(math.log(target), np.log(r[order]), v[order]))


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
    return f"cpu ({torch.get_num_threads()} threads, {platform.processor() or platform.machine()})"
