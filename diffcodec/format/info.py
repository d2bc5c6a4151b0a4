"""What ``diffcodec info`` reports about a .dfc file, read without a model."""

from __future__ import annotations

from .container import ALPHA_ZLIB, TIME_UNITS, DfcFile, Mode, parse_file


def _layer_label(f: DfcFile, index: int) -> str:
    h = f.header
    if h.mode == Mode.LOSSLESS:
        grid = "optimised" if h.times else "uniform"
        return f"bits-back, {h.steps} steps ({grid} grid), {len(h.bands)} bands"
    if h.mode == Mode.STORED:
        return "zlib pixels"
    if h.mode == Mode.PREDICTIVE:
        return "predictive pixel coder"
    if index < h.lossy_steps:
        return f"{h.times[index] / TIME_UNITS:.4f}->{h.times[index + 1] / TIME_UNITS:.4f} (rate-placed)"
    if h.tail_mode == Mode.LOSSLESS:
        return (f"tail: bits-back {h.times[index] / TIME_UNITS:.4f}->0, {h.steps - index} steps, "
                f"{len(h.bands)} bands (exact)")
    return f"tail: {'predictive pixel coder' if h.tail_mode == Mode.PREDICTIVE else 'zlib pixels'} (exact)"


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
        state = "complete" if f.layer_complete(index) else (
            f"partial ({len(present)}/{len(info.chunk_lengths)} chunks)" if present else "missing")
        layers.append({
            "layer": index + 1, "step": _layer_label(f, index), "bytes": size, "full_bytes": info.size,
            "bpp": 8 * size / pixels, "cumulative_bpp": 8 * cumulative / pixels,
            "estimated_bytes": info.estimated_bits / 8, "crc32": f"{info.crc:08x}",
            "symbols": [info.low, info.high], "state": state,
        })
    return {
        "mode": str(h.mode), "model_name": h.model_name, "model_hash": h.model_hash.hex(),
        "height": h.height, "width": h.width, "channels": h.channels, "steps": h.steps,
        "seed": h.seed, "tile": h.tile, "alpha": "zlib" if h.alpha_kind == ALPHA_ZLIB else None,
        "header_bytes": f.header_size, "file_bytes": len(data), "file_bpp": 8 * len(data) / pixels,
        "complete_layers": f.complete_layers(), "layers": layers, "bands": h.bands,
        "chain_params": h.chain_params, "rate_placed_layers": h.lossy_steps,
        "times": [t / TIME_UNITS for t in h.times], "blends": h.blends,
        "tail": str(Mode(h.tail_mode)) if h.mode == Mode.PROGRESSIVE and not h.lossy else None,
        "detail_index": h.detail_index if h.mode == Mode.PROGRESSIVE else None,  # coding/detail.py
        "bits_per_dim": 8 * len(data) / (pixels * h.channels),
    }
