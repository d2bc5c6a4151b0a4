"""Hostile input: dependency errors and panics, decode limits, bounded decompression, model
files, the input policy, and a bounded run of the fuzz harness (benchmarks/fuzz.py)."""

import dataclasses
import json
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import synthetic_image
from diffcodec.codec import Codec, DecodeLimits
from diffcodec.errors import CheckpointError, DiffcodecError, ImageReadError, LimitError, boundary
from diffcodec.format.container import ALPHA_ZLIB, pack_file, parse_file
from diffcodec.images import read_image, restore
from diffcodec.model.checkpoint import load_model, save_model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def codec(trained_tiny_model):
    return Codec(trained_tiny_model, tile=64, chunk_symbols=512)


def _panic():
    """A real Rust panic from constriction: a BaseException, not an Exception."""
    import constriction

    model = constriction.stream.model.QuantizedGaussian(0, 0)
    constriction.stream.queue.RangeEncoder().encode(np.zeros(1, np.int32), model, np.zeros(1), np.ones(1))


def test_panics_and_dependency_errors_become_diffcodec_errors():
    with pytest.raises(BaseException) as raw:
        _panic()
    assert not isinstance(raw.value, Exception)  # why `except Exception` would not do
    for failure in (_panic, lambda: zlib.decompress(b"junk")):
        with pytest.raises(DiffcodecError, match="does not decode here: a decoder rejects its data"):
            with boundary("decoding"):
                failure()
    for failure in (_panic, lambda: zlib.decompress(b"junk"), lambda: torch.zeros(2) @ torch.zeros(3)):
        with pytest.raises(DiffcodecError, match="encoding failed"):
            with boundary("encoding"):
                failure()
    with pytest.raises(DiffcodecError, match="decoding failed: RuntimeError"):  # not the file's fault, maybe
        with boundary("decoding"):
            torch.zeros(2) @ torch.zeros(3)
    with pytest.raises(KeyboardInterrupt):
        with boundary("decoding"):
            raise KeyboardInterrupt


def test_a_decoder_failure_inside_the_codec_is_a_diffcodec_error(codec, monkeypatch):
    data = codec.encode(synthetic_image(12, 10, "shapes"), steps=1)
    from diffcodec.coding import progressive

    monkeypatch.setattr(progressive, "walk", lambda *a, **k: _panic())
    with pytest.raises(DiffcodecError, match="does not decode here") as raised:
        codec.decode(data)
    assert type(raised.value.__cause__).__name__ == "PanicException"  # kept for whoever debugs it


def test_decode_limits_refuse_before_any_work(codec, trained_tiny_model):
    image = synthetic_image(21, 34, "shapes")
    data = codec.encode(image, steps=1)
    small = Codec(trained_tiny_model, tile=64, limits=DecodeLimits(max_pixels=700))
    with pytest.raises(LimitError, match="more than the 700 pixels"):
        small.decode(data)
    with pytest.raises(LimitError, match="more work"):
        Codec(trained_tiny_model, tile=64, limits=DecodeLimits(max_work=21 * 34)).decode(data)
    unlimited = Codec(trained_tiny_model, tile=64, limits=DecodeLimits(None, None))
    assert np.array_equal(unlimited.decode(data), image)


def test_alpha_decompression_is_bounded():
    rgb = np.zeros((4, 5, 3), np.uint8)
    bomb = zlib.compress(bytes(50_000_000), 9)  # 50 MB from 49 kB: never inflated past 20 bytes
    with pytest.raises(DiffcodecError, match="alpha channel has the wrong size"):
        restore(rgb, 4, ALPHA_ZLIB, bomb)
    with pytest.raises(DiffcodecError, match="alpha channel has the wrong size"):
        restore(rgb, 4, ALPHA_ZLIB, zlib.compress(bytes(20)) + b"tail")
    assert restore(rgb, 4, ALPHA_ZLIB, zlib.compress(bytes(range(20)))).shape == (4, 5, 4)


def test_a_forged_file_cannot_reach_constriction_with_a_bad_range(codec):
    """A self-consistent file (every check recomputed) with an empty symbol range is refused
    by validation, not by a panic inside the entropy coder."""
    data = codec.encode(synthetic_image(12, 10, "shapes"), steps=1)
    f = parse_file(data)
    layers = [dataclasses.replace(layer) for layer in f.header.layers]
    layers[0].low = layers[0].high
    with pytest.raises(DiffcodecError, match="symbol range"):
        pack_file(dataclasses.replace(f.header, layers=layers), f.chunks)


# -- model files -------------------------------------------------------------------------------
def _checkpoint(tiny_model, tmp_path, change):
    path = tmp_path / "m.pt"
    save_model(tiny_model, path)
    data = torch.load(path, weights_only=True)
    change(data)
    torch.save(data, path)
    return path


@pytest.mark.parametrize("change, message", [
    (lambda d: d.update(metadata=[1, 2]), "metadata"),
    (lambda d: d.update(metadata="{not json"), "metadata"),
    (lambda d: d["state_dict"].update({"network.stem.weight": "not a tensor"}), "table of tensors"),
    (lambda d: d["state_dict"].update({7: torch.zeros(1)}), "table of tensors"),
    (lambda d: d["config"].update(level_channels=[-1, 8]), "invalid config field level_channels"),
    (lambda d: d["config"].update(patch_size="2"), "invalid config field patch_size"),
    (lambda d: d["config"].update(progressive_heads=1), "invalid config field progressive_heads"),
    (lambda d: d["config"].update(gamma_min=float("nan")), "invalid config field gamma_min"),
    (lambda d: d["config"].update(level_channels=[4096] * 8), "too large"),
    (lambda d: d["config"].update(blocks_per_level=2), "do not fit"),
    (lambda d: d.update(config=["x"]), "no model configuration"),
    (lambda d: d.update(hash=5), "do not match the stored hash"),
])
def test_hostile_model_files_are_refused(tiny_model, tmp_path, change, message):
    path = _checkpoint(tiny_model, tmp_path, change)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_a_model_file_with_code_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))

    path = tmp_path / "evil.pt"
    torch.save({"format": "diffcodec-model", "x": Evil()}, path, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_model(path)


# -- input policy --------------------------------------------------------------------------------
def _png16(path, color_type, channels):
    import struct

    height, width = 3, 4
    raw = b"".join(b"\x00" + np.arange(width * channels, dtype=">u2").tobytes() for _ in range(height))

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("color_type, channels", [(2, 3), (6, 4), (0, 1), (4, 2)])
def test_sixteen_bit_images_are_refused_not_reduced(tmp_path, color_type, channels):
    path = _png16(tmp_path / "deep.png", color_type, channels)
    with pytest.raises(ImageReadError, match="more than 8 bits"):
        read_image(path)


def test_animated_images_are_refused(tmp_path):
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (0, 255)]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.raises(ImageReadError, match="2 frames"):
        read_image(tmp_path / "a.gif")
    frames[0].save(tmp_path / "one.gif")
    assert read_image(tmp_path / "one.gif").shape == (4, 4, 3)


# -- the fuzz harness ------------------------------------------------------------------------------
def test_bounded_fuzz_run(trained_tiny_model, tmp_path):
    """Every damage family on both modes: no traceback, panic, hang, memory blow-up or silent
    wrong image (benchmarks/fuzz.py runs the long version)."""
    sys.path.insert(0, str(REPO))
    from benchmarks import fuzz

    path = tmp_path / "model.pt"
    save_model(trained_tiny_model, path)
    report = fuzz.run(str(path), files=500, seed=3, log=lambda m: None, hang_factor=5)  # CI machines are noisy
    assert report["bad"] == 0, json.dumps(report["examples"], default=str)
    assert set(report["counts"]) == set(fuzz.FAMILIES)
    assert all(sum(c.values()) == 50 for c in report["counts"].values())
    totals = report["totals"]
    assert totals["refused"] > 300 and totals["prefix"] > 10 and totals.get("forged-decoded", 0) > 0
    assert report["counts"]["channels"].get("exact", 0) > 5  # forged layouts judged against the clean pixels


def test_the_top_level_decode_warns_of_a_prefix(codec, trained_tiny_model):
    import diffcodec

    data = codec.encode(synthetic_image(12, 10, "shapes"), steps=1)
    with pytest.warns(diffcodec.PrefixWarning, match="a preview from a prefix"):
        diffcodec.decode(data[:-4], model=trained_tiny_model)
    result = diffcodec.decode_result(data[:-4], model=trained_tiny_model)
    assert not result.exact and result.bytes_used < result.bytes_total == len(data)


def _forged(data: bytes, **fields) -> bytes:
    """The file with header fields changed and every check recomputed, as a hostile writer
    would make it (a different, self-consistent file)."""
    from diffcodec.format import container

    header, size, _ = container._read_header(data)
    forged = dataclasses.replace(header, **fields)
    key = zlib.crc32(container._pack_core(forged))
    offset = size
    for layer in forged.layers:
        checks = []
        for length in layer.chunk_lengths:
            checks.append(zlib.crc32(data[offset : offset + length], key))
            offset += length
        layer.chunk_checks = checks
    return container.pack_header(forged) + data[size:]


def test_a_grey_file_must_decode_to_grey(codec):
    """A colour file whose header claims one channel is not decoded to its first channel and
    called exact."""
    image = synthetic_image(16, 20, "shapes")
    data = codec.encode(image, steps=1)
    with pytest.raises(DiffcodecError, match="a grey image decodes to colour"):
        codec.decode(_forged(data, channels=1))
    grey = synthetic_image(16, 20, "shapes", channels=1)[:, :, 0]
    assert np.array_equal(codec.decode(codec.encode(grey, steps=1)), grey)


def test_budgets_must_be_finite_numbers(codec):
    import diffcodec

    data = codec.encode(synthetic_image(16, 20, "shapes"), steps=1)
    for bad in (float("inf"), float("nan"), -1.0, 0.0, "1"):
        with pytest.raises(DiffcodecError, match="bpp must be a positive finite number"):
            diffcodec.truncate(data, bpp=bad)
    for name, bad in (("layers", -1), ("layers", 1.5), ("max_bytes", 0)):
        with pytest.raises(DiffcodecError, match=f"{name} must be a whole number"):
            diffcodec.truncate(data, **{name: bad})
    assert diffcodec.truncate(data, bpp=1e308) == data  # a huge budget: the whole file
    with pytest.raises(DiffcodecError, match="completion steps must be"):
        codec.decode(data, completion_steps=10**6)


def test_completion_steps_count_in_the_work_limit(codec, trained_tiny_model):
    image = synthetic_image(16, 20, "shapes")
    data = codec.encode(image, steps=1)
    header = parse_file(data).header
    from diffcodec.codec import decode_work

    limited = Codec(trained_tiny_model, tile=64, limits=DecodeLimits(max_work=decode_work(header) + 16 * 20 * 5))
    limited.decode(data, layers=1, completion_steps=5)
    with pytest.raises(LimitError, match="6 completion steps"):
        limited.decode(data, layers=1, completion_steps=6)
