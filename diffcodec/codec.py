"""The codec's front: image -> coder -> header -> container, and back.

The coders (coding/) own their loops; each encoder returns a CodedImage and its decoder
reads one. Only this module maps a CodedImage to and from the container's header
(:func:`header_of`, :func:`coded_of`), once each way.
"""

from __future__ import annotations

import numbers
import warnings
from dataclasses import dataclass

import numpy as np

from .coding import entropy, lossless, progressive
from .coding.coded import CodedImage, Context
from .coding.runner import DEFAULT_TILE, ModelRunner, Tiling, threads_for_free_cores
from .errors import DiffcodecError, LimitError, boundary, does_not_decode
from .coding.placement import layer_targets
from .format.container import (BAND_SCALE_BYTES, MAX_CHUNK_SYMBOLS, MAX_SIDE, MAX_TILE, MIN_CHUNK_SYMBOLS, MIN_TILE,
                               ContainerError, DfcFile, Header, Mode, check_budgets, chunk_count, pack_file,
                               parse_file)
from .images import PreparedImage, prepare, restore
from .model import DiffusionModel, load_named_model

DEFAULT_STEPS = progressive.DEFAULT_STEPS
DEFAULT_LOSSLESS_STEPS = lossless.DEFAULT_STEPS
MAX_STEPS = 1024
MAX_COMPLETION_STEPS = 1000  # completion is sampling: past a few hundred steps it only costs time
MIN_LAYER_BYTES = BAND_SCALE_BYTES + 64  # room a size target must leave: a first layer's plan and some data
# A layer's real cost can overshoot the placer's aim (its tolerance is 10 %): a file over
# its size target is encoded again aiming lower by the overshoot and a little more, and cut
# on a chunk boundary only if that fails too.
SIZE_TRIES = 3
SIZE_RETRY_MARGIN = 0.98


def header_bound(layers: int, chunks_per_layer: int, alpha: bytes, model_name: str) -> int:
    """Bytes a progressive header can take at most (encode to a size aims below the target by
    it): the fixed fields and the model's name, the alpha plane, and per layer its symbol
    range, CRC, estimate and count varints, and a length varint and a check per chunk."""
    return 96 + len(model_name) + len(alpha) + layers * (20 + 8 * chunks_per_layer)


def decode_work(header: Header) -> int:
    """Pixels the network is run on over a whole decode, as the header claims: pixels times
    steps, a bits-back chain's bands counted with their context rows (lossless.network_rows)."""
    if header.mode == Mode.LOSSLESS:
        return header.width * header.steps * lossless.network_rows(header.bands)
    if header.mode in (Mode.STORED, Mode.PREDICTIVE):  # no network
        return 0
    layers = header.height * header.width * (header.lossy_steps + 1)  # the step layers, the tail's display
    if header.tail_mode == Mode.LOSSLESS:
        layers += header.width * (header.steps - header.lossy_steps) * lossless.network_rows(header.bands)
    return layers


@dataclass(frozen=True)
class DecodeLimits:
    """How much work a decoder accepts from a file before it starts: ``max_pixels`` (the
    image's), and ``max_work``, pixels times steps (network passes). A file is checked
    against these before anything is allocated for it, so a small file cannot claim hours
    and gigabytes; None lifts a limit (for real images beyond them). The defaults admit
    images up to 32 megapixels at 64 steps."""

    max_pixels: int | None = 1 << 25
    max_work: int | None = 1 << 31

    def check(self, header: Header, completion_steps: int = 0) -> None:
        """Refuse a file (and the completion steps asked for after it) beyond the limits."""
        pixels = header.height * header.width
        if self.max_pixels is not None and pixels > self.max_pixels:
            raise LimitError(f"the file is a {header.width}x{header.height} image, more than the "
                             f"{self.max_pixels} pixels a decoder accepts by default (--max-pixels to allow it)")
        if self.max_work is not None and decode_work(header) + completion_steps * pixels > self.max_work:
            asked = f" and {completion_steps} completion steps" if completion_steps else ""
            raise LimitError(f"the file asks for {header.steps} steps{asked} on {pixels} pixels, more work "
                             f"than a decoder accepts by default (--max-work to allow it)")


def header_of(coded: CodedImage, prepared: PreparedImage, context: Context, chunk_symbols: int, steps: int) -> Header:
    """The header of a coded image: the coder's fields, the image's own (channels, alpha),
    the model's identity and the context's seed and tile."""
    explicit = bool(coded.times)
    return Header(mode=coded.mode, model_name=context.runner.name, model_hash=context.runner.hash,
                  height=coded.height, width=coded.width, channels=prepared.channels,
                  steps=len(coded.times) - 1 if explicit else steps, seed=context.seed,
                  tile=context.tiling.tile, chunk_symbols=chunk_symbols,
                  alpha_kind=prepared.alpha_kind, alpha=prepared.alpha, layers=coded.layers,
                  bands=coded.bands, chain_params=coded.chain_params,
                  time_grid="explicit" if explicit else "uniform", times=coded.times,
                  lossy_steps=coded.lossy_steps, blends=coded.blends, tail_mode=coded.tail_mode,
                  detail_index=coded.detail_index)


def coded_of(f: DfcFile) -> CodedImage:
    """Mirror of :func:`header_of`: the coded image of a parsed file (its fields validated by
    the container), with the complete chunks present of each layer."""
    h = f.header
    return CodedImage(h.mode, h.layers, f.chunks, h.height, h.width, steps=h.steps, chunk_symbols=h.chunk_symbols,
                      bands=h.bands, chain_params=h.chain_params, times=h.times, blends=h.blends,
                      lossy_steps=h.lossy_steps, tail_mode=h.tail_mode, detail_index=h.detail_index)


def _check_completion_steps(steps) -> None:
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or not 0 <= steps <= MAX_COMPLETION_STEPS:
        raise DiffcodecError(f"completion steps must be a whole number from 0 to {MAX_COMPLETION_STEPS}, "
                             f"not {steps!r}")


class PrefixWarning(UserWarning):
    """A decode from a file that is only a prefix: the image is a preview, not the original."""


@dataclass
class Decoded:
    """A decoded image and how it was obtained."""

    image: np.ndarray  # (H, W[, C]) uint8, the file's channels
    mode: Mode
    layers_used: int  # complete layers that went into it
    layers_total: int
    partial: bool  # the chunks present of one more layer went into it too
    exact: bool  # the original pixels, not a best-effort preview of a prefix
    bytes_used: int = 0  # of the file: the header and the chunks that went into the image
    bytes_total: int = 0  # of the whole file, as its header describes it
    lossy: bool = False  # the file has no exact end (written to a size target)

    @property
    def whole(self) -> bool:
        """Whether all of the file went into the image."""
        return self.bytes_used == self.bytes_total and not self.partial

    def describe(self) -> str:
        """One line: how far the decode got."""
        part = f" and part of layer {self.layers_used + 1}" if self.partial else ""
        if self.exact:
            state = "exact"
        elif self.lossy and self.whole:
            state = "a lossy file, whole: not the original pixels"
        else:
            state = "a preview from a prefix, not the original pixels"
        return (f"{self.layers_used} of {self.layers_total} layers{part}, {self.bytes_used} of "
                f"{self.bytes_total} bytes ({state})")


class Codec:
    """A loaded model, ready to encode and decode .dfc files.

    ``model`` is a registered name (``"default"``), a checkpoint path or a DiffusionModel.
    """

    def __init__(self, model: str | DiffusionModel | None = None, device: str = "cpu",
                 tile: int = DEFAULT_TILE, chunk_symbols: int = entropy.CHUNK_SYMBOLS,
                 limits: DecodeLimits = DecodeLimits()) -> None:
        if not MIN_CHUNK_SYMBOLS <= chunk_symbols <= MAX_CHUNK_SYMBOLS:
            raise DiffcodecError(f"chunk_symbols must be from {MIN_CHUNK_SYMBOLS} to {MAX_CHUNK_SYMBOLS}")
        if not isinstance(model, DiffusionModel):
            model = load_named_model(model or "default", device)
        if tile % model.config.stride or not MIN_TILE <= tile <= MAX_TILE:
            raise DiffcodecError(f"tile must be a multiple of {model.config.stride} from {MIN_TILE} to {MAX_TILE}")
        self.model = model
        self.runner = ModelRunner(model)
        self.tile = tile
        self.chunk_symbols = chunk_symbols
        self.limits = limits

    def _context(self, seed: int) -> Context:
        return Context(self.runner, Tiling(self.tile), seed)

    def encode(self, image, steps: int | None = None, seed: int = 0, mode: str | Mode = "progressive",
               progress: bool = False, stored_fallback: bool = True, bpp: float | None = None,
               max_bytes: int | None = None) -> bytes:
        """Encode an image (PIL, array or tensor) into a .dfc file.

        ``mode="progressive"``: truncatable layers, one per reverse step, ``steps`` placed by
        rate (default 2: 0.05 and 0.2 bpp), then a bits-back tail that makes the whole file exact.
        ``mode="lossless"``: bits-back coding over a ``steps``-step chain (default 16); where
        a coder without the model does better, the file uses it instead (mode "predictive" or
        "stored", coding/stored.py), unless ``stored_fallback`` is False (which holds a
        progressive file's tail to bits-back coding as well).
        ``bpp`` or ``max_bytes``: a lossy progressive file of at most that size, its layers on
        the rate ladder below it and the last placed to end there, without the exact tail
        (``steps`` is then chosen by the target).
        """
        mode = Mode.parse(mode)
        if mode in (Mode.STORED, Mode.PREDICTIVE):
            raise DiffcodecError(f"mode '{mode}' is chosen by the lossless encoder, not asked for")
        if bpp is not None or max_bytes is not None:
            if steps is not None:
                raise DiffcodecError("a size target places the layers itself: give no steps with it")
            return self._encode_to_size(image, seed, mode, progress, bpp, max_bytes)
        steps = steps or (DEFAULT_STEPS if mode == Mode.PROGRESSIVE else DEFAULT_LOSSLESS_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise DiffcodecError(f"steps must be between 1 and {MAX_STEPS}")
        prepared = prepare(image)
        if max(prepared.rgb.shape[:2]) > MAX_SIDE:
            raise DiffcodecError(f"images up to {MAX_SIDE} pixels a side are supported")
        with boundary("encoding"), threads_for_free_cores():
            return self._encode(prepared, steps, seed & (2**64 - 1), mode, progress, stored_fallback)

    def _encode(self, prepared: PreparedImage, steps: int, seed: int, mode: Mode, progress: bool,
                stored_fallback: bool) -> bytes:
        context = self._context(seed)
        if mode == Mode.PROGRESSIVE:
            coded = progressive.encode(context, prepared.rgb, steps, self.chunk_symbols, progress, stored_fallback)
        else:
            coded = lossless.encode(context, prepared.rgb, steps, progress, stored_fallback)
        return pack_file(header_of(coded, prepared, context, self.chunk_symbols, steps), coded.chunks)

    def _encode_to_size(self, image, seed: int, mode: Mode, progress: bool, bpp: float | None,
                        max_bytes: int | None) -> bytes:
        """A lossy file of at most ``max_bytes`` (or ``bpp`` bits per pixel) bytes. The layers
        aim below the target by a bound on the header; a file that still comes out larger (a
        layer's cost overshot its estimate) is encoded again (SIZE_TRIES)."""
        if mode != Mode.PROGRESSIVE:
            raise DiffcodecError("a size target makes a lossy progressive file: not with --mode lossless")
        if (bpp is None) == (max_bytes is None):
            raise DiffcodecError("give one size target: bpp or max_bytes")
        check_budgets(max_bytes=max_bytes, bpp=bpp)
        prepared = prepare(image)
        height, width, _ = prepared.rgb.shape
        if max(height, width) > MAX_SIDE:
            raise DiffcodecError(f"images up to {MAX_SIDE} pixels a side are supported")
        target = max_bytes if max_bytes is not None else int(min(bpp * height * width / 8, 2**40))
        layers = len(layer_targets(8 * target / (height * width)))
        header = header_bound(layers, 1 + chunk_count(3 * height * width, self.chunk_symbols), prepared.alpha,
                              self.runner.name)
        if target < header + MIN_LAYER_BYTES:
            raise DiffcodecError(f"a target of {target} bytes leaves no room for a layer after the header "
                                 f"(up to {header} bytes for this image)")
        budget = 8.0 * (target - header)
        with boundary("encoding"), threads_for_free_cores():
            context = self._context(seed & (2**64 - 1))
            for _ in range(SIZE_TRIES):
                coded = progressive.encode(context, prepared.rgb, 1, self.chunk_symbols, progress, target_bits=budget)
                data = pack_file(header_of(coded, prepared, context, self.chunk_symbols, coded.steps), coded.chunks)
                if len(data) <= target:
                    return data
                layers_bits = 8.0 * sum(layer.size for layer in coded.layers)  # aim lower by the overshoot
                budget *= SIZE_RETRY_MARGIN * max(layers_bits - 8.0 * (len(data) - target), 8.0) / layers_bits
        cut = parse_file(data).prefix(max_bytes=target)
        if cut.complete_layers() < 1:
            raise DiffcodecError(f"a target of {target} bytes is too small for this image's first layer")
        return data[: cut.size]

    def _decoding(self, f: DfcFile) -> tuple[Context, CodedImage]:
        """The context and coded image of a parsed file, refused if written with another model."""
        header = f.header
        if header.mode not in (Mode.STORED, Mode.PREDICTIVE):
            self.runner.check_model(header.model_name, header.model_hash, header.tile)
        return Context(self.runner, Tiling(header.tile), header.seed), coded_of(f)

    def decode_result(self, data: bytes | DfcFile, layers: int | None = None, max_bytes: int | None = None,
                      bpp: float | None = None, completion_steps: int = 0, progress: bool = False) -> Decoded:
        """Decode a .dfc file (bytes, or parsed once by the caller) or any prefix of one.

        ``layers``: use at most this many complete layers; ``max_bytes`` / ``bpp``: use only
        that much of the file (default: everything present, including the complete chunks
        of a cut layer). ``completion_steps``: reverse diffusion steps run after the last
        layer used (0 = the denoised estimate).
        """
        _check_completion_steps(completion_steps)
        with boundary("decoding"):
            f = data if isinstance(data, DfcFile) else parse_file(data)
            if layers is not None or max_bytes is not None or bpp is not None:
                f = f.prefix(layers=layers, max_bytes=max_bytes, bpp=bpp)
            self.limits.check(f.header, completion_steps)
            if f.header.mode == Mode.PROGRESSIVE and not any(f.chunks):  # (the other modes need whole files)
                raise ContainerError("nothing to decode: the part of the file used holds no layer data, "
                                     "only the header")
            with threads_for_free_cores():
                return self._decode(f, completion_steps, progress)

    def _decode(self, f: DfcFile, completion_steps: int, progress: bool) -> Decoded:
        header = f.header
        context, coded = self._decoding(f)
        if header.mode == Mode.PROGRESSIVE:
            chain = progressive.chain_of(context, coded)
            for last in progressive.walk(chain, coded, progress):  # keeps only the last point: each holds image-sized arrays
                pass
            rgb = progressive.render(chain, last, completion_steps, progress)
            used, partial, exact = last.complete_layers, last.partial, progressive.is_exact(last)
        else:
            rgb = lossless.decode(context, coded, progress)
            used, partial, exact = 1, False, True
        if exact and header.channels in (1, 2) and not (np.all(rgb[:, :, 0] == rgb[:, :, 1])
                                                        and np.all(rgb[:, :, 1] == rgb[:, :, 2])):
            raise does_not_decode("a grey image decodes to colour")  # (only grey was ever coded)
        image = restore(rgb, header.channels, header.alpha_kind, header.alpha)
        return Decoded(image, header.mode, used, len(header.layers), partial, exact, f.size, f.full_size,
                       header.lossy)

    def decode(self, data: bytes | DfcFile, layers: int | None = None, max_bytes: int | None = None,
               completion_steps: int = 0, progress: bool = False) -> np.ndarray:
        """The image of :meth:`decode_result`: (H, W[, C]) uint8. A file that is only a
        prefix (no budget asked for) decodes to a preview, with a PrefixWarning."""
        result = self.decode_result(data, layers=layers, max_bytes=max_bytes,
                                    completion_steps=completion_steps, progress=progress)
        if not result.exact and not result.whole and layers is None and max_bytes is None:
            warnings.warn(PrefixWarning(f"the file is a prefix: {result.describe()}"), stacklevel=2)
        return result.image

    def decode_every_layer(self, data: bytes, completion_steps: int = 0) -> list[np.ndarray]:
        """The image after 0, 1, ..., L layers, in one pass over the chain; for a prefix, up to
        the last layer it holds data of (DfcFile.layers_with_data: nothing after it to show)."""
        with boundary("decoding"):
            f = parse_file(data)
            if f.header.mode != Mode.PROGRESSIVE:
                raise DiffcodecError("only progressive files have layers to show")
            _check_completion_steps(completion_steps)
            self.limits.check(f.header, completion_steps * (len(f.header.layers) + 1))  # one per preview
            context, coded = self._decoding(f)
            chain = progressive.chain_of(context, coded)
            h = f.header
            return [restore(progressive.render(chain, point, completion_steps), h.channels, h.alpha_kind, h.alpha)
                    for point in progressive.walk(chain, coded)]  # f.layers_with_data() + 1 of them

    def lossless_bound(self, image, steps: int | None = None, seed: int = 0, uniform_grid: bool = False) -> dict:
        """The T-step NELBO (bits/dim) of the model the lossless coder uses: see lossless.bound.
        ``uniform_grid``: on the uniform grid instead of the model's optimised one."""
        rgb = prepare(image).rgb
        with boundary("computing the bound"):
            return lossless.bound(self._context(seed), rgb, steps or DEFAULT_LOSSLESS_STEPS,
                                  [] if uniform_grid else None)

