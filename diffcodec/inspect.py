"""Reading a .dfc file without a model: what `info` prints and where `truncate` cuts."""

from __future__ import annotations

from .container import ALPHA_ZLIB, parse_file
from .errors import DiffcodecError


def describe(data: bytes) -> dict:
    """Header fields and, per layer, bytes present, bpp, cumulative bpp and the model's estimate."""
    f = parse_file(data)
    h = f.header
    pixels = h.height * h.width
    cumulative = f.header_size
    layers = []
    for index, (info, present) in enumerate(zip(h.layers, f.chunks)):
        size = sum(len(c) for c in present)
        cumulative += size
        if h.mode == "lossless":
            step = f"bits-back, {h.steps} steps, {len(h.bands)} bands"
        elif h.mode == "stored":
            step = "zlib pixels"
        elif index < h.steps:
            step = f"{(h.steps - index) / h.steps:.3f}->{(h.steps - index - 1) / h.steps:.3f}"
        else:
            step = "pixels"
        state = "complete" if len(present) == len(info.chunk_lengths) else (
            f"partial ({len(present)}/{len(info.chunk_lengths)} chunks)" if present else "missing")
        layers.append({
            "layer": index + 1, "step": step, "bytes": size, "full_bytes": info.size,
            "bpp": 8 * size / pixels, "cumulative_bpp": 8 * cumulative / pixels,
            "estimated_bytes": info.estimated_bits / 8, "crc32": f"{info.crc:08x}",
            "symbols": [info.low, info.high], "state": state,
        })
    return {
        "mode": h.mode, "model_name": h.model_name, "model_hash": h.model_hash.hex(),
        "height": h.height, "width": h.width, "channels": h.channels, "steps": h.steps,
        "seed": h.seed, "tile": h.tile, "alpha": "zlib" if h.alpha_kind == ALPHA_ZLIB else None,
        "header_bytes": f.header_size, "file_bytes": len(data), "file_bpp": 8 * len(data) / pixels,
        "complete_layers": f.complete_layers(), "layers": layers, "bands": h.bands,
        "chain_scales": h.chain_scales,
        "bits_per_dim": 8 * len(data) / (pixels * h.channels),
    }


def truncation_point(data: bytes, layers: int | None = None, max_bytes: int | None = None) -> int:
    """Byte length of the longest prefix with at most ``layers`` layers / ``max_bytes`` bytes
    that ends on a chunk boundary (a cut inside a chunk would only carry dead bytes)."""
    f = parse_file(data)
    if max_bytes is not None and max_bytes < f.header_size:
        raise DiffcodecError(f"a budget of {max_bytes} bytes is smaller than the header ({f.header_size} bytes)")
    cut = f.header_size
    for index, present in enumerate(f.chunks):
        if layers is not None and index >= layers:
            break
        for chunk in present:
            if max_bytes is not None and cut + len(chunk) > max_bytes:
                return cut
            cut += len(chunk)
    return cut
