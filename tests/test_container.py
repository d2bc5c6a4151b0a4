"""The .dfc container: exact header round trips, prefix cuts, clear errors for bad bytes."""

import dataclasses
import hashlib
import zlib

import pytest

from diffcodec.errors import DiffcodecError
from diffcodec.format.container import (NO_TAIL, VERSION, ContainerError, Header, LayerInfo, Mode, pack_file,
                                        pack_header, parse_file, parse_header, validate_header)


def _header(**changes):
    layers = [LayerInfo(-3, 4, 0xDEADBEEF, 800, [108, 40]), LayerInfo(0, 255, 7, 2000, [148])]
    fields = dict(mode=Mode.PROGRESSIVE, model_name="tiny", model_hash=bytes(range(16)), height=5, width=6,
                  channels=4, steps=2, seed=2**63 + 5, tile=64, chunk_symbols=64, alpha_kind=2,
                  alpha=zlib.compress(b"\x80" * 30), layers=layers, time_grid="explicit",
                  times=[1 << 24, 1 << 22, 0], lossy_steps=1, blends=[16, 3], tail_mode=Mode.LOSSLESS,
                  bands=[3, 2], chain_params=[-2, 0, 1, 2, 3, 4, 5, -6, 7, 8], detail_index=201)
    return Header(**{**fields, **changes})


def _lossless_header(**changes):
    fields = dict(mode=Mode.LOSSLESS, model_name="tiny", model_hash=bytes(16), height=5, width=6, channels=3,
                  steps=2, seed=0, tile=64, chunk_symbols=64,
                  layers=[LayerInfo(0, 255, 9, 100, [64])], bands=[3, 2], chain_params=[-7, 12, 0, 0, 0, 0, 9, 30, 20, -5] + [0] * 10)
    return Header(**{**fields, **changes})


def _chunks(header):
    return [[bytes([n + k]) * length for k, length in enumerate(layer.chunk_lengths)]
            for n, layer in enumerate(header.layers)]


def _file(header):
    return pack_file(header, _chunks(header))


def test_header_round_trip_and_frozen_bytes():
    """Every header field survives, and the layout is frozen: a format change fails here."""
    for make in (_header, _lossless_header):
        data = _file(make())
        parsed = parse_file(data)
        assert parsed.header == dataclasses.replace(make(), layers=parsed.header.layers)
        assert [layer.chunk_checks for layer in parsed.header.layers] == [
            [zlib.crc32(c, zlib.crc32(data[9 : parsed.header_size - 4 - 4 * sum(len(l.chunk_lengths)
                                                                                 for l in make().layers)]))
             for c in chunks] for chunks in _chunks(make())]
        assert pack_header(parsed.header) == data[: parsed.header_size]
    assert hashlib.sha256(_file(_header())).hexdigest()[:16] == "f0d60203f353a7d6"


def test_prefix_cuts_end_on_chunk_boundaries():
    data = _file(_header())
    f = parse_file(data)
    hs = f.header_size
    assert f.size == len(data) and f.complete and f.complete_layers() == 2
    assert f.prefix(layers=1).size == hs + 148 and f.prefix(layers=0).size == hs
    assert f.prefix(max_bytes=hs + 147).size == hs + 108
    assert f.prefix(max_bytes=hs + 148 + 147).size == hs + 148 and f.prefix(max_bytes=hs + 296).size == hs + 296
    cut = f.prefix(max_bytes=hs + 150)
    assert cut.chunks[1] == [] and cut.complete_layers() == 1 and not cut.complete
    assert f.prefix(bpp=8 * (hs + 108) / 30).size == hs + 108  # 30 pixels
    assert f.prefix(layers=2, max_bytes=hs + 108).size == hs + 108
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


def test_every_chunk_present_is_checked_cut_or_not():
    """Damage inside a cut layer, a deleted byte (which looks like a cut), and a header whose
    fields were changed with its own CRC recomputed: all refused when parsed."""
    data = _file(_header())
    hs = parse_file(data).header_size
    cut = data[: hs + 108 + 20]  # layer 1's scale chunk, and part of its next chunk
    assert parse_file(cut).chunks[0] == [data[hs : hs + 108]]
    flipped = bytearray(cut)
    flipped[hs + 5] ^= 4
    with pytest.raises(ContainerError, match="layer 1 fails its check"):
        parse_file(bytes(flipped))
    deleted = data[: hs + 50] + data[hs + 51 :]
    with pytest.raises(ContainerError, match="fails its check"):
        parse_file(deleted)
    crafted = pack_header(dataclasses.replace(parse_file(data).header, seed=1)) + data[hs:]
    assert parse_header(crafted)[0].seed == 1  # a valid header CRC ...
    with pytest.raises(ContainerError, match="fails its check"):  # ... but no chunk matches it
        parse_file(crafted)


@pytest.mark.parametrize("damage, message", [
    (lambda d: b"PNG!" + d[4:], "not a .dfc file"),
    (lambda d: d[:4] + bytes([VERSION + 1]) + d[5:], "unsupported .dfc version"),
    (lambda d: d[:20] + bytes([d[20] ^ 1]) + d[21:], "header checksum"),
    (lambda d: d[:-5] + bytes([d[-5] ^ 1]) + d[-4:], "layer 2 fails its check"),
    (lambda d: d + b"x", "more bytes than its header describes"),
    (lambda d: d[:3], "wrong magic|truncated"),
])
def test_damaged_bytes_are_refused(damage, message):
    with pytest.raises(ContainerError, match=message):
        parse_file(damage(_file(_header())))


def test_mode_names():
    assert Mode.parse("lossless") is Mode.LOSSLESS and Mode.parse(Mode.STORED) is Mode.STORED
    assert str(Mode.PROGRESSIVE) == "progressive" and int(Mode.STORED) == 2 and int(Mode.PREDICTIVE) == 3
    with pytest.raises(DiffcodecError, match="unknown mode"):
        Mode.parse("lossy")


def test_chunks_must_match_the_header():
    header = _header()
    with pytest.raises(ValueError):
        pack_file(header, [[b"x" * 40], [b"y" * 250]])


def _layers(*lengths, low=-3, high=4):
    return [LayerInfo(low, high, 0, 0, list(lengths)), LayerInfo(0, 255, 0, 0, [148])]


@pytest.mark.parametrize("make, changes, message", [
    (_header, dict(height=0), "image size"),
    (_header, dict(width=(1 << 16) + 1), "image size"),
    (_header, dict(channels=7), "channels"),
    (_header, dict(steps=2000), "steps"),
    (_header, dict(tile=1), "tile"),
    (_header, dict(chunk_symbols=1 << 24), "symbols per chunk"),
    (_header, dict(channels=3), "alpha kind"),
    (_header, dict(alpha_kind=1), "alpha payload"),
    (_header, dict(alpha=b"x" * 2000), "alpha payload"),
    (_header, dict(layers=_layers(108, 40, low=5, high=5)), "symbol range"),
    (_header, dict(layers=_layers(108, 40, low=-(1 << 30))), "symbol range"),
    (_header, dict(layers=_layers(108, 0)), "empty layer or chunk"),
    (_header, dict(layers=_layers(100, 40)), "step layer chunks"),
    (_header, dict(layers=_layers(108, 4, 4, 4)), "step layer chunks"),
    (_header, dict(layers=_layers(108, 42)), "step layer chunks"),
    (_header, dict(height=500), "band plan"),
    (_header, dict(tail_mode=Mode.STORED), "lossless fields in a stored tail"),
    (_header, dict(tail_mode=NO_TAIL), "time grid"),  # a lossy file's grid ends above 0
    (_header, dict(tail_mode=NO_TAIL, steps=1, times=[1 << 24, 1 << 22]), "layer count"),  # yet a tail layer is there
    (_header, dict(tail_mode=9), "tail coder"),
    (_header, dict(chain_params=[]), "chain step parameters"),
    (_header, dict(layers=[LayerInfo(-3, 4, 0, 0, [108, 40]), LayerInfo(0, 255, 0, 0, [100, 48])]), "one chunk"),
    (_header, dict(times=[1 << 24, 5]), "time grid"),
    (_header, dict(times=[1 << 24, 1, 0]), "time grid"),
    (_header, dict(steps=1, times=[1 << 24, 0]), "layer count"),
    (_header, dict(blends=[17, 3]), "blend"),
    (_header, dict(blends=[3]), "blend"),
    (_header, dict(lossy_steps=2), "layer count"),
    (_lossless_header, dict(bands=[3, 3]), "band plan"),
    (_lossless_header, dict(chain_params=[0] * 10), "chain step parameters"),
    (_lossless_header, dict(chain_params=[0] * 21), "chain step parameters"),
    (_lossless_header, dict(chain_params=[0] * 5 + [100] + [0] * 14), "chain step parameters"),  # a scale index
    (_lossless_header, dict(chain_params=[0] * 16 + [65] + [0] * 3), "chain step parameters"),  # a weight
    (_lossless_header, dict(times=[1 << 24, 0]), "uniform grid"),
    (_lossless_header, dict(time_grid="explicit", times=[1 << 24, 0]), "time grid"),
    (_lossless_header, dict(time_grid="explicit", times=[1 << 24, 5, 0]), "time grid"),
    (_lossless_header, dict(blends=[3]), "progressive fields"),
    (_lossless_header, dict(tail_mode=Mode.LOSSLESS), "progressive fields"),
    (_lossless_header, dict(detail_index=5), "progressive fields"),
    (_header, dict(detail_index=256), "detail energy"),
    (_lossless_header, dict(layers=[LayerInfo(0, 255, 0, 0, [64, 64])]), "one layer of one chunk"),
    (_lossless_header, dict(layers=[LayerInfo(0, 255, 0, 0, [62])]), "band plan"),
    (_lossless_header, dict(mode=Mode.PREDICTIVE, bands=[], chain_params=[], layers=[LayerInfo(0, 255, 0, 0, [62])]),
     "whole 32-bit words"),
    (_lossless_header, dict(mode=Mode.PREDICTIVE, chain_params=[]), "lossless fields in a predictive file"),
])
def test_fields_no_encoder_writes_are_refused(make, changes, message):
    """Every field is checked against what an encoder can write, before any work."""
    header = make(**changes)
    with pytest.raises(ContainerError, match=message):
        validate_header(header)
    with pytest.raises(ContainerError, match=message):
        pack_file(header, _chunks(header))  # nor does an encoder write one
