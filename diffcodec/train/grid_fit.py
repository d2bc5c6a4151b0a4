"""The lossless chain's time grids, chosen by dynamic programming over a model's error profile.

A T-step chain pays the discretisation penalty of its steps, and how much depends on where
the steps are: Watson et al. (2021) find grids by dynamic programming over per-step KL
terms. Here the step s <- t (s < t) of the lossless chain, whose reverse variance is
sigma_Q^2 + (k c s_x)^2 (chain.py), costs per dimension

    KL = 1/2 E[ ln(1 + k^2 r s_x^2) + (1 + r e^2) / (1 + k^2 r s_x^2) - 1 ],   r = SNR(s) - SNR(t),

with e = x - x_hat(z_t), s_x the network's predicted scale of e, and k the calibration
factor the encoder fits per step (the min over k is taken). Everything but r depends on t
alone, so one network pass per candidate time over pilot crops gives the cost of every
step between candidates, and the cheapest path from t = 0 to t = 1 with T edges is the
best T-step grid. (With k = 0 this is VDM's fixed-variance term 1/2 r E[e^2].) The grids
are stored with the model (model/time_grid.py).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..coding.step_context import scale_factor
from ..coding.runner import ModelRunner
from ..format.container import CHAIN_SCALE_RANGE
from ..model import diffusion as dm
from ..model.time_grid import MAX_GRID_STEPS

CANDIDATES = 256  # candidate times k / CANDIDATES (a power of two: exact in a file's time units)
# calibration factors tried: every 8th index of the coder's range (the cost is flat near its best)
_SCALE_FACTORS = np.array([scale_factor(i) for i in range(CHAIN_SCALE_RANGE[0], CHAIN_SCALE_RANGE[1] + 1, 8)])


@torch.no_grad()
def error_profile(runner: ModelRunner, crops: np.ndarray, candidates: int = CANDIDATES, elements: int = 16384,
                  seed: int = 0) -> dict:
    """gamma, and the squared errors e^2 and predicted scales s_x^2 of the chain's x_hat, at
    each candidate time t = k / candidates (k = 1..candidates), for ``elements`` elements
    drawn from ``crops`` (N, H, W, 3 uint8), one noise draw per time, all crops in one batch."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(dm.scale_pixels_array(crops).transpose(0, 3, 1, 2).copy()).float()
    chosen = torch.randperm(x.numel(), generator=generator)[: min(elements, x.numel())]
    gammas = runner.gammas(np.arange(candidates + 1, dtype=np.float64) / candidates)
    error2 = np.zeros((candidates + 1, chosen.numel()))
    scale2 = np.zeros_like(error2)
    device = runner.device
    for k in range(1, candidates + 1):
        gamma = torch.full((len(x),), float(gammas[k]))
        z = dm.diffuse(x, gamma, torch.randn(x.shape, generator=generator))
        x_hat, _, _, log_scale = runner.model.chain_prediction(z.to(device), gamma.to(device))
        error2[k] = ((x - x_hat.cpu().double()).reshape(-1)[chosen] ** 2).numpy()
        scale2[k] = torch.exp(2.0 * log_scale.cpu().double()).reshape(-1)[chosen].numpy()
    return dict(gammas=gammas, error2=error2, scale2=scale2)


def step_costs(profile: dict) -> np.ndarray:
    """cost[i, j]: bits per dimension of the step from candidate time j down to i < j with
    the calibration factor that suits it best (inf elsewhere)."""
    snr = np.exp(-profile["gammas"])
    count = len(snr)
    cost = np.full((count, count), np.inf)
    for j in range(1, count):
        r = (snr[:j] - snr[j])[:, None, None]
        e2, s2 = profile["error2"][j][None, None], profile["scale2"][j][None, None]
        for lo in range(0, j, 32):  # blocks of start times keep the (i, k, element) array small
            part = r[lo : lo + 32]
            v = 1.0 + (_SCALE_FACTORS[None, :, None] ** 2) * part * s2
            nats = 0.5 * (np.log(v) + (1.0 + part * e2) / v - 1.0).mean(axis=2)
            cost[lo : lo + len(part), j] = nats.min(axis=1) / math.log(2)
    return cost


def cheapest_grids(cost: np.ndarray, max_steps: int) -> dict[int, list[int]]:
    """For each T = 1..max_steps, the candidate indices 0 = i_0 < ... < i_T = last of the
    cheapest T-edge path (dynamic programming over the step costs)."""
    last = cost.shape[0] - 1
    best = np.full(last + 1, np.inf)
    best[0] = 0.0
    choices = []
    grids = {}
    for steps in range(1, min(max_steps, last) + 1):
        total = best[:, None] + cost
        choices.append(total.argmin(axis=0))
        best = total.min(axis=0)
        path = [last]
        for choice in reversed(choices):
            path.append(int(choice[path[-1]]))
        grids[steps] = path[::-1]
    return grids


def grid_cost(cost: np.ndarray, path: list[int]) -> float:
    return float(sum(cost[i, j] for i, j in zip(path, path[1:])))


def fit_time_grids(runner: ModelRunner, crops: np.ndarray, candidates: int = CANDIDATES, elements: int = 16384,
                   max_steps: int = MAX_GRID_STEPS, seed: int = 0) -> dict:
    """Metadata for a model: ``time_grids`` (``denominator`` and, per T, the grid's times as
    numerators, t = 1 first) and a summary of the predicted diffusion bits per dimension
    for the uniform and the optimised grid at a few T."""
    profile = error_profile(runner, crops, candidates, elements, seed)
    cost = step_costs(profile)
    grids = cheapest_grids(cost, max_steps)
    summary = {}
    for steps in (8, 16, 32, 64):
        if steps in grids and candidates % steps == 0:
            uniform = list(range(0, candidates + 1, candidates // steps))
            summary[str(steps)] = {"uniform": round(grid_cost(cost, uniform), 4),
                                   "optimised": round(grid_cost(cost, grids[steps]), 4)}
    return {
        "time_grids": {"denominator": candidates,
                       "grids": {str(steps): path[::-1] for steps, path in grids.items()}},
        "time_grid_fit": {"candidates": candidates, "elements": int(profile["error2"].shape[1]),
                          "crops": int(len(crops)), "crop_size": list(crops.shape[1:3]),
                          "predicted_diffusion_bpd": summary},
    }
