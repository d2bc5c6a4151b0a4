"""Exceptions that the CLI turns into one clear line and a non-zero exit.

Anything raised as a :class:`DiffcodecError` is a problem with the user's input (a
missing file, a damaged checkpoint, a folder without images), not a bug, so the CLI
prints ``error: <message>`` instead of a traceback.
"""


class DiffcodecError(Exception):
    """Base class for every error caused by bad input rather than by a bug."""


class ImageReadError(DiffcodecError):
    """A file could not be read as an image."""


class DatasetError(DiffcodecError):
    """A dataset folder is missing, empty or holds no readable images."""


class CheckpointError(DiffcodecError):
    """A model checkpoint is missing, damaged, foreign or of an unknown version."""
