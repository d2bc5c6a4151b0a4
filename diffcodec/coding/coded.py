"""What every coder shares: the context both sides hold, and the coded image.

A coder's encoder returns a :class:`CodedImage` and its decoder reads one: the same type
both ways, so decoding mirrors encoding. Only codec.py maps it to and from the container's
header; the coders never see a header or a file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..format.container import LayerInfo, Mode
from .runner import ModelRunner, Tiling


@dataclass(frozen=True)
class Context:
    """What encoder and decoder of a file agree on besides its bits: the model (its exact
    network and schedule), how images are tiled for it, and the file's seed, from which
    every shared random number (dither, noise, starting latent) is drawn."""

    runner: ModelRunner
    tiling: Tiling
    seed: int


@dataclass
class CodedImage:
    """An image as a coder writes it: the coder (``mode``), its layers as the header
    describes them with their chunks (decoding: the complete chunks present), and its
    mode's own fields."""

    mode: Mode
    layers: list[LayerInfo]
    chunks: list[list[bytes]]
    height: int = 0
    width: int = 0
    steps: int = 0  # steps of the time grid (a lossless chain on a uniform grid: the only record of them)
    chunk_symbols: int = 0  # progressive: symbols per chunk of a step layer
    bands: list[int] = field(default_factory=list)  # lossless: rows of each band
    chain_params: list[int] = field(default_factory=list)  # lossless: the chain's step parameters (step_context.py)
    times: list[int] = field(default_factory=list)  # progressive, lossless: an explicit time grid
    blends: list[int] = field(default_factory=list)  # progressive: per step layer, and the tail's start
    lossy_steps: int = 0  # progressive: rate-placed step layers
    tail_mode: int = 0  # progressive: the tail's coder, or NO_TAIL (0): a lossy file
    detail_index: int = 0  # progressive: the original's detail energy (detail.py)

    def complete(self, layer: int) -> bool:
        """Whether every chunk of ``layer`` is present."""
        return len(self.chunks[layer]) == len(self.layers[layer].chunk_lengths)
