"""The .dfc container: a checksummed header, then the layers as independent streams.

Layout (integers little-endian; "varint" = LEB128, signed values zigzag-encoded):

    magic b"\\x89DFC" | version u8 | header length u32 | header body | header CRC32 u32 | layers

Header body: mode u8, model name (u8 length + UTF-8), model hash (16 bytes), height u32,
width u32, channels u8, steps u16, time grid u8, tile u16, seed u64, symbols per chunk
u32, alpha (u8 kind + varint length + zlib bytes), layer count u16, then per layer: low, high (signed varints),
CRC32 of its symbols u32, the encoder's model estimate of its size in bits (varint), chunk
count (varint) and each chunk's byte length (varint); then the band count and each
band's rows (varints; a bits-back chain: lossless mode, or a progressive file's tail);
the count of chain step parameters and each (signed varints; a bits-back chain: ten per
step, coding/step_context.py); then the time grid (count and each time in
units of 2^-24, varints; explicit grid: progressive mode, and lossless files on a model's
grid), the count of rate-placed layers (varint), the count and each blend weight of the
direct head, at the start of each step layer and of the tail (varints), and the tail's
coder (varint, a Mode: bits-back, predictive or stored; 0 outside progressive mode) and
the original's detail energy (u8, coding/detail.py; 0 outside progressive mode). A
progressive step layer's first chunk holds its plan (band scales and coded regions,
coding/layer_plan.py), so a prefix pays only for the layers it holds. Last, the chunk
checks: a u32 per chunk, in file order (see below).

Every byte of a file after the header belongs to some layer chunk, so any prefix that
holds the header decodes: complete layers, plus the complete chunks of the next one.

Checks. The header CRC covers the header. Each chunk's check is the CRC32 of its bytes,
started from the CRC32 of the header body before the check table (the "key"), so every
chunk present is verified when the file is parsed, before any work: damage is caught in a
cut layer as in a whole one, a deleted byte shifts every chunk after it and fails the
first, and a header whose fields were changed (with its own CRC recomputed) fails every
chunk. Each layer's CRC of its symbols then catches a decoder that computes differently
from the encoder. :func:`validate_header` refuses any field an encoder cannot write
before anything is allocated for it.

Writing and reading the layout are kept in one file so that the two can be checked
against each other field by field.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import DiffcodecError

MAGIC = b"\x89DFC"
VERSION = 13  # 13: progressive files carry the original's detail energy (a header byte), which completion matches; 12: the bits-back chain codes each step's latent in six context groups (ten parameters per step); 11: the progressive layers' transform rotates colour (luminance and two differences) before the block DCT; 10: the network and the coding arithmetic portable (exact on every machine), no thread count; 9: Laplace step symbols with region scale shifts, skipped coefficients at 0.8 of the step noise, estimates moved into the bounds the symbols set; 8: 32-pixel skip regions; 7: step layers coded or skipped per band and region; 6: the progressive stream's bits-back tail; 5: the predictive pixel coder (lossless direct band, mode 3); 4: chunk checks; 3: progressive time grid and per-layer parameters; 2: lossless chain scale indices
TIME_GRIDS = {0: "uniform", 1: "explicit"}  # how a file's steps are spaced in t
TIME_UNITS = 1 << 24  # an explicit grid stores t as an integer count of 1/TIME_UNITS
ALPHA_NONE, ALPHA_OPAQUE, ALPHA_ZLIB = 0, 1, 2
_PREFIX = struct.Struct("<4sBI")

# What an encoder can write; a header outside these limits is refused before any work.
MAX_SIDE = 1 << 16  # pixels per side
MAX_GRID_STEPS = 1100  # steps of a chain: --steps up to 1024, plus the progressive tail
MIN_TILE, MAX_TILE = 64, (1 << 16) - 1
MIN_CHUNK_SYMBOLS, MAX_CHUNK_SYMBOLS = 64, 1 << 18
MAX_SYMBOL = 1 << 20  # |low|, |high| of a layer's symbol range
NO_TAIL = 0  # a progressive file's tail_mode when it has none: a lossy file of step layers only
BAND_SCALE_BYTES = 108  # a progressive step layer's first chunk (its plan) starts with one scale byte per band
BLEND_LEVELS = 16  # a progressive step's direct-head weight is a multiple of 1 / BLEND_LEVELS
MIN_STEP = TIME_UNITS >> 12  # shortest progressive step in t: 1/4096
CHAIN_SCALE_RANGE = (-128, 48)  # a bits-back step's variance calibration indices
CHAIN_WEIGHT_RANGE = (-64, 64)  # a bits-back step's spatial and colour context weights (in 1/32)
CHAIN_GROUPS = 6  # a bits-back step's context groups: black pixels' R, G, B, then white pixels'
CHAIN_PARAMS_PER_STEP = CHAIN_GROUPS + 4  # a calibration index per group, then the four weights


class ContainerError(DiffcodecError):
    """The bytes are not a readable .dfc file."""


class Mode(enum.IntEnum):
    """What a file's layers hold; the value is the header's mode byte."""

    PROGRESSIVE = 0  # one truncatable layer per reverse step, then the pixels
    LOSSLESS = 1  # one bits-back layer over the whole chain
    STORED = 2  # zlib-compressed pixels, where the chain and the predictive coder lose to deflate
    PREDICTIVE = 3  # the predictive pixel coder over the whole image, where the model loses to it

    def __str__(self) -> str:
        return self.name.lower()

    @classmethod
    def parse(cls, value: "Mode | str") -> "Mode":
        if isinstance(value, Mode):
            return value
        try:
            return cls[str(value).upper()]
        except KeyError:
            raise DiffcodecError(f"unknown mode {value!r}: progressive or lossless") from None


@dataclass
class LayerInfo:
    """A layer as the header describes it: symbol range, CRC32 of its symbols, the model's
    estimate of its size, and the byte length of each independently decodable chunk."""

    low: int
    high: int
    crc: int
    estimated_bits: int
    chunk_lengths: list[int] = field(default_factory=list)
    chunk_checks: list[int] = field(default_factory=list)  # set by pack_file, verified by parse_file

    @classmethod
    def of(cls, chunks: list[bytes], low: int, high: int, crc: int, estimated_bits: float) -> "LayerInfo":
        return cls(low, high, crc, round(estimated_bits), [len(c) for c in chunks])

    @property
    def size(self) -> int:
        return sum(self.chunk_lengths)


@dataclass
class Header:
    mode: Mode
    model_name: str
    model_hash: bytes  # first 16 bytes of the model's SHA-256
    height: int
    width: int
    channels: int
    steps: int
    seed: int
    tile: int
    chunk_symbols: int = 1 << 18
    time_grid: str = "uniform"
    alpha_kind: int = ALPHA_NONE
    alpha: bytes = b""
    layers: list[LayerInfo] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)  # lossless mode: rows of each band
    chain_params: list[int] = field(default_factory=list)  # lossless mode: CHAIN_PARAMS_PER_STEP per step
    times: list[int] = field(default_factory=list)  # explicit grid: t of each step boundary, t = 1 first, 2^-24 units
    lossy_steps: int = 0  # progressive: how many of the step layers are placed by rate
    blends: list[int] = field(default_factory=list)  # progressive: direct-head weight at each step layer's start and the tail's
    tail_mode: int = 0  # progressive: the tail's coder, a Mode: LOSSLESS (bits-back), PREDICTIVE or STORED; NO_TAIL
    detail_index: int = 0  # progressive: the original's detail energy (coding/detail.py), 0 if none

    @property
    def lossy(self) -> bool:
        """A progressive file without a tail (written to a size target): no exact end."""
        return self.mode == Mode.PROGRESSIVE and self.tail_mode == NO_TAIL


def check_budgets(layers=None, max_bytes=None, bpp=None) -> None:
    """Refuse a layer count, byte budget or bpp that is not a number of the right kind (for
    cutting a file, and for encoding to a size)."""
    for name, value, least in (("layers", layers, 0), ("max_bytes", max_bytes, 1)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                  or value < least):
            raise DiffcodecError(f"{name} must be a whole number of at least {least}, not {value!r}")
    if bpp is not None and (isinstance(bpp, bool) or not isinstance(bpp, numbers.Real) or not math.isfinite(bpp)
                            or bpp <= 0):
        raise DiffcodecError(f"bpp must be a positive finite number, not {bpp!r}")


@dataclass
class DfcFile:
    """A parsed file: header, header size, and the chunks present of each layer."""

    header: Header
    header_size: int
    chunks: list[list[bytes]]  # per layer, the complete chunks present (each verified)

    @property
    def size(self) -> int:
        """Bytes of the file that are used: the header and the chunks present."""
        return self.header_size + sum(len(c) for present in self.chunks for c in present)

    @property
    def full_size(self) -> int:
        """Bytes of the whole file, as its header describes it."""
        return self.header_size + sum(layer.size for layer in self.header.layers)

    def layer_complete(self, index: int) -> bool:
        return len(self.chunks[index]) == len(self.header.layers[index].chunk_lengths)

    def complete_layers(self) -> int:
        count = 0
        while count < len(self.chunks) and self.layer_complete(count):
            count += 1
        return count

    def layers_with_data(self) -> int:
        """Layers a progressive decode steps through: the complete ones, then one cut inside
        that holds more than its first chunk (a step layer's plan, no coefficients)."""
        count = self.complete_layers()
        return count + (count < len(self.chunks) and len(self.chunks[count]) > 1)

    @property
    def complete(self) -> bool:
        return self.complete_layers() == len(self.header.layers)

    def bpp_budget(self, bpp: float) -> int:
        """Bytes of a budget of ``bpp`` bits per pixel."""
        # a bpp computed from a size (8 * bytes / pixels) must give those bytes back, not one
        # fewer by a rounding error
        budget = bpp * self.header.height * self.header.width / 8 + 1e-6
        return int(math.floor(budget)) if budget < 2**62 else 2**62  # (a huge bpp: the whole file)

    def prefix(self, layers: int | None = None, max_bytes: int | None = None,
               bpp: float | None = None) -> "DfcFile":
        """The file cut to at most ``layers`` layers (whole layers only), ``max_bytes`` bytes
        or ``bpp`` bits per pixel, on a chunk boundary (a cut inside a chunk would only carry
        dead bytes): what ``decode --layers/--bytes/--bpp`` uses and ``truncate`` writes."""
        check_budgets(layers=layers, max_bytes=max_bytes, bpp=bpp)
        if bpp is not None:
            max_bytes = self.bpp_budget(bpp) if max_bytes is None else min(max_bytes, self.bpp_budget(bpp))
        if max_bytes is not None and max_bytes < self.header_size:
            raise DiffcodecError(f"a budget of {max_bytes} bytes is smaller than the header "
                                 f"({self.header_size} bytes)")
        kept: list[list[bytes]] = []
        size, full = self.header_size, False
        for index, present in enumerate(self.chunks):
            chunks: list[bytes] = []
            for chunk in present if layers is None or index < layers else []:
                if full or (max_bytes is not None and size + len(chunk) > max_bytes):
                    full = True
                    break
                chunks.append(chunk)
                size += len(chunk)
            kept.append(chunks)
        return dataclasses.replace(self, chunks=kept)


# -- varints --------------------------------------------------------------------------
def _put_varint(out: bytearray, value: int) -> None:
    if value < 0:
        raise ValueError("varint must be non-negative")
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return


def _zigzag(value: int) -> int:
    return value * 2 if value >= 0 else -value * 2 - 1


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise ContainerError("damaged file: header ends early")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def unpack(self, fmt: str):
        size = struct.calcsize(fmt)
        return struct.unpack(fmt, self.take(size))

    def varint(self) -> int:
        value, shift = 0, 0
        while True:
            (byte,) = self.take(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift > 63:
                raise ContainerError("damaged file: malformed header number")

    def signed(self) -> int:
        value = self.varint()
        return value // 2 if value % 2 == 0 else -(value + 1) // 2


# -- writing --------------------------------------------------------------------------
def _pack_core(header: Header) -> bytes:
    """The header body up to the chunk checks: what the checks are keyed with."""
    body = bytearray()
    name = header.model_name.encode()[:255]
    body += struct.pack("<B", int(header.mode))
    body += struct.pack("<B", len(name)) + name
    body += header.model_hash[:16].ljust(16, b"\0")
    grid_id = next(code for code, name in TIME_GRIDS.items() if name == header.time_grid)
    body += struct.pack("<IIBHBHQ", header.height, header.width, header.channels, header.steps,
                        grid_id, header.tile, header.seed)
    body += struct.pack("<I", header.chunk_symbols)
    body += struct.pack("<B", header.alpha_kind)
    _put_varint(body, len(header.alpha))
    body += header.alpha
    body += struct.pack("<H", len(header.layers))
    for layer in header.layers:
        _put_varint(body, _zigzag(layer.low))
        _put_varint(body, _zigzag(layer.high))
        body += struct.pack("<I", layer.crc)
        _put_varint(body, max(0, int(round(layer.estimated_bits))))
        _put_varint(body, len(layer.chunk_lengths))
        for length in layer.chunk_lengths:
            _put_varint(body, length)
    _put_varint(body, len(header.bands))
    for rows in header.bands:
        _put_varint(body, rows)
    _put_varint(body, len(header.chain_params))
    for index in header.chain_params:
        _put_varint(body, _zigzag(index))
    _put_varint(body, len(header.times))
    for t in header.times:
        _put_varint(body, t)
    _put_varint(body, header.lossy_steps)
    _put_varint(body, len(header.blends))
    for blend in header.blends:
        _put_varint(body, blend)
    _put_varint(body, int(header.tail_mode))
    body += struct.pack("<B", header.detail_index)
    return bytes(body)


def pack_header(header: Header) -> bytes:
    """The header bytes, with the chunk checks its layers hold (pack_file computes them)."""
    core = _pack_core(header)
    checks = [check for layer in header.layers for check in layer.chunk_checks]
    if len(checks) != sum(len(layer.chunk_lengths) for layer in header.layers):
        raise ValueError("every chunk needs a check: use pack_file")
    body = core + struct.pack(f"<{len(checks)}I", *checks)
    return _PREFIX.pack(MAGIC, VERSION, len(body)) + body + struct.pack("<I", zlib.crc32(body))


def pack_file(header: Header, layer_chunks: list[list[bytes]]) -> bytes:
    """Header plus layers; the header's chunk checks are computed here from the chunks. The
    encoder's header passes the decoder's validation, or nothing is written."""
    validate_header(header)
    key = zlib.crc32(_pack_core(header))
    layers = []
    for info, chunks in zip(header.layers, layer_chunks, strict=True):
        if [len(c) for c in chunks] != info.chunk_lengths:
            raise ValueError("the chunks do not match the header's layer descriptions")
        layers.append(dataclasses.replace(info, chunk_checks=[zlib.crc32(c, key) for c in chunks]))
    return pack_header(dataclasses.replace(header, layers=layers)) + b"".join(b"".join(c) for c in layer_chunks)


# -- reading --------------------------------------------------------------------------
def _read_header(data: bytes) -> tuple[Header, int, int]:
    """The header as stored, its size in bytes and the chunk-check key; clear errors for
    foreign, truncated or damaged data (fields are validated by validate_header)."""
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise ContainerError("not a .dfc file (wrong magic bytes)")
    if len(data) < _PREFIX.size:
        raise ContainerError("truncated file: the header is incomplete")
    _, version, body_size = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise ContainerError(f"unsupported .dfc version {version} (this diffcodec reads version {VERSION})")
    end = _PREFIX.size + body_size + 4
    if len(data) < end:
        raise ContainerError("truncated file: the header is incomplete")
    body = data[_PREFIX.size : _PREFIX.size + body_size]
    (stored_crc,) = struct.unpack_from("<I", data, _PREFIX.size + body_size)
    if zlib.crc32(body) != stored_crc:
        raise ContainerError("damaged file: header checksum mismatch")
    r = _Reader(body)
    (mode_id,) = r.unpack("<B")
    if mode_id not in Mode._value2member_map_:
        raise ContainerError(f"damaged file: unknown mode {mode_id}")
    (name_len,) = r.unpack("<B")
    try:
        name = r.take(name_len).decode("utf-8")
    except UnicodeDecodeError:
        raise ContainerError("damaged file: the model name is not UTF-8") from None
    model_hash = r.take(16)
    height, width, channels, steps, time_grid, tile, seed = r.unpack("<IIBHBHQ")
    (chunk_symbols,) = r.unpack("<I")
    if time_grid not in TIME_GRIDS:
        raise ContainerError(f"damaged file: unknown time grid {time_grid}")
    (alpha_kind,) = r.unpack("<B")
    alpha = r.take(r.varint())
    (layer_count,) = r.unpack("<H")
    layers = []
    for _ in range(layer_count):
        low, high = r.signed(), r.signed()
        (crc,) = r.unpack("<I")
        estimated = r.varint()
        lengths = [r.varint() for _ in range(r.varint())]
        layers.append(LayerInfo(low, high, crc, estimated, lengths))
    bands = [r.varint() for _ in range(r.varint())]
    chain_params = [r.signed() for _ in range(r.varint())]
    times = [r.varint() for _ in range(r.varint())]
    lossy_steps = r.varint()
    blends = [r.varint() for _ in range(r.varint())]
    tail_mode = r.varint()
    (detail_index,) = r.unpack("<B")
    key = zlib.crc32(body[: r.pos])
    for layer in layers:
        layer.chunk_checks = list(r.unpack(f"<{len(layer.chunk_lengths)}I"))
    if r.pos != len(body):
        raise ContainerError("damaged file: unexpected bytes in the header")
    header = Header(Mode(mode_id), name, model_hash, height, width, channels, steps, seed, tile,
                    chunk_symbols, TIME_GRIDS[time_grid], alpha_kind, alpha, layers, bands,
                    chain_params, times, lossy_steps, blends, tail_mode, detail_index)
    return header, end, key


def chunk_count(symbols: int, chunk_symbols: int) -> int:
    """Chunks of a layer of ``symbols`` entropy-coded symbols."""
    return -(-symbols // chunk_symbols)


def validate_header(h: Header) -> None:
    """Refuse any header an encoder cannot write, before anything is allocated for it:
    sizes, steps, tile, channel and alpha fields, symbol ranges, the chunk layout
    each mode implies, and the mode's own fields. (How much work a decoder accepts is a
    separate, overridable limit: codec.DecodeLimits.)"""
    def bad(what: str) -> ContainerError:
        return ContainerError(f"damaged file: {what}")

    if not (1 <= h.height <= MAX_SIDE and 1 <= h.width <= MAX_SIDE):
        raise bad(f"image size {h.width}x{h.height} out of range")
    if h.channels not in (1, 2, 3, 4):
        raise bad(f"{h.channels} channels")
    if not 1 <= h.steps <= MAX_GRID_STEPS:
        raise bad(f"{h.steps} steps")
    if not MIN_TILE <= h.tile <= MAX_TILE:
        raise bad(f"tile size {h.tile}")
    if not MIN_CHUNK_SYMBOLS <= h.chunk_symbols <= MAX_CHUNK_SYMBOLS:
        raise bad(f"{h.chunk_symbols} symbols per chunk")
    has_alpha = h.channels in (2, 4)
    if has_alpha and h.alpha_kind not in (ALPHA_OPAQUE, ALPHA_ZLIB) or not has_alpha and h.alpha_kind != ALPHA_NONE:
        raise bad("alpha kind does not match the channels")
    if (h.alpha_kind == ALPHA_ZLIB) != bool(h.alpha) or len(h.alpha) > h.height * h.width * 1001 // 1000 + 1024:
        raise bad("alpha payload does not match its kind or size")
    for layer in h.layers:
        if not -MAX_SYMBOL <= layer.low < layer.high <= MAX_SYMBOL:
            raise bad(f"symbol range [{layer.low}, {layer.high}]")
        if not layer.chunk_lengths or min(layer.chunk_lengths) < 1:
            raise bad("empty layer or chunk")
    symbols = 3 * h.height * h.width
    per_layer = chunk_count(symbols, h.chunk_symbols)
    ends = not h.times or (h.times[-1] > 0 if h.lossy else h.times[-1] == 0)  # a lossy file's grid ends above 0
    if h.time_grid == "explicit" and (len(h.times) != h.steps + 1 or h.times[0] != TIME_UNITS or not ends
                                      or any(a - b < MIN_STEP for a, b in zip(h.times, h.times[1:]))):
        raise bad("invalid time grid")
    if h.time_grid == "uniform" and h.times:
        raise bad("times stored for a uniform grid")
    if h.mode == Mode.PROGRESSIVE:
        tail_steps = h.steps - h.lossy_steps  # a lossy file (the step layers only) has none, a tail one or more
        if (h.time_grid != "explicit" or len(h.layers) != h.lossy_steps + (not h.lossy) or h.lossy_steps < 1
                or (tail_steps != 0 if h.lossy else tail_steps < 1)):
            raise bad("the layer count does not match the time grid")
        if len(h.blends) != h.lossy_steps + 1 or max(h.blends) > BLEND_LEVELS:
            raise bad("invalid blend weights")
        if not 0 <= h.detail_index <= 255:
            raise bad(f"detail energy {h.detail_index}")
        for layer in h.layers[: h.lossy_steps]:
            lengths = layer.chunk_lengths
            if lengths[0] < BAND_SCALE_BYTES or len(lengths) > 1 + per_layer or any(n % 4 for n in lengths[1:]):
                raise bad("invalid step layer chunks")
        if h.lossy:
            if h.bands or h.chain_params:
                raise bad("lossless fields in a lossy file")
        else:
            _validate_whole(h, h.layers[-1], Mode(h.tail_mode) if h.tail_mode in Mode._value2member_map_ else None,
                            h.steps - h.lossy_steps, "tail")
    else:
        if len(h.layers) != 1:
            raise bad(f"a {h.mode} file has one layer")
        if (h.blends or h.lossy_steps or h.tail_mode or h.detail_index
                or (h.mode != Mode.LOSSLESS and h.time_grid != "uniform")):
            raise bad(f"progressive fields in a {h.mode} file")
        _validate_whole(h, h.layers[0], h.mode, h.steps, "file")


def _validate_whole(h: Header, layer: LayerInfo, mode: Mode | None, steps: int, what: str) -> None:
    """A layer holding the whole image in one chunk (a lossless-family file, or a progressive
    file's tail) under ``mode``'s coder, with the chain fields that coder needs."""
    def bad(reason: str) -> ContainerError:
        return ContainerError(f"damaged file: {reason}")

    if mode not in (Mode.LOSSLESS, Mode.PREDICTIVE, Mode.STORED):
        raise bad(f"unknown {what} coder")
    if len(layer.chunk_lengths) != 1 or (layer.low, layer.high) != (0, 255):
        raise bad(f"the {what} is one layer of one chunk")
    if mode == Mode.LOSSLESS:
        ranges = [CHAIN_SCALE_RANGE] * CHAIN_GROUPS + [CHAIN_WEIGHT_RANGE] * (CHAIN_PARAMS_PER_STEP - CHAIN_GROUPS)
        if len(h.chain_params) != steps * CHAIN_PARAMS_PER_STEP or not all(
                low <= value <= high for value, (low, high) in zip(h.chain_params, ranges * steps)):
            raise bad("invalid chain step parameters")
        if not h.bands or min(h.bands) < 1 or sum(h.bands) != h.height or layer.chunk_lengths[0] % 4:
            raise bad("the band plan does not match the image height")
    elif h.bands or h.chain_params:
        raise bad(f"lossless fields in a {mode} {what}")
    elif mode == Mode.PREDICTIVE and layer.chunk_lengths[0] % 4:
        raise bad("the predictive payload is not whole 32-bit words")


def parse_header(data: bytes) -> tuple[Header, int]:
    """The validated header and its size in bytes."""
    header, size, _ = _read_header(data)
    validate_header(header)
    return header, size


def parse_file(data: bytes) -> DfcFile:
    """Parse a whole file or any prefix of one that holds the header; every chunk present is
    verified against its check (a chunk cut short is not present)."""
    header, header_size, key = _read_header(data)
    validate_header(header)
    offset = header_size
    expected = offset + sum(layer.size for layer in header.layers)
    if len(data) > expected:
        raise ContainerError("damaged file: more bytes than its header describes")
    chunks: list[list[bytes]] = []
    for index, layer in enumerate(header.layers):
        present = []
        for length, check in zip(layer.chunk_lengths, layer.chunk_checks):
            if offset + length > len(data):
                break
            chunk = data[offset : offset + length]
            if zlib.crc32(chunk, key) != check:
                raise ContainerError(f"damaged file: layer {index + 1} fails its check at byte {offset}")
            present.append(chunk)
            offset += length
        chunks.append(present)
        if len(present) < len(layer.chunk_lengths):
            chunks.extend([] for _ in range(len(header.layers) - len(chunks)))
            break
    return DfcFile(header, header_size=header_size, chunks=chunks)
