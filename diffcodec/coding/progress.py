"""Progress bars for the coding loops (tqdm on stderr, nothing when disabled)."""

from __future__ import annotations

from typing import Iterable


class _Silent:
    def update(self, count: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(iterable: Iterable, enabled: bool, total: int, desc: str, unit: str) -> Iterable:
    """``iterable``, with a bar when ``enabled``."""
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True)


def counter_bar(enabled: bool, total: int, initial: int, desc: str, unit: str):
    """A bar advanced by hand (``update(n)``, ``close()``); a silent one when not ``enabled``."""
    if not enabled:
        return _Silent()
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
