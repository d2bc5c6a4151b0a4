"""The .dfc container: exact header round trips, prefix cuts, clear errors for bad bytes."""

import hashlib
import zlib

import pytest

from diffcodec.errors import DiffcodecError
from diffcodec.format.container import (ContainerError, Header, LayerInfo, Mode, pack_file, pack_header,
                                        parse_file, parse_header)


def _header(**changes):
    layers = [LayerInfo(-3, 4, 0xDEADBEEF, 800, [40, 30]), LayerInfo(0, 255, 7, 2000, [100, 100, 50])]
    fields = dict(mode=Mode.PROGRESSIVE, model_name="tiny", model_hash=bytes(range(16)), height=5, width=6,
                  channels=4, steps=1, seed=2**63 + 5, tile=64, chunk_symbols=100, threads=2, alpha_kind=2,
                  alpha=zlib.compress(b"\x80" * 30), layers=layers, bands=[3, 2], chain_scales=[-7, 12],
                  time_grid="explicit", times=[1 << 24, 0], lossy_steps=1, blends=[16])
    return Header(**{**fields, **changes})


def _file(header):
    chunks = [[bytes([n]) * length for length in layer.chunk_lengths] for n, layer in enumerate(header.layers)]
    return pack_file(header, chunks)


def test_header_round_trip_and_frozen_bytes():
    """Every header field survives, and the layout is frozen: a format change fails here."""
    header = _header()
    data = pack_header(header)
    parsed, size = parse_header(data)
    assert parsed == header and size == len(data)
    assert hashlib.sha256(data).hexdigest()[:16] == "06d6b528211e15ed"


def test_prefix_cuts_end_on_chunk_boundaries():
    data = _file(_header())
    f = parse_file(data)
    hs = f.header_size
    assert f.size == len(data) and f.complete and f.complete_layers() == 2
    assert f.prefix(layers=1).size == hs + 70 and f.prefix(layers=0).size == hs
    assert f.prefix(max_bytes=hs + 69).size == hs + 40
    assert f.prefix(max_bytes=hs + 70 + 150).size == hs + 170
    cut = f.prefix(max_bytes=hs + 75)
    assert cut.chunks[1] == [] and cut.complete_layers() == 1 and not cut.complete
    assert f.prefix(bpp=8 * (hs + 40) / 30).size == hs + 40  # 30 pixels
    assert f.prefix(layers=2, max_bytes=hs + 40).size == hs + 40
    with pytest.raises(DiffcodecError, match="smaller than the header"):
        f.prefix(max_bytes=hs - 1)


def test_any_prefix_with_the_header_parses():
    data = _file(_header())
    hs = parse_file(data).header_size
    for cut in range(hs, len(data) + 1, 7):
        f = parse_file(data[:cut])
        assert f.size <= cut and all(len(c) for present in f.chunks for c in present)
    with pytest.raises(ContainerError, match="truncated"):
        parse_file(data[: hs - 1])


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"PNG!" + d[4:], "not a .dfc file"),
    (lambda d: d[:4] + b"\x09" + d[5:], "unsupported .dfc version"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "header checksum"),
    (lambda d: d + b"x", "more bytes than its header describes"),
    (lambda d: d[:3], "wrong magic|truncated"),
])
def test_damaged_bytes_are_refused(damage, message):
    with pytest.raises(ContainerError, match=message):
        parse_file(damage(_file(_header())))


def test_mode_names():
    assert Mode.parse("lossless") is Mode.LOSSLESS and Mode.parse(Mode.STORED) is Mode.STORED
    assert str(Mode.PROGRESSIVE) == "progressive" and int(Mode.STORED) == 2
    with pytest.raises(DiffcodecError, match="unknown mode"):
        Mode.parse("lossy")


def test_chunks_must_match_the_header():
    header = _header()
    with pytest.raises(ValueError):
        pack_file(header, [[b"x" * 40], [b"y" * 250]])
