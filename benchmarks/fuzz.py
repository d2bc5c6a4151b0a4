"""Fuzz the decoder with damaged, crafted and random .dfc files, and count what happens.

    python benchmarks/fuzz.py [--files 10000] [--model default] [--seed 0] [--workers 2]
                              [--out benchmarks/results/fuzz]
    python benchmarks/fuzz.py --cli 110      # through the `diffcodec decode` command

Clean files of a few small generated images are written in both modes (progressive with
small chunks, so layers are cut inside; lossless; stored). Each fuzzed file is one of
them (or two, for splices) damaged by one family:

    bitflip   1-8 bits flipped            truncate  cut at a random length
    insert    1-16 random bytes inserted  delete    1-16 bytes deleted
    zero      a range of 1-64 bytes set to 0
              (these four on a file that is also cut, 40% of the time)
    splice    the start of one file, the end of another
    crafted   a header field changed, the header CRC recomputed (chunk checks kept)
    forged    the same with every check recomputed: a different, self-consistent file
    channels  another channel count (1-4, alpha kind to match), every check recomputed:
              an exact decode must be the clean pixels in that layout, grey only from grey
    random    random bytes, half of them after a valid magic and version

Each file is decoded in a worker process, with a time and a memory bound. Outcomes:

    refused        a DiffcodecError of one line
    exact          the original pixels, and said to be (channels: in the forged layout)
    prefix         said to be a preview, and equal to the clean file's image from the same bytes
    forged-decoded a forged file decoded (no reference exists; only its cost is judged)
    WRONG          any other image: a silent wrong output
    TRACEBACK      any other exception;  PANIC  a BaseException (constriction's Rust panics)
    HANG           more than 2x the normal decode time of the size the header claims (in
                   each of three tries: a short decode can be delayed once by the system)
    MEMORY         more than 1 GB above the worker's baseline (every file here is under 1 MB)
    MULTILINE      an error message of more than one line

The capital outcomes must stay at zero. The bounded version runs in the test suite
(tests/test_fuzz.py) with a tiny model.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing as mp
import random
import resource
import struct
import sys
import time
import zlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffcodec.codec import decode_work  # noqa: E402
from diffcodec.errors import DiffcodecError  # noqa: E402
from diffcodec.format import container  # noqa: E402
from diffcodec.images import prepare, restore  # noqa: E402

FAMILIES = ("bitflip", "truncate", "insert", "delete", "zero", "splice", "crafted", "forged", "channels", "random")
BAD_OUTCOMES = ("WRONG", "TRACEBACK", "PANIC", "HANG", "MEMORY", "MULTILINE")
MEMORY_LIMIT_KB = 1 << 20  # 1 GB
HANG_FACTOR = 2.0
TILE, CHUNK_SYMBOLS = 64, 64


# -- the clean files ------------------------------------------------------------------------
@dataclass
class Clean:
    name: str
    data: bytes
    image: np.ndarray  # what an exact decode returns
    work: int  # network work the header claims (codec.decode_work)
    seconds: float = 0.0  # its full decode, the slowest of a few
    prefixes: dict = dataclasses.field(default_factory=dict)  # bytes used -> image


def clean_images() -> list[tuple[str, np.ndarray, str, dict]]:
    """(name, image, mode, encode options): small images of every channel layout, odd sizes."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:24, 0:20]
    smooth = np.stack([(xx * 9 + yy * 4 + 30 * c) % 256 for c in range(3)], -1).astype(np.uint8)
    gray = ((np.mgrid[0:17, 0:33][1] * 7) % 256).astype(np.uint8)
    rgba = np.concatenate([smooth[:16, :16], rng.integers(0, 256, (16, 16, 1), dtype=np.uint8)], -1)
    noise = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
    return [
        ("smooth-progressive", smooth, "progressive", dict(steps=2)),
        ("gray-progressive", gray, "progressive", dict(steps=2, stored_fallback=False)),  # a bits-back tail
        ("rgba-progressive", rgba, "progressive", dict(steps=1)),
        ("smooth-lossless", smooth, "lossless", dict(steps=4, stored_fallback=False)),
        ("gray-lossless", gray, "lossless", dict(steps=3, stored_fallback=False)),
        ("noise-stored", noise, "lossless", dict(steps=2)),
    ]


def make_clean(codec) -> list[Clean]:
    files = []
    for name, image, mode, options in clean_images():
        data = codec.encode(image, mode=mode, **options)
        files.append(Clean(name, data, image, claimed(data)))
    return files


def reference(codec, clean: Clean, bytes_used: int) -> np.ndarray:
    """The clean file's image from its first ``bytes_used`` bytes (cached)."""
    if bytes_used not in clean.prefixes:
        clean.prefixes[bytes_used] = codec.decode_result(clean.data[:bytes_used]).image
    return clean.prefixes[bytes_used]


# -- damage ----------------------------------------------------------------------------------
def _bitflip(rng, data, other, header_size):
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        low = header_size if rng.random() < 0.5 and header_size < len(out) else 0
        position = rng.randrange(low, len(out))
        out[position] ^= 1 << rng.randrange(8)
    return bytes(out)


def _truncate(rng, data, other, header_size):
    return data[: rng.randrange(0, len(data))]


def _insert(rng, data, other, header_size):
    position = rng.randrange(0, len(data) + 1)
    return data[:position] + rng.randbytes(rng.randint(1, 16)) + data[position:]


def _delete(rng, data, other, header_size):
    position = rng.randrange(0, len(data))
    return data[:position] + data[position + rng.randint(1, 16):]


def _zero(rng, data, other, header_size):
    position, length = rng.randrange(0, len(data)), rng.randint(1, 64)
    return data[:position] + bytes(len(data[position : position + length])) + data[position + length:]


def _splice(rng, data, other, header_size):
    return data[: rng.randrange(0, len(data))] + other[rng.randrange(0, len(other)):]


def _random(rng, data, other, header_size):
    body = rng.randbytes(rng.randint(0, 2000))
    if rng.random() < 0.5:
        return container.MAGIC + bytes([container.VERSION]) + body
    return body


_HUGE = (0, 1, 2, 3, 7, 255, 256, 65535, 65536, 2**31 - 1, 2**32 - 1)


def _mutate_header(rng, header: container.Header) -> container.Header:
    """One field of the header set to an extreme or random value."""
    h = dataclasses.replace(header, layers=[dataclasses.replace(layer, chunk_lengths=list(layer.chunk_lengths),
                                                                chunk_checks=list(layer.chunk_checks))
                                            for layer in header.layers])
    pick = lambda values: rng.choice(values) if rng.random() < 0.7 else rng.randrange(0, 2**16)  # noqa: E731
    field = rng.choice(["height", "width", "channels", "steps", "time_grid", "tile", "seed", "chunk_symbols",
                        "alpha", "mode", "model", "low_high", "chunk_length", "layers", "bands",
                        "chain_params", "times", "lossy_steps", "blends", "tail_mode", "estimated"])
    layer = rng.choice(h.layers)
    if field in ("height", "width"):
        setattr(h, field, rng.choice([0, 1, 5, 4096, 65535, 2**20, 2**32 - 1, getattr(h, field) + 1]))
    elif field == "channels":
        h.channels = rng.choice([0, 1, 2, 3, 4, 5, 255])
    elif field == "steps":
        h.steps = rng.choice([0, 1, h.steps + 1, 1024, 1100, 65535])
    elif field == "time_grid":
        h.time_grid = "uniform" if h.time_grid == "explicit" else "explicit"
    elif field == "tile":
        h.tile = rng.choice([0, 1, 8, 16, 48, 65535])
    elif field == "seed":
        h.seed = rng.randrange(0, 2**64)
    elif field == "chunk_symbols":
        h.chunk_symbols = pick(_HUGE)
    elif field == "alpha":
        h.alpha_kind = rng.choice([0, 1, 2, 3])
        h.alpha = rng.choice([b"", rng.randbytes(40), zlib.compress(bytes(10**6), 9)[:1500]])
    elif field == "mode":
        h.mode = rng.choice(list(container.Mode))
    elif field == "model":
        h.model_name, h.model_hash = rng.choice(["default", "x" * 200]), rng.randbytes(16)
    elif field == "low_high":
        layer.low, layer.high = rng.choice([(0, 0), (5, -5), (-(2**40), 2**40), (0, 2**25), (-1, 1)])
    elif field == "chunk_length":
        k = rng.randrange(len(layer.chunk_lengths))
        layer.chunk_lengths[k] = max(0, layer.chunk_lengths[k] + rng.choice([-4, -1, 1, 4, 2**20, -(2**20)]))
    elif field == "layers":
        if rng.random() < 0.5 and len(h.layers) > 1:
            h.layers.pop(rng.randrange(len(h.layers)))
        else:
            h.layers.insert(rng.randrange(len(h.layers) + 1), dataclasses.replace(layer))
    elif field == "bands":
        h.bands = rng.choice([[], [0], [h.height], [1] * h.height, [2**30], h.bands[::-1] + [1]])
    elif field == "chain_params":
        count = container.CHAIN_PARAMS_PER_STEP * h.steps
        h.chain_params = rng.choice([[], [10_000] * count, [-(2**40)] * count, [0] * (count + 1)])
    elif field == "times":
        h.times = rng.choice([[], [1 << 24, 0], [0, 1 << 24], [1 << 24] + [5] * h.steps, [2**40] * (h.steps + 1),
                              sorted(rng.randrange(0, 1 << 24) for _ in range(h.steps + 1))[::-1]])
    elif field == "lossy_steps":
        h.lossy_steps = rng.choice([0, h.steps, h.steps + 1, 2**40])
    elif field == "blends":
        h.blends = rng.choice([[], [17] * h.steps, [2**40] * h.steps, [0] * (h.steps + 3)])
    elif field == "tail_mode":
        h.tail_mode = rng.choice([0, 1, 2, 3, 4, 2**40])
    else:
        layer.estimated_bits = rng.choice([0, 2**62])
    return h


def _recompute_checks(header: container.Header, mutated: container.Header, data: bytes, size: int) -> None:
    """Every chunk check of ``mutated`` made to match its header and the chunks that follow,
    as a hostile writer would: a self-consistent file."""
    key = zlib.crc32(container._pack_core(mutated))
    chunks, offset = [], size
    for layer in header.layers:
        for length in layer.chunk_lengths:
            chunks.append(data[offset : offset + length])
            offset += length
    checks = iter(zlib.crc32(c, key) for c in chunks)
    for layer in mutated.layers:
        layer.chunk_checks = [next(checks, 0) for _ in layer.chunk_lengths]


def _crafted(rng, data, other, header_size, recompute_checks: bool = False):
    header, size, _ = container._read_header(data)
    mutated = _mutate_header(rng, header)
    if recompute_checks:
        _recompute_checks(header, mutated, data, size)
    else:
        for layer in mutated.layers:  # the count must match for the header to pack
            layer.chunk_checks = (layer.chunk_checks + [0] * len(layer.chunk_lengths))[: len(layer.chunk_lengths)]
    try:
        packed = container.pack_header(mutated)
    except (ValueError, OverflowError, KeyError, StopIteration, struct.error):
        packed = data[:size]  # a value the layout cannot hold: keep the header
    rest = data[size:]
    if rng.random() < 0.3:
        rest = rest[: rng.randrange(0, len(rest) + 1)]
    return packed + rest


def _forged(rng, data, other, header_size):
    return _crafted(rng, data, other, header_size, recompute_checks=True)


def _channels(rng, data, other, header_size):
    """Another channel count (1-4, the alpha kind to match), every check recomputed."""
    header, size, _ = container._read_header(data)
    mutated = dataclasses.replace(header, channels=rng.choice([c for c in (1, 2, 3, 4) if c != header.channels]))
    if mutated.channels in (2, 4) and mutated.alpha_kind == container.ALPHA_NONE:
        mutated.alpha_kind = container.ALPHA_OPAQUE
    elif mutated.channels in (1, 3):
        mutated.alpha_kind, mutated.alpha = container.ALPHA_NONE, b""
    _recompute_checks(header, mutated, data, size)
    return container.pack_header(mutated) + data[size:]


def forged_channels_image(clean_image: np.ndarray, data: bytes) -> np.ndarray | None:
    """What an exact decode of a file with forged channels must return: the coded colours
    restored in the layout the header now says (images.restore); None where the layout is
    grey and the colours are not (the decoder must refuse)."""
    header = container._read_header(data)[0]
    rgb = prepare(clean_image).rgb
    if header.channels in (1, 2) and not np.all(rgb == rgb[:, :, :1]):
        return None
    return restore(rgb, header.channels, header.alpha_kind, header.alpha)


CUT_FIRST = ("bitflip", "insert", "delete", "zero")
DAMAGE = dict(bitflip=_bitflip, truncate=_truncate, insert=_insert, delete=_delete, zero=_zero, splice=_splice,
              crafted=_crafted, forged=_forged, channels=_channels, random=_random)


def make_jobs(cleans: list[Clean], files: int, seed: int) -> list[tuple[str, Clean, bytes]]:
    """(family, the clean file it came from, the fuzzed bytes), the families in turn."""
    rng = random.Random(seed)
    jobs = []
    for index in range(files):
        family = FAMILIES[index % len(FAMILIES)]
        clean, other = rng.choice(cleans), rng.choice(cleans)
        header_size = container._read_header(clean.data)[1]
        source = clean.data
        if family in CUT_FIRST and rng.random() < 0.4:  # damage inside a file that is also cut
            source = source[: rng.randrange(header_size + 1, len(source) + 1)]
        jobs.append((family, clean, DAMAGE[family](rng, source, other.data, header_size)))
    return jobs


# -- the worker ------------------------------------------------------------------------------
def _worker(model: str, connection) -> None:
    """Decode what the parent sends; reply with the outcome, the seconds and the peak memory."""
    import torch

    from diffcodec.codec import Codec

    torch.set_num_threads(1)
    codec = Codec(model, tile=TILE, chunk_symbols=CHUNK_SYMBOLS)
    connection.send(("ready", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
    while True:
        data = connection.recv()
        if data is None:
            return
        start = time.perf_counter()
        try:
            result = codec.decode_result(data)
            reply = ("decoded", result.image, result.exact, result.bytes_used)
        except DiffcodecError as exc:
            reply = ("error", str(exc))
        except Exception as exc:  # noqa: BLE001 - what the fuzz looks for
            reply = ("traceback", f"{type(exc).__name__}: {exc}"[:300])
        except BaseException as exc:  # noqa: BLE001 - constriction's panics
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            reply = ("panic", f"{type(exc).__name__}: {exc}"[:300])
        seconds = time.perf_counter() - start
        connection.send((*reply, seconds, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))


class Worker:
    """A decoding process that can be killed and replaced when a file hangs it."""

    def __init__(self, model: str) -> None:
        self.model = model
        self._start()

    def _start(self) -> None:
        context = mp.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_worker, args=(self.model, child), daemon=True)
        self.process.start()
        if not self.connection.poll(300):
            raise RuntimeError("the fuzz worker did not start")
        _, self.baseline_kb = self.connection.recv()

    def send(self, data: bytes) -> None:
        self.connection.send(data)

    def receive(self, timeout: float):
        """The reply to what was sent, or None when the worker hung or died (it is replaced)."""
        if self.connection.poll(timeout):
            try:
                return self.connection.recv()
            except EOFError:
                pass
        self.process.kill()
        self.process.join()
        self._start()
        return None

    def decode(self, data: bytes, timeout: float):
        self.send(data)
        return self.receive(timeout)

    def close(self) -> None:
        try:
            self.connection.send(None)
        except OSError:
            pass
        self.process.join(10)


# -- judging ---------------------------------------------------------------------------------
def claimed(data: bytes) -> int | None:
    """The network work (codec.decode_work, at least pixels) the header claims, when it can
    be read at all."""
    try:
        header, _, _ = container._read_header(data)
    except Exception:  # noqa: BLE001 - any damage: nothing is claimed
        return None
    return max(decode_work(header), header.height * header.width)


def _decode_seconds(worker: "Worker", data: bytes, runs: int = 3) -> float:
    """The slowest of a few decodes of a clean file (which must decode exactly), after one to
    warm up."""
    times = []
    for _ in range(runs + 1):
        reply = worker.decode(data, 600)
        assert reply is not None and reply[0] == "decoded" and reply[2], "a clean file failed"
        times.append(reply[-2])
    return max(times[1:])


class NormalTime:
    """The normal decode time of the size a file claims: the clean files' time per unit of
    work (at least the slowest clean decode: fixed costs)."""

    def __init__(self, cleans: list[Clean], worker: "Worker") -> None:
        self.cleans, self.worker = cleans, worker
        self.per_work = max(c.seconds / c.work for c in cleans)
        self.floor = max(c.seconds for c in cleans)

    def __call__(self, data: bytes, clean: Clean) -> float:
        return max(self.floor, self.per_work * (claimed(data) or 0))


def judge(reply, family: str, clean: Clean, data: bytes, codec, normal: float, hang_factor: float,
          baseline_kb: int) -> tuple:
    """(outcome, detail) of one decoded fuzzed file."""
    if reply is None:
        return "HANG", "killed: hung or died"
    kind, *rest = reply
    seconds, maxrss = rest[-2], rest[-1]
    if maxrss - baseline_kb > MEMORY_LIMIT_KB:
        return "MEMORY", f"{(maxrss - baseline_kb) / 1024:.0f} MB"
    if seconds > hang_factor * normal:
        return "HANG", f"{seconds:.2f} s"
    if kind == "error":
        message = rest[0]
        return ("MULTILINE", message) if "\n" in message.strip() else ("refused", message)
    if kind == "traceback":
        return "TRACEBACK", rest[0]
    if kind == "panic":
        return "PANIC", rest[0]
    image, exact, bytes_used = rest[0], rest[1], rest[2]
    if family == "forged":
        return "forged-decoded", ""
    if family == "channels" and exact:  # the pixels are known: the clean ones, in the forged layout
        expected = forged_channels_image(clean.image, data)
        if expected is None:
            return "WRONG", "grey channels decoded from colour data"
        same = image.shape == expected.shape and np.array_equal(image, expected)
        return ("exact", "") if same else ("WRONG", "forged channels: said exact")
    if family == "channels":
        return "forged-decoded", ""  # a preview of a forged file: no reference
    if exact:
        same = image.shape == clean.image.shape and np.array_equal(image, clean.image)
        return ("exact", "") if same else ("WRONG", "said exact")
    expected = reference(codec, clean, bytes_used)
    same = image.shape == expected.shape and np.array_equal(image, expected)
    return ("prefix", "") if same else ("WRONG", f"preview from {bytes_used} bytes differs")


def run(model: str, files: int, seed: int, workers: int = 1, log=print, hang_factor: float = HANG_FACTOR) -> dict:
    """Encode the clean files, fuzz ``files`` damaged ones, and count the outcomes per family."""
    import torch

    from diffcodec.codec import Codec

    torch.set_num_threads(1)
    codec = Codec(model, tile=TILE, chunk_symbols=CHUNK_SYMBOLS)
    cleans = make_clean(codec)
    pool = [Worker(model) for _ in range(max(1, workers))]
    for clean in cleans:  # the normal decode time of each clean file, in a worker
        clean.seconds = _decode_seconds(pool[0], clean.data)
    normals = [NormalTime(cleans, worker) for worker in pool]
    counts: dict[str, Counter] = defaultdict(Counter)
    examples: dict[str, list] = defaultdict(list)
    slowest = (0.0, {})
    peak_kb = 0
    start = time.perf_counter()
    jobs = make_jobs(cleans, files, seed)
    for index in range(0, len(jobs), len(pool)):
        batch = jobs[index : index + len(pool)]
        expected = [normal(data, clean) for normal, (_, clean, data) in zip(normals, batch)]
        for worker, (family, clean, data) in zip(pool, batch):
            worker.send(data)
        for worker, (family, clean, data), normal in zip(pool, batch, expected):
            timeout = min(600.0, 3 * hang_factor * normal + 5)
            reply = worker.receive(timeout)
            if reply is not None:
                for _ in range(2):  # a real hang repeats; a scheduling hiccup on a short decode does not
                    if reply[-2] <= hang_factor * normal:
                        break
                    again = worker.decode(data, timeout)
                    reply = reply if again is None else min(reply, again, key=lambda r: r[-2])
                ratio = reply[-2] / normal
                peak_kb = max(peak_kb, reply[-1] - worker.baseline_kb)
                if ratio > slowest[0]:
                    slowest = (ratio, dict(family=family, clean=clean.name, seconds=reply[-2], outcome=reply[0],
                                           detail=str(reply[1])[:120] if reply[0] == "error" else ""))
            outcome, detail = judge(reply, family, clean, data, codec, normal, hang_factor, worker.baseline_kb)
            counts[family][outcome] += 1
            if outcome in BAD_OUTCOMES and len(examples[outcome]) < 5:
                examples[outcome].append(dict(family=family, clean=clean.name, detail=detail, size=len(data)))
        if (index + len(pool)) % 1000 < len(pool):
            log(f"{index + len(batch)} files, {time.perf_counter() - start:.0f} s")
    for worker in pool:
        worker.close()
    totals = Counter()
    for family_counts in counts.values():
        totals.update(family_counts)
    return dict(files=files, seed=seed, model=str(model), clean=[dict(name=c.name, bytes=len(c.data),
                seconds=c.seconds) for c in cleans], counts={f: dict(counts[f]) for f in FAMILIES},
                totals=dict(totals), bad=sum(totals[o] for o in BAD_OUTCOMES), examples=dict(examples),
                slowest_ratio=slowest[0], slowest=slowest[1], peak_mb_above_baseline=peak_kb / 1024,
                seconds=time.perf_counter() - start)


def cli_run(model: str, files: int, seed: int, log=print) -> dict:
    """``files`` fuzzed files through ``diffcodec decode`` in a fresh process each: the exit
    status and what stderr shows. refused: status 1 and one ``error:`` line, no output
    file; decoded: status 0, an image written, no more than a summary and a warning line;
    anything else (a traceback, a panic message, several lines) is BAD."""
    import subprocess
    import tempfile

    import torch

    from diffcodec.codec import Codec

    torch.set_num_threads(1)
    cleans = make_clean(Codec(model, tile=TILE, chunk_symbols=CHUNK_SYMBOLS))
    counts: dict[str, Counter] = defaultdict(Counter)
    examples = []
    with tempfile.TemporaryDirectory() as folder:
        source, output = Path(folder) / "in.dfc", Path(folder) / "out.png"
        for index, (family, _, data) in enumerate(make_jobs(cleans, files, seed)):
            source.write_bytes(data)
            output.unlink(missing_ok=True)
            done = subprocess.run([sys.executable, "-m", "diffcodec.cli", "decode", str(source), "-o", str(output),
                                   "--model", str(model), "-q"], capture_output=True, text=True, timeout=600)
            lines = done.stderr.strip().splitlines()
            if done.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: ") and not output.exists():
                outcome = "refused"
            elif done.returncode == 0 and output.exists() and len(lines) <= 2 and "Traceback" not in done.stderr:
                outcome = "decoded"
            else:
                outcome = "BAD"
                examples.append(dict(family=family, status=done.returncode, stderr=done.stderr[-400:]))
            counts[family][outcome] += 1
            if (index + 1) % 20 == 0:
                log(f"cli: {index + 1} files")
    totals = Counter()
    for family_counts in counts.values():
        totals.update(family_counts)
    return dict(files=files, counts={f: dict(counts[f]) for f in FAMILIES}, totals=dict(totals),
                bad=totals["BAD"], examples=examples[:5])


def table(report: dict) -> str:
    outcomes = ["refused", "exact", "prefix", "forged-decoded", *BAD_OUTCOMES]
    lines = ["| family | files | " + " | ".join(outcomes) + " |", "|---" * (len(outcomes) + 2) + "|"]
    rows = [(f, report["counts"][f]) for f in FAMILIES] + [("**all**", report["totals"])]
    for family, counts in rows:
        lines.append(f"| {family} | {sum(counts.values())} | " + " | ".join(str(counts.get(o, 0)) for o in outcomes) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--model", default="default", help="registered model name or checkpoint path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=1, help="decoding processes")
    parser.add_argument("--cli", type=int, default=0, metavar="N",
                        help="instead: N fuzzed files through the `diffcodec decode` command (a process each)")
    parser.add_argument("--out", default="benchmarks/results/fuzz")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.cli:
        report = cli_run(args.model, args.cli, args.seed, log=lambda m: print(m, file=sys.stderr))
        (out / "fuzz_cli.json").write_text(json.dumps(report, indent=1))
        lines = ["| family | files | refused | decoded | BAD |", "|---|---|---|---|---|"]
        for family, counts in [*report["counts"].items(), ("**all**", report["totals"])]:
            lines.append(f"| {family} | {sum(counts.values())} | " + " | ".join(
                str(counts.get(o, 0)) for o in ("refused", "decoded", "BAD")) + " |")
        text = f"{args.cli} files through `diffcodec decode`, seed {args.seed}, model {args.model}\n\n" + "\n".join(lines) + "\n"
        (out / "fuzz_cli.md").write_text(text)
        print(text)
        sys.exit(1 if report["bad"] else 0)
    report = run(args.model, args.files, args.seed, args.workers, log=lambda m: print(m, file=sys.stderr))
    (out / "fuzz.json").write_text(json.dumps(report, indent=1, default=str))
    text = (f"{report['files']} files, seed {report['seed']}, model {report['model']}, "
            f"{report['seconds']:.0f} s; slowest decode {report['slowest_ratio']:.2f}x its normal time "
            f"({report['slowest']}); peak memory {report['peak_mb_above_baseline']:.0f} MB above the worker's "
            "baseline\n\n"
            + table(report) + "\n")
    (out / "fuzz.md").write_text(text)
    print(text)
    if report["bad"]:
        print(json.dumps(report["examples"], indent=1, default=str))
        sys.exit(1)


if __name__ == "__main__":
    main()
