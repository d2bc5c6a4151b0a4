"""Writing a file so that nothing the user had is lost: into a new temporary file beside the
target, then renamed over it.

The temporary file is created exclusively with a random name (``mkstemp``), so a link
planted beside the target is never followed; the rename is atomic, so a crash or Ctrl-C
leaves either the old file or the new one, never half of one. The new file gets the usual
permissions (0666 less the umask), not mkstemp's private 0600.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write`` on a new temporary file beside ``path``, then rename it to ``path``.
    OSErrors (no such folder, permissions, a full disk) propagate; the temporary file is
    removed whatever happens."""
    path = Path(path)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
        os.chmod(name, 0o666 & ~_umask())
        os.replace(name, path)
    finally:
        if os.path.exists(name):
            os.unlink(name)
