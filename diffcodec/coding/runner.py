"""What the coders need from a model, computed the same way on both sides.

Encoder and decoder must see the very same float64 numbers: gamma on a time grid, and
network predictions computed tile by tile with the same tiling and the same number of
CPU threads (BLAS splits its sums by thread count; the count is stored in the header).
The model's identity (a hash of config and weights) goes into every file, so a file
decoded with another model is refused rather than decoded into garbage.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DiffcodecError
from ..format.container import TIME_UNITS
from ..model import DiffusionModel, model_hash
from ..model.time_grid import stored_grid

DEFAULT_TILE = 1024
TILE_HALO = 32


@dataclass(frozen=True)
class Tiling:
    """How the network is run on an image: tile side and CPU threads (from the header)."""

    tile: int
    threads: int


@contextlib.contextmanager
def network_threads(count: int):
    """Run the network with exactly ``count`` CPU threads (the encoder's count)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ModelRunner:
    """A model in eval mode with float64 schedule, tiled predictions and an identity."""

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model.eval()
        self.device = model.device
        self.name = model.config.name
        self.hash_hex = getattr(model, "model_hash", None) or model_hash(model)
        self.hash = bytes.fromhex(self.hash_hex)[:16]
        self.schedule64 = copy.deepcopy(model.schedule).double().cpu()
        if self.device.type == "cuda":  # same kernels on both sides
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False

    def check_model(self, model_name: str, file_hash: bytes, tile: int) -> None:
        """Refuse a file written with another model, or with a tile this model cannot run."""
        if file_hash != self.hash:
            raise DiffcodecError(
                f"this file was encoded with model '{model_name}' ({file_hash.hex()[:12]}), "
                f"not the loaded model '{self.name}' ({self.hash_hex[:12]}): pass the right --model")
        if tile % self.model.config.stride:
            raise DiffcodecError(f"damaged file: tile size {tile} is not a multiple of the model's "
                                 f"stride {self.model.config.stride}")

    @torch.no_grad()
    def gammas(self, times: np.ndarray) -> np.ndarray:
        return self.schedule64(torch.from_numpy(np.asarray(times, dtype=np.float64)))[0].numpy()

    def uniform_gammas(self, steps: int) -> np.ndarray:
        """gamma at t = i / steps, i = 0..steps."""
        return self.gammas(np.arange(steps + 1, dtype=np.float64) / steps)

    def chain_times(self, steps: int) -> list[int]:
        """The model's optimised grid for a ``steps``-step chain (model/time_grid.py), t = 1
        first, in 1/TIME_UNITS; [] when it has none for that T (the chain is then uniform)."""
        fractions = stored_grid(getattr(self.model, "metadata", None) or {}, steps)
        if fractions is None:
            return []
        numerators, denominator = fractions
        return [n * (TIME_UNITS // denominator) for n in numerators]

    def chain_gammas(self, steps: int, times: list[int]) -> np.ndarray:
        """gamma at t_0 = 0 < ... < t_T = 1: the explicit grid ``times`` (t = 1 first), or uniform."""
        if not times:
            return self.uniform_gammas(steps)
        return self.gammas(np.asarray(times[::-1], dtype=np.float64) / TIME_UNITS)

    @torch.no_grad()
    def predict(self, z: np.ndarray, gamma: float, tiling: Tiling, chain: bool = False) -> tuple[np.ndarray, ...]:
        """Network estimates for z (H, W, 3), tile by tile, as float64 (H, W, 3) arrays:
        DiffusionModel.progressive_prediction (x_hat in [-1, 1], log-scale of its error), or
        with ``chain`` DiffusionModel.chain_prediction (x_eps, x_progressive and the
        log-scales of their errors)."""
        with network_threads(tiling.threads):
            return self._predict_tiles(z, gamma, tiling.tile, chain)

    def _predict_tiles(self, z: np.ndarray, gamma: float, tile: int, chain: bool) -> tuple[np.ndarray, ...]:
        height, width, _ = z.shape
        prediction = self.model.chain_prediction if chain else self.model.progressive_prediction
        outputs: list[np.ndarray] = []
        gamma_t = torch.tensor([gamma], dtype=torch.float32, device=self.device)
        halo = TILE_HALO if (height > tile or width > tile) else 0
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                y0, x0 = max(0, top - halo), max(0, left - halo)
                y1, x1 = min(height, top + tile + halo), min(width, left + tile + halo)
                window = torch.from_numpy(np.ascontiguousarray(z[y0:y1, x0:x1].transpose(2, 0, 1)))
                window = window.float().unsqueeze(0).to(self.device)
                results = prediction(window, gamma_t)
                if not outputs:
                    outputs = [np.empty_like(z) for _ in results]
                inner = (slice(top - y0, top - y0 + min(tile, height - top)),
                         slice(left - x0, left - x0 + min(tile, width - left)))
                dest = (slice(top, top + tile), slice(left, left + tile))
                for output, result in zip(outputs, results):
                    output[dest] = result[0].cpu().numpy().transpose(1, 2, 0)[inner]
        return tuple(outputs)
