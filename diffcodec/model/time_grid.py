"""Time grids for T-step chains, chosen by dynamic programming over a model's error profile.

A T-step chain pays the discretisation penalty of its steps, and how much depends on where
the steps are: Watson et al. (2021) find grids by dynamic programming over per-step KL
terms. Here the step s <- t (s < t) of the lossless chain, whose reverse variance is
sigma_Q^2 + (k c s_x)^2 (coding/chain.py), costs per dimension

    KL = 1/2 E[ ln(1 + k^2 r s_x^2) + (1 + r e^2) / (1 + k^2 r s_x^2) - 1 ],   r = SNR(s) - SNR(t),

with e = x - x_hat(z_t), s_x the network's predicted scale of e, and k the calibration
factor the encoder fits per step (the min over k is taken). Everything but r depends on t
alone, so one network pass per candidate time over pilot crops gives the cost of every
step between candidates, and the cheapest path from t = 0 to t = 1 with T edges is the
best T-step grid. (With k = 0 this is VDM's fixed-variance term 1/2 r E[e^2].)

The grids go into the checkpoint's metadata (``time_grids``: T -> times), which the
hash does not cover; every file stores the grid it was coded with, so decoding never
depends on the metadata.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch

from .diffusion import scale_pixels_array

CANDIDATES = 256  # candidate times k / CANDIDATES (a power of two: exact in a file's time units)
MAX_GRID_STEPS = 128
MAX_DENOMINATOR = 4096  # a file's shortest step (format.container.MIN_STEP)
_SCALE_FACTORS = 2.0 ** (np.arange(-128, 49, 8) / 16)  # calibration factors tried (chain.scale_factor)


def check_time_grids(metadata: dict) -> None:
    """Refuse malformed stored grids (a checkpoint is untrusted input): ValueError."""
    stored = metadata.get("time_grids")
    if stored is None:
        return
    denominator = stored.get("denominator") if isinstance(stored, dict) else None
    grids = stored.get("grids") if isinstance(stored, dict) else None
    if type(denominator) is not int or not 2 <= denominator <= MAX_DENOMINATOR or denominator & (denominator - 1):
        raise ValueError("time grid denominator")
    if not isinstance(grids, dict) or len(grids) > MAX_GRID_STEPS:
        raise ValueError("time grids")
    for steps, times in grids.items():
        if not (isinstance(steps, str) and steps.isdigit() and isinstance(times, list) and len(times) == int(steps) + 1
                and all(type(t) is int for t in times) and times[0] == denominator and times[-1] == 0
                and all(a > b for a, b in zip(times, times[1:]))):
            raise ValueError(f"time grid for {steps[:8]!r} steps")


def stored_grid(metadata: dict, steps: int) -> tuple[list[int], int] | None:
    """The model's grid for ``steps`` steps as (numerators, t = 1 first; denominator), or None."""
    stored = metadata.get("time_grids")
    if not stored or str(steps) not in stored["grids"]:
        return None
    return stored["grids"][str(steps)], stored["denominator"]


@torch.no_grad()
def error_profile(model, crops: np.ndarray, candidates: int = CANDIDATES, elements: int = 16384,
                  seed: int = 0) -> dict:
    """Squared errors e^2 and predicted scales s_x^2 of the chain's x_hat at each candidate
    time t = k / candidates (k = 1..candidates), for ``elements`` elements drawn from
    ``crops`` (N, H, W, 3 uint8), one noise draw per time."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(scale_pixels_array(crops).transpose(0, 3, 1, 2).copy()).float()
    chosen = torch.randperm(x.numel(), generator=generator)[: min(elements, x.numel())]
    times = np.arange(candidates + 1, dtype=np.float64) / candidates
    gammas = copy.deepcopy(model.schedule).double().cpu()(torch.from_numpy(times))[0].numpy()
    error2 = np.zeros((candidates + 1, chosen.numel()))
    scale2 = np.zeros_like(error2)
    device = model.device
    for k in range(1, candidates + 1):
        gamma = float(gammas[k])
        alpha, sigma = math.sqrt(1.0 / (1.0 + math.exp(gamma))), math.sqrt(1.0 / (1.0 + math.exp(-gamma)))
        z = alpha * x + sigma * torch.randn(x.shape, generator=generator)
        x_hat, _, log_scale = model.chain_prediction(z.to(device), torch.full((len(x),), gamma, device=device))
        error2[k] = ((x - x_hat.cpu().double()).reshape(-1)[chosen] ** 2).numpy()
        scale2[k] = torch.exp(2.0 * log_scale.cpu().double()).reshape(-1)[chosen].numpy()
    return dict(times=times, gammas=gammas, error2=error2, scale2=scale2)


def step_costs(profile: dict, calibrated: bool = True) -> np.ndarray:
    """cost[i, j]: bits per dimension of the step from candidate time j down to i < j
    (inf elsewhere); ``calibrated=False``: VDM's fixed reverse variance."""
    snr = np.exp(-profile["gammas"])
    count = len(snr)
    cost = np.full((count, count), np.inf)
    for j in range(1, count):
        r = (snr[:j] - snr[j])[:, None, None]
        e2, s2 = profile["error2"][j][None, None], profile["scale2"][j][None, None]
        if not calibrated:
            cost[:j, j] = 0.5 * r[:, 0, 0] * e2.mean() / math.log(2)
            continue
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


def fit_time_grids(model, crops: np.ndarray, candidates: int = CANDIDATES, elements: int = 16384,
                   max_steps: int = MAX_GRID_STEPS, seed: int = 0) -> dict:
    """Metadata for a model: ``time_grids`` (``denominator`` and, per T, the grid's times as
    numerators, t = 1 first) and a summary of the predicted diffusion bits per dimension
    for the uniform and the optimised grid at a few T."""
    profile = error_profile(model, crops, candidates, elements, seed)
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
