"""The .dfc container: a checksummed header, then the layers as independent streams.

Layout (integers little-endian; "varint" = LEB128, signed values zigzag-encoded):

    magic b"\\x89DFC" | version u8 | header length u32 | header body | header CRC32 u32 | layers

Header body: mode u8, model name (u8 length + UTF-8), model hash (16 bytes), height u32,
width u32, channels u8, steps u16, time grid u8, tile u16, seed u64, symbols per chunk
u32, network threads u8, alpha (u8 kind + varint length + zlib bytes), layer count u16, then per layer: low, high (signed varints),
CRC32 of its symbols u32, the encoder's model estimate of its size in bits (varint), chunk
count (varint) and each chunk's byte length (varint); then the band count and each
band's rows (varints; lossless mode); last, the count of chain scale indices and each
index (signed varints; lossless mode: the variance calibration of each reverse step);
then the time grid (count and each time in units of 2^-24, varints; progressive mode,
explicit grid), the count of rate-placed layers (varint) and the count and each step
layer's blend weight of the direct head (varints; progressive mode). A progressive step
layer's first chunk holds its band scales, so a prefix pays only for the layers it holds.

Every byte of a file after the header belongs to some layer chunk, so any prefix that
holds the header decodes: complete layers, plus the complete chunks of the next one.

Writing and reading the layout are kept in one file (a little over 300 lines) so that the
two can be checked against each other field by field.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
import zlib
from dataclasses import dataclass, field

from ..errors import DiffcodecError

MAGIC = b"\x89DFC"
VERSION = 3  # 3: progressive time grid and per-layer parameters; 2: lossless chain scale indices
TIME_GRIDS = {0: "uniform", 1: "explicit"}  # how a file's steps are spaced in t
TIME_UNITS = 1 << 24  # an explicit grid stores t as an integer count of 1/TIME_UNITS
ALPHA_NONE, ALPHA_OPAQUE, ALPHA_ZLIB = 0, 1, 2
_PREFIX = struct.Struct("<4sBI")


class ContainerError(DiffcodecError):
    """The bytes are not a readable .dfc file."""


class Mode(enum.IntEnum):
    """What a file's layers hold; the value is the header's mode byte."""

    PROGRESSIVE = 0  # one truncatable layer per reverse step, then the pixels
    LOSSLESS = 1  # one bits-back layer over the whole chain
    STORED = 2  # zlib-compressed pixels, where the model loses to deflate

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
    threads: int = 1  # CPU threads the encoder ran the network with; the decoder does the same
    time_grid: str = "uniform"
    alpha_kind: int = ALPHA_NONE
    alpha: bytes = b""
    layers: list[LayerInfo] = field(default_factory=list)
    bands: list[int] = field(default_factory=list)  # lossless mode: rows of each band
    chain_scales: list[int] = field(default_factory=list)  # lossless mode: per-step scale index
    times: list[int] = field(default_factory=list)  # progressive: t of each layer boundary, 2^-24 units
    lossy_steps: int = 0  # progressive: how many of the step layers are placed by rate
    blends: list[int] = field(default_factory=list)  # progressive: each step layer's direct-head weight


@dataclass
class CodedImage:
    """What a coder produces: its mode, its layers as the header describes them with their
    chunks, and its mode's own header fields."""

    mode: Mode
    layers: list[LayerInfo]
    chunks: list[list[bytes]]
    bands: list[int] = field(default_factory=list)  # lossless: rows of each band
    chain_scales: list[int] = field(default_factory=list)  # lossless: per-step scale index
    times: list[int] = field(default_factory=list)  # progressive: the time grid
    blends: list[int] = field(default_factory=list)  # progressive: per step layer
    lossy_steps: int = 0  # progressive: rate-placed step layers


@dataclass
class DfcFile:
    """A parsed file: header, header size, and the chunks present of each layer."""

    header: Header
    header_size: int
    chunks: list[list[bytes]]  # per layer, the complete chunks present

    @property
    def size(self) -> int:
        """Bytes of the file that are used: the header and the chunks present."""
        return self.header_size + sum(len(c) for present in self.chunks for c in present)

    def layer_complete(self, index: int) -> bool:
        return len(self.chunks[index]) == len(self.header.layers[index].chunk_lengths)

    def complete_layers(self) -> int:
        count = 0
        while count < len(self.chunks) and self.layer_complete(count):
            count += 1
        return count

    @property
    def complete(self) -> bool:
        return self.complete_layers() == len(self.header.layers)

    def bpp_budget(self, bpp: float) -> int:
        """Bytes of a budget of ``bpp`` bits per pixel."""
        return int(bpp * self.header.height * self.header.width / 8)

    def prefix(self, layers: int | None = None, max_bytes: int | None = None,
               bpp: float | None = None) -> "DfcFile":
        """The file cut to at most ``layers`` layers (whole layers only), ``max_bytes`` bytes
        or ``bpp`` bits per pixel, on a chunk boundary (a cut inside a chunk would only carry
        dead bytes): what ``decode --layers/--bytes/--bpp`` uses and ``truncate`` writes."""
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
def pack_header(header: Header) -> bytes:
    body = bytearray()
    name = header.model_name.encode()[:255]
    body += struct.pack("<B", int(header.mode))
    body += struct.pack("<B", len(name)) + name
    body += header.model_hash[:16].ljust(16, b"\0")
    grid_id = next(code for code, name in TIME_GRIDS.items() if name == header.time_grid)
    body += struct.pack("<IIBHBHQ", header.height, header.width, header.channels, header.steps,
                        grid_id, header.tile, header.seed)
    body += struct.pack("<IB", header.chunk_symbols, header.threads)
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
    _put_varint(body, len(header.chain_scales))
    for index in header.chain_scales:
        _put_varint(body, _zigzag(index))
    _put_varint(body, len(header.times))
    for t in header.times:
        _put_varint(body, t)
    _put_varint(body, header.lossy_steps)
    _put_varint(body, len(header.blends))
    for blend in header.blends:
        _put_varint(body, blend)
    body = bytes(body)
    return _PREFIX.pack(MAGIC, VERSION, len(body)) + body + struct.pack("<I", zlib.crc32(body))


def pack_file(header: Header, layer_chunks: list[list[bytes]]) -> bytes:
    """Header plus layers."""
    for info, chunks in zip(header.layers, layer_chunks, strict=True):
        if [len(c) for c in chunks] != info.chunk_lengths:
            raise ValueError("the chunks do not match the header's layer descriptions")
    return pack_header(header) + b"".join(b"".join(chunks) for chunks in layer_chunks)


# -- reading --------------------------------------------------------------------------
def parse_header(data: bytes) -> tuple[Header, int]:
    """The header and its size in bytes; clear errors for foreign, truncated or damaged data."""
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
    name = r.take(name_len).decode("utf-8", errors="replace")
    model_hash = r.take(16)
    height, width, channels, steps, time_grid, tile, seed = r.unpack("<IIBHBHQ")
    chunk_symbols, threads = r.unpack("<IB")
    if time_grid not in TIME_GRIDS:
        raise ContainerError(f"damaged file: unknown time grid {time_grid}")
    if not (height and width and channels in (1, 2, 3, 4) and steps and tile and chunk_symbols and threads):
        raise ContainerError("damaged file: invalid image size, channel, step, tile or chunk count")
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
    chain_scales = [r.signed() for _ in range(r.varint())]
    times = [r.varint() for _ in range(r.varint())]
    lossy_steps = r.varint()
    blends = [r.varint() for _ in range(r.varint())]
    if r.pos != len(body):
        raise ContainerError("damaged file: unexpected bytes in the header")
    header = Header(Mode(mode_id), name, model_hash, height, width, channels, steps, seed, tile,
                    chunk_symbols, threads, TIME_GRIDS[time_grid], alpha_kind, alpha, layers, bands,
                    chain_scales, times, lossy_steps, blends)
    return header, end


def parse_file(data: bytes) -> DfcFile:
    """Parse a whole file or any prefix of one that holds the header."""
    header, header_size = parse_header(data)
    offset = header_size
    expected = offset + sum(layer.size for layer in header.layers)
    if len(data) > expected:
        raise ContainerError("damaged file: more bytes than its header describes")
    chunks: list[list[bytes]] = []
    for layer in header.layers:
        present = []
        for length in layer.chunk_lengths:
            if offset + length > len(data):
                break
            present.append(data[offset : offset + length])
            offset += length
        chunks.append(present)
        if len(present) < len(layer.chunk_lengths):
            chunks.extend([] for _ in range(len(header.layers) - len(chunks)))
            break
    return DfcFile(header, header_size=header_size, chunks=chunks)
