"""A model's stored time grids for the lossless chain: their validation and lookup.

The grids (fitted by coding/grid_fit.py, ``diffcodec tune-grid``) go into the checkpoint's
metadata (``time_grids``: T -> times), which the hash does not cover; every file stores
the grid it was coded with, so decoding never depends on the metadata.
"""

from __future__ import annotations

MAX_GRID_STEPS = 128
MAX_DENOMINATOR = 4096  # a file's shortest step (format.container.MIN_STEP)


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


def grid_fractions(metadata: dict, steps: int) -> list[float]:
    """t_0 = 0 < ... < t_T = 1 of the model's grid for ``steps`` (uniform without one), as
    fractions: what training on the chain uses."""
    stored = stored_grid(metadata, steps)
    if stored is None:
        return [i / steps for i in range(steps + 1)]
    numerators, denominator = stored
    return [n / denominator for n in reversed(numerators)]
