"""What the coders need from a model, computed with the same bits on every machine.

Encoder and decoder must see the very same float64 numbers: gamma on a time grid (the
schedule's portable evaluation) and the network's predictions, computed tile by tile by
the exact network (model/exact_network.py), whose results depend on no instruction set,
thread count or device. The model's identity (a hash of config and weights) goes into
every file, so a file decoded with another model is refused rather than decoded into garbage.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import DiffcodecError
from ..format.container import TIME_UNITS
from ..model import DiffusionModel, model_hash
from ..model.diffusion import alpha_sigma_of
from ..model import exact
from ..model.exact_network import ExactNetwork
from ..model.network import SCALE_HEAD_INIT
from ..model.time_grid import stored_grid

DEFAULT_TILE = 1024
TILE_HALO = 32
# The placer interpolates SNR(t) in this table: at 2^12 intervals its error is far below
# the placer's tolerance on a layer's size, and one table per model costs under a second.
SNR_TABLE_STEPS = 4096


@dataclass(frozen=True)
class Tiling:
    """How the network is run on an image: the tile side (from the header)."""

    tile: int


def _busy_cores(window: float = 0.05) -> float | None:
    """How many cores other processes keep busy, from /proc/stat over ``window`` seconds,
    less this process's own time (torch's threads spin on after a parallel region); None
    where there is no /proc."""
    def sample() -> tuple[int, int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        with open("/proc/self/stat") as f:
            own = f.read().rsplit(")", 1)[1].split()  # fields after the command name
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle, int(own[11]) + int(own[12])  # utime + stime

    try:
        total0, idle0, own0 = sample()
        time.sleep(window)
        total1, idle1, own1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    others = (total1 - total0) - (idle1 - idle0) - (own1 - own0)
    return max(0.0, others / (total1 - total0)) * (os.cpu_count() or 1)


@contextlib.contextmanager
def threads_for_free_cores():
    """Run the network on the cores other processes leave free (at least one, at most the
    threads torch would use). Results do not depend on the thread count; time does: torch's
    threads spin-wait for each other, so one more thread than free cores runs several times
    slower beside another busy process."""
    previous = torch.get_num_threads()
    busy = _busy_cores()
    free = previous if busy is None else max(1, min(previous, (os.cpu_count() or 1) - round(busy)))
    torch.set_num_threads(free)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class ModelRunner:
    """A model's exact network, portable schedule, tiled predictions and identity."""

    def __init__(self, model: DiffusionModel) -> None:
        self.model = model.eval()
        self.device = model.device
        self.name = model.config.name
        self.hash_hex = getattr(model, "model_hash", None) or model_hash(model)
        self.hash = bytes.fromhex(self.hash_hex)[:16]
        self.network = ExactNetwork(model.network)
        self._snr_grid: tuple[np.ndarray, np.ndarray] | None = None

    def check_model(self, model_name: str, file_hash: bytes, tile: int) -> None:
        """Refuse a file written with another model, or with a tile this model cannot run."""
        if file_hash != self.hash:
            raise DiffcodecError(
                f"this file was encoded with model '{model_name}' ({file_hash.hex()[:12]}), "
                f"not the loaded model '{self.name}' ({self.hash_hex[:12]}): pass the right --model")
        if tile % self.model.config.stride:
            raise DiffcodecError(f"damaged file: tile size {tile} is not a multiple of the model's "
                                 f"stride {self.model.config.stride}")

    def gammas(self, times: np.ndarray) -> np.ndarray:
        return self.model.schedule.portable(np.asarray(times, dtype=np.float64))

    def snr_grid(self) -> tuple[np.ndarray, np.ndarray]:
        """SNR(t) at t = k / SNR_TABLE_STEPS (the layer placer's table), computed once per model."""
        if self._snr_grid is None:
            times = np.linspace(0.0, 1.0, SNR_TABLE_STEPS + 1)
            self._snr_grid = times, exact.exp(-self.gammas(times))
        return self._snr_grid

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

    def predict(self, z: np.ndarray, gamma: float, tiling: Tiling, chain: bool = False,
                edge_rows: int | None = None) -> tuple[np.ndarray, ...]:
        """Network estimates for z (H, W, 3), tile by tile, as float64 (H, W, 3) arrays: the
        progressive estimate (x_hat in [-1, 1]) and the log-scale of its error, or with
        ``chain`` (:meth:`estimates`) the eps-based estimate, the progressive one and the
        log-scales of their errors; with ``edge_rows`` (chain), the progressive ones over the
        top edge_rows rows only (a model with the chain's head computes no more of them)."""
        outputs = self._predict_tiles(z, gamma, tiling.tile, edge_rows if chain else None)
        estimates = self.estimates(z, gamma, outputs)
        return estimates if chain else (estimates[1], estimates[2])

    def estimates(self, z: np.ndarray, gamma: float, outputs: list[np.ndarray]) -> tuple[np.ndarray, ...]:
        """From the network's outputs (DiffusionModel.chain_prediction's formulas, portably):
        the clipped eps-based estimate, the progressive estimate alpha^2 x_eps + (1 - alpha^2)
        x_direct, the log-scale of its error, and the chain head's log-scale."""
        alpha, sigma = alpha_sigma_of(gamma)
        x_eps = np.clip((z - sigma * outputs[0]) / alpha, -1.0, 1.0)
        if len(outputs) == 1:
            log_scale = np.full_like(z, SCALE_HEAD_INIT)
            return x_eps, x_eps, log_scale, log_scale
        x_direct, log_scale = np.clip(outputs[1], -1.0, 1.0), outputs[2]
        chain_log_scale = outputs[3] if len(outputs) > 3 else log_scale
        weight = alpha * alpha
        return x_eps, weight * x_eps[: len(x_direct)] + (1.0 - weight) * x_direct, log_scale, chain_log_scale

    def _predict_tiles(self, z: np.ndarray, gamma: float, tile: int, edge_rows: int | None = None) -> list[np.ndarray]:
        """The network's outputs over z, tile by tile; those it gives over the top ``edge_rows``
        rows only (ExactNetwork) fill that many rows."""
        height, width, _ = z.shape
        partial = edge_rows is not None and self.network.edge_heads
        sizes = [min(edge_rows, height) if partial and k in (1, 2) else height for k in range(4)]
        outputs: list[np.ndarray] = []
        halo = TILE_HALO if (height > tile or width > tile) else 0
        for top in range(0, height, tile):
            for left in range(0, width, tile):
                y0, x0 = max(0, top - halo), max(0, left - halo)
                y1, x1 = min(height, top + tile + halo), min(width, left + tile + halo)
                window = torch.from_numpy(np.ascontiguousarray(z[y0:y1, x0:x1].transpose(2, 0, 1), dtype=np.float64))
                results = self.network(window.unsqueeze(0).to(self.device), gamma,
                                       None if edge_rows is None else max(0, edge_rows - y0))
                if not outputs:
                    outputs = [np.empty((size, width, 3)) for size, _ in zip(sizes, results)]
                source = slice(left - x0, left - x0 + min(tile, width - left))
                for output, result in zip(outputs, results):
                    end = min(top + tile, len(output))  # the image rows top..end of this output
                    if end > top:
                        output[top:end, left : left + tile] = result[0].cpu().numpy().transpose(1, 2, 0)[
                            top - y0 : end - y0, source]
        return outputs
