"""A contact sheet: a progressive file's previews side by side, each labelled with what it
cost (bytes, bits per pixel) and, given the original, its PSNR."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from .format import parse_file
from .metrics import psnr

THUMB_WIDTH = 320  # each preview's width on the sheet (smaller images keep their size)
LABEL_HEIGHT = 16
COLUMNS = 4


def preview_sizes(data: bytes) -> list[tuple[int, bool]]:
    """(bytes used, whether its last layer is cut) of each preview that
    :meth:`Codec.decode_every_layer` returns: the header, then the header and the first k
    layers, as much of them as ``data`` holds."""
    f = parse_file(data)
    sizes = [(f.header_size, False)]
    for k in range(f.layers_with_data()):
        sizes.append((sizes[-1][0] + sum(len(c) for c in f.chunks[k]), not f.layer_complete(k)))
    return sizes


def labels(data: bytes, previews: list[np.ndarray], original: np.ndarray | None = None) -> list[str]:
    """One line per preview: its layers (saying when the last is cut), bytes and bpp, and PSNR
    against ``original``."""
    pixels = previews[0].shape[0] * previews[0].shape[1]
    lines = []
    for k, ((size, cut), image) in enumerate(zip(preview_sizes(data), previews)):
        line = f"{k} layer{'' if k == 1 else 's'}{' (last cut)' if cut else ''}, {size} B, {8 * size / pixels:.3f} bpp"
        if original is not None:
            value = psnr(original, image)
            line += ", exact" if value == float("inf") else f", {value:.2f} dB"
        lines.append(line)
    return lines


def contact_sheet(previews: list[np.ndarray], captions: list[str], columns: int = COLUMNS) -> Image.Image:
    """The previews in rows of ``columns``, each above its caption, on white."""
    thumbs = []
    for image in previews:
        thumb = Image.fromarray(image).convert("RGB")
        if thumb.width > THUMB_WIDTH:
            thumb = thumb.resize((THUMB_WIDTH, max(1, round(thumb.height * THUMB_WIDTH / thumb.width))),
                                 Image.Resampling.LANCZOS)
        thumbs.append(thumb)
    cell_w = max(max(t.width for t in thumbs), 6 * max(len(c) for c in captions))
    cell_h = max(t.height for t in thumbs) + LABEL_HEIGHT
    rows = -(-len(thumbs) // columns)
    sheet = Image.new("RGB", (cell_w * min(columns, len(thumbs)), cell_h * rows), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (thumb, caption) in enumerate(zip(thumbs, captions)):
        x, y = (k % columns) * cell_w, (k // columns) * cell_h
        sheet.paste(thumb, (x, y))
        draw.text((x + 2, y + thumb.height + 2), caption, fill="black")
    return sheet
