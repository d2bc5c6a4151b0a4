"""The block transform the progressive layers quantize in, and the rate placement rules."""

import numpy as np
import pytest

from diffcodec.coding import transform
from diffcodec.coding.placement import RATE_GROWTH, RATE_START, next_target


@pytest.mark.parametrize("height, width", [(1, 1), (37, 70), (64, 96), (33, 5)])
def test_block_dct_is_orthonormal_on_any_size(height, width):
    rng = np.random.default_rng(height * width)
    x = rng.normal(size=(height, width, 3))
    y = transform.forward(x)
    assert np.allclose(transform.inverse(y), x, atol=1e-12)
    assert np.isclose(np.sum(y * y), np.sum(x * x))  # energy (and so white noise) is preserved


def test_colour_rotation_is_orthonormal_and_leaves_grey_without_colour():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7, 3))
    y = transform.to_opponent(x)
    assert np.allclose(transform.from_opponent(y), x, atol=1e-14)
    assert np.isclose(np.sum(y * y), np.sum(x * x))
    grey = np.repeat(rng.normal(size=(5, 7, 1)), 3, axis=2)
    opponent = transform.to_opponent(grey)
    assert np.all(opponent[..., 1:] == 0.0)  # exactly: a grey image's colour bands hold nothing
    assert np.allclose(opponent[..., 0], grey[..., 0] * np.sqrt(3.0))


def test_dct_gathers_a_smooth_image_in_the_coarse_bands():
    yy, xx = np.mgrid[0:64, 0:64] / 64.0
    smooth = np.stack([np.sin(2 * yy + xx), yy * xx, np.cos(3 * xx)], axis=-1)
    energy = transform.forward(smooth) ** 2
    band = transform.band_map(64, 64)
    octaves = band // 3
    coarse = octaves // transform.OCTAVES + octaves % transform.OCTAVES <= 1  # 3 of 1024 per block
    assert energy[coarse].sum() > 0.95 * energy.sum()


def test_bands_and_coding_order():
    band = transform.band_map(45, 77)
    assert band.shape == (45, 77, 3) and band.min() == 0 and band.max() < transform.NUM_BANDS
    order = transform.coding_order(45, 77)
    assert np.array_equal(np.sort(order), np.arange(45 * 77 * 3))
    octaves = band.reshape(-1)[order] // 3
    level = octaves // transform.OCTAVES + octaves % transform.OCTAVES
    assert np.all(np.diff(level) >= 0)  # coarse to fine, so a cut layer keeps its coarse bands


def test_rate_targets_skip_what_a_layer_overshot():
    assert next_target(0.0) == RATE_START
    assert next_target(RATE_START) == pytest.approx(RATE_START * RATE_GROWTH)
    second = RATE_START * RATE_GROWTH
    assert next_target(0.95 * second) == pytest.approx(second * RATE_GROWTH)  # too close to what was spent
    assert next_target(10.0) > 12.0
