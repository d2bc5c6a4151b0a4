"""The codec's front: image -> coder -> header -> container, and back.

The coders (coding/) own their loops and return their layers and mode-specific header
fields; the header is built here, once, from those and the image's own fields.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .coding import entropy, lossless, progressive, stored
from .coding.runner import DEFAULT_TILE, MAX_CODING_THREADS, ModelRunner, Tiling
from .errors import DiffcodecError
from .format.container import DfcFile, Header, Mode, pack_file, parse_file
from .images import prepare, restore
from .model import DiffusionModel, load_named_model

DEFAULT_STEPS = progressive.DEFAULT_STEPS
DEFAULT_LOSSLESS_STEPS = lossless.DEFAULT_STEPS
MAX_STEPS = 1024


@dataclass
class Decoded:
    """A decoded image and how it was obtained."""

    image: np.ndarray  # (H, W[, C]) uint8, the file's channels
    mode: Mode
    layers_used: int  # complete layers that went into it
    layers_total: int
    partial: bool  # the chunks present of one more layer went into it too
    exact: bool  # the original pixels, not a best-effort preview of a prefix


class Codec:
    """A loaded model, ready to encode and decode .dfc files.

    ``model`` is a registered name (``"default"``), a checkpoint path or a DiffusionModel.
    """

    def __init__(self, model: str | DiffusionModel | None = None, device: str = "cpu",
                 tile: int = DEFAULT_TILE, chunk_symbols: int = entropy.CHUNK_SYMBOLS) -> None:
        if not isinstance(model, DiffusionModel):
            model = load_named_model(model or "default", device)
        self.model = model
        self.runner = ModelRunner(model)
        if tile % model.config.stride or not 0 < tile < 2**16:
            raise DiffcodecError(f"tile must be a multiple of {model.config.stride} below 65536")
        self.tile = tile
        self.chunk_symbols = chunk_symbols

    def _tiling(self) -> Tiling:
        return Tiling(self.tile, min(torch.get_num_threads(), MAX_CODING_THREADS))

    def encode(self, image, steps: int | None = None, seed: int = 0, mode: str | Mode = "progressive",
               progress: bool = False, stored_fallback: bool = True) -> bytes:
        """Encode an image (PIL, array or tensor) into a .dfc file.

        ``mode="progressive"``: truncatable layers, one per reverse step: ``steps`` placed by
        rate (default 10), then the tail steps to t = 0 and the pixels.
        ``mode="lossless"``: bits-back coding over a ``steps``-step chain (default 32); where
        zlib does better the file stores the zlib-compressed pixels instead (mode "stored"),
        unless ``stored_fallback`` is False.
        """
        mode = Mode.parse(mode)
        if mode == Mode.STORED:
            raise DiffcodecError("mode 'stored' is chosen by the lossless encoder, not asked for")
        steps = steps or (DEFAULT_STEPS if mode == Mode.PROGRESSIVE else DEFAULT_LOSSLESS_STEPS)
        if not 1 <= steps <= MAX_STEPS:
            raise DiffcodecError(f"steps must be between 1 and {MAX_STEPS}")
        prepared = prepare(image)
        seed &= 2**64 - 1
        tiling = self._tiling()
        if mode == Mode.PROGRESSIVE:
            coded = progressive.encode(self.runner, prepared.rgb, steps, seed, tiling, self.chunk_symbols, progress)
        else:
            coded = lossless.encode(self.runner, prepared.rgb, steps, seed, tiling, progress, stored_fallback)
        height, width, _ = prepared.rgb.shape
        explicit = bool(coded.times)
        header = Header(mode=coded.mode, model_name=self.runner.name, model_hash=self.runner.hash,
                        height=height, width=width, channels=prepared.channels,
                        steps=len(coded.times) - 1 if explicit else steps, seed=seed,
                        tile=tiling.tile, chunk_symbols=self.chunk_symbols, threads=tiling.threads,
                        alpha_kind=prepared.alpha_kind, alpha=prepared.alpha, layers=coded.layers,
                        bands=coded.bands, chain_scales=coded.chain_scales,
                        time_grid="explicit" if explicit else "uniform", times=coded.times,
                        lossy_steps=coded.lossy_steps, blends=coded.blends)
        return pack_file(header, coded.chunks)

    def decode_result(self, data: bytes | DfcFile, layers: int | None = None, max_bytes: int | None = None,
                      bpp: float | None = None, completion_steps: int = 0, progress: bool = False) -> Decoded:
        """Decode a .dfc file (bytes, or parsed once by the caller) or any prefix of one.

        ``layers``: use at most this many complete layers; ``max_bytes`` / ``bpp``: use only
        that much of the file (default: everything present, including the complete chunks
        of a cut layer). ``completion_steps``: reverse diffusion steps run after the last
        layer used (0 = the denoised estimate).
        """
        f = data if isinstance(data, DfcFile) else parse_file(data)
        if layers is not None or max_bytes is not None or bpp is not None:
            f = f.prefix(layers=layers, max_bytes=max_bytes, bpp=bpp)
        header = f.header
        if header.mode == Mode.PROGRESSIVE:
            chain = progressive.chain_of(self.runner, f)
            *_, last = progressive.walk(chain, f, progress)
            rgb = progressive.render(chain, last, completion_steps)
            used, partial, exact = last.complete_layers, last.partial, progressive.is_exact(last)
        else:
            rgb = lossless.decode(self.runner, f, progress) if header.mode == Mode.LOSSLESS else stored.decode(f)
            used, partial, exact = 1, False, True
        image = restore(rgb, header.channels, header.alpha_kind, header.alpha)
        return Decoded(image, header.mode, used, len(header.layers), partial, exact)

    def decode(self, data: bytes | DfcFile, layers: int | None = None, max_bytes: int | None = None,
               completion_steps: int = 0, progress: bool = False) -> np.ndarray:
        """The image of :meth:`decode_result`: (H, W[, C]) uint8."""
        return self.decode_result(data, layers=layers, max_bytes=max_bytes,
                                  completion_steps=completion_steps, progress=progress).image

    def decode_every_layer(self, data: bytes, completion_steps: int = 0) -> list[np.ndarray]:
        """The image after 0, 1, ..., L complete layers, in one pass over the chain."""
        f = parse_file(data)
        if f.header.mode != Mode.PROGRESSIVE:
            raise DiffcodecError("only progressive files have layers to show")
        chain = progressive.chain_of(self.runner, f)
        h = f.header
        return [restore(progressive.render(chain, point, completion_steps), h.channels, h.alpha_kind, h.alpha)
                for point in progressive.walk(chain, f)]

    def lossless_bound(self, image, steps: int | None = None, seed: int = 0) -> dict:
        """The T-step NELBO (bits/dim) of the model the lossless coder uses: see lossless.bound."""
        rgb = prepare(image).rgb
        return lossless.bound(self.runner, self._tiling(), rgb, steps or DEFAULT_LOSSLESS_STEPS, seed)
