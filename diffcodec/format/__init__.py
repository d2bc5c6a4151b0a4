"""The .dfc file: container (header, layers, chunks, prefix cuts) and its description."""

from .container import ContainerError, DfcFile, Header, LayerInfo, Mode, pack_file, parse_file
from .info import describe

__all__ = ["ContainerError", "DfcFile", "Header", "LayerInfo", "Mode", "describe", "pack_file", "parse_file"]
