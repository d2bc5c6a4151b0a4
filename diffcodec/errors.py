"""Exceptions that the CLI turns into one clear line and a non-zero exit.

Anything raised as a :class:`DiffcodecError` is a problem with the user's input (a
missing file, a damaged checkpoint, a folder without images), not a bug, so the CLI
prints ``error: <message>`` instead of a traceback.
"""

import contextlib
import zlib


class DiffcodecError(Exception):
    """Base class for every error caused by bad input rather than by a bug."""


class ImageReadError(DiffcodecError):
    """A file could not be read as an image."""


class DatasetError(DiffcodecError):
    """A dataset folder is missing, empty or holds no readable images."""


class CheckpointError(DiffcodecError):
    """A model checkpoint is missing, damaged, foreign or of an unknown version."""


class LimitError(DiffcodecError):
    """A file asks for more work than the decoder accepts by default (codec.DecodeLimits)."""


@contextlib.contextmanager
def boundary(action: str):
    """Turn anything a dependency raises (constriction, zlib, Pillow, torch, numpy), including
    constriction's Rust panics, which derive from BaseException, into a DiffcodecError, so a
    caller's ``except DiffcodecError`` (and the CLI's one-line errors) cover them.

    ``action`` names what failed ("decoding", "encoding"). Ctrl-C and exits pass through.
    """
    try:
        yield
    except (DiffcodecError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except MemoryError:
        raise DiffcodecError(f"out of memory while {action} (a smaller image, or fewer threads)") from None
    except BaseException as exc:  # noqa: BLE001 - a panic is a BaseException
        if action == "decoding" and (not isinstance(exc, Exception) or isinstance(exc, (zlib.error, ValueError))):
            # a panic in the entropy coder, or data zlib or numpy refuse: the file's data, as far as is known
            raise does_not_decode("a decoder rejects its data") from exc
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        name = type(exc).__name__
        raise DiffcodecError(f"{action} failed: {name}{': ' + detail if detail else ''}") from exc


def does_not_decode(what: str) -> DiffcodecError:
    """A file whose container checks passed but whose content fails a decoder's check: all
    that is known is that it does not decode here."""
    return DiffcodecError(f"this file does not decode here: {what}; it is damaged, or was written by "
                          "another version of diffcodec")
