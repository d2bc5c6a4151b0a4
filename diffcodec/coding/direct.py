"""The predictive pixel coder: the lossless mode's direct band (the image's top rows, coded
without the model, whose bits are the initial bits the first bits-back band pops), and the
whole image in mode 'predictive', the fallback where it beats the chain (stored.py).

Every byte of the direct band is paid in full, so it uses a small predictive coder, on whole
arrays: each row goes coarse to fine over its columns (every COARSE_STRIDE-th column, then
the columns half-way between those coded, at offsets 8, 4, 2, 1), and each pass is
predicted from what the decoder already has. A midpoint is the mean of its left and right
neighbours plus part of the curvature of the row above at the same place; a coarse column
is the pixel above. Green goes first; red and blue add part of green's residual. The
residual is a discretised Laplace whose scale follows the local activity: a model that
fits keeps the bits on the stack random-looking, which the first bits-back pops need (ANS
pops read the last pushed symbols' quantiles). The constants were fitted on 8-row strips
of the CID22 training set.
"""

from __future__ import annotations

import numpy as np

from .ans import AnsStack

COARSE_STRIDE = 16
CURVATURE_WEIGHT = 0.5  # of the row above's (A - (AL + AR) / 2), added to a midpoint
CHROMA_FROM_GREEN = 0.8  # of green's residual, added to red and blue
SCALE_FLOOR = 0.25
GREEN_SCALE_PER_ACTIVITY = 0.3
CHROMA_SCALE_PER_ACTIVITY = 0.15  # red and blue: most of their activity is green's, known
SCALE_PER_GREEN_ERROR = 0.2
FIRST_ROW_MEAN, FIRST_ROW_SCALE = 127.5, 40.0  # coarse columns of the first row: nothing known
NO_ACTIVITY_YET = 20.0
RED_BLUE = [0, 2]


def column_passes(width: int) -> list[tuple[np.ndarray, int]]:
    """(columns, half stride) per pass of a row, coarse first; half stride 0 = coarse columns."""
    passes = [(np.arange(0, width, COARSE_STRIDE), 0)]
    stride = COARSE_STRIDE
    while stride > 1:
        half = stride // 2
        passes.append((np.arange(half, width, stride), half))
        stride = half
    return [(columns, half) for columns, half in passes if columns.size]


def _spatial_model(row: np.ndarray, above: np.ndarray | None, above2: np.ndarray | None, columns: np.ndarray,
                   half: int) -> tuple[np.ndarray, np.ndarray]:
    """Prediction and activity of row[columns] (n, 3) from pixels decoded before them: the two
    rows above (None at the top), and in this row the columns of coarser passes."""
    width = row.shape[0]
    if not half:
        if above is None:
            return np.full((columns.size, 3), FIRST_ROW_MEAN), np.full((columns.size, 3), FIRST_ROW_SCALE)
        activity = (np.abs(above[columns] - above2[columns]) if above2 is not None
                    else np.full((columns.size, 3), NO_ACTIVITY_YET))
        return above[columns], activity
    right = columns + half
    has_right = (right < width)[:, None]  # else the right neighbour is the left one
    right = np.minimum(right, width - 1)
    left_pixel = row[columns - half]
    right_pixel = np.where(has_right, row[right], left_pixel)
    prediction = (left_pixel + right_pixel) / 2
    activity = np.abs(left_pixel - right_pixel)
    if above is not None:
        above_left = above[columns - half]
        curvature = above[columns] - (above_left + np.where(has_right, above[right], above_left)) / 2
        prediction = prediction + CURVATURE_WEIGHT * curvature
        activity = activity + np.abs(curvature)
    return prediction, activity


def _green_model(prediction: np.ndarray, activity: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return (np.clip(prediction[:, 1], 0.0, 255.0),
            SCALE_FLOOR + GREEN_SCALE_PER_ACTIVITY * activity[:, 1])


def _red_blue_model(prediction: np.ndarray, activity: np.ndarray, green: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Red and blue (flat, red first) given the pass's decoded green."""
    green_error = green - prediction[:, 1]
    mean = prediction[:, RED_BLUE] + CHROMA_FROM_GREEN * green_error[:, None]
    scale = (SCALE_FLOOR + CHROMA_SCALE_PER_ACTIVITY * activity[:, RED_BLUE]
             + SCALE_PER_GREEN_ERROR * np.abs(green_error)[:, None])
    return np.clip(mean, 0.0, 255.0).T.reshape(-1), scale.T.reshape(-1)


def encode(stack: AnsStack, x: np.ndarray) -> None:
    """Push (h, w, 3) uint8 pixels, last pass first, so the decoder pops the first first."""
    image = x.astype(np.float64)
    passes = column_passes(x.shape[1])
    for index in range(x.shape[0] - 1, -1, -1):
        above = image[index - 1] if index >= 1 else None
        above2 = image[index - 2] if index >= 2 else None
        for columns, half in reversed(passes):
            prediction, activity = _spatial_model(image[index], above, above2, columns, half)
            pixels = x[index, columns]
            stack.push_laplace(pixels[:, RED_BLUE].T.reshape(-1),
                               *_red_blue_model(prediction, activity, image[index, columns, 1]))
            stack.push_laplace(pixels[:, 1], *_green_model(prediction, activity))


def decode(stack: AnsStack, shape: tuple) -> np.ndarray:
    """The (h, w, 3) uint8 pixels; only the rows the model reads are kept as floats, so a
    damaged file claiming a large image costs no more memory than the image."""
    height, width, _ = shape
    image = np.empty(shape, dtype=np.uint8)
    passes = column_passes(width)
    above = above2 = None
    for index in range(height):
        row = np.full((width, 3), np.nan)  # reading a pixel before it is decoded breaks the round trip
        for columns, half in passes:
            prediction, activity = _spatial_model(row, above, above2, columns, half)
            green = stack.pop_laplace(*_green_model(prediction, activity)).astype(np.float64)
            red_blue = stack.pop_laplace(*_red_blue_model(prediction, activity, green))
            row[columns, 1] = green
            row[columns, 0], row[columns, 2] = red_blue.reshape(2, -1)
        image[index] = row
        above, above2 = row, above
    return image
