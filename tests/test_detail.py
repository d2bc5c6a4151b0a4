"""The detail energy a progressive file carries, and completion's matching of it."""

import numpy as np
import pytest

from diffcodec.codec import Codec
from diffcodec.coding import detail, transform
from diffcodec.coding.uq_step import Box
from diffcodec.format import describe, parse_file
from diffcodec.model import diffusion as dm

from conftest import synthetic_image


@pytest.fixture(scope="module")
def codec(trained_tiny_model):
    return Codec(trained_tiny_model, tile=64, chunk_symbols=512)


def _textured(height, width, seed):
    rng = np.random.default_rng(seed)
    shapes = synthetic_image(height, width, "shapes", seed=seed).astype(np.float64)
    return np.clip(np.rint(0.6 * shapes + 50 + 20 * rng.standard_normal(shapes.shape)), 0, 255).astype(np.uint8)


def _reference_energy(image):
    a = image.astype(np.float64)
    local = (a[:-2, 1:-1] + a[2:, 1:-1] + a[1:-1, :-2] + a[1:-1, 2:] + a[1:-1, 1:-1]) / 5
    return float(np.mean((a[1:-1, 1:-1] - local) ** 2))


def _smooth(image):
    a = image.astype(np.float64)
    for _ in range(3):
        a = (a + np.roll(a, 1, 0) + np.roll(a, -1, 0) + np.roll(a, 1, 1) + np.roll(a, -1, 1)) / 5
    return np.rint(a).astype(np.uint8)


def test_energy_and_its_index():
    image = synthetic_image(40, 30, "shapes", seed=1)
    e = detail.energy(image)
    assert e == _reference_energy(image) or abs(e / _reference_energy(image) - 1) < 1e-12
    index = detail.energy_index(image)
    assert detail.NO_DETAIL < index <= 255
    assert abs(np.log2(detail.index_energy(index) / e)) <= 0.5 / detail.STEPS_PER_OCTAVE + 1e-9
    assert detail.index_energy(detail.ZERO_OCTAVE) == 1.0
    assert detail.energy_index(np.zeros((2, 9, 3), np.uint8)) == detail.NO_DETAIL  # nothing to measure
    ramp = np.broadcast_to((np.arange(9)[:, None, None] * 7 + np.arange(12)[None, :, None] * 3), (9, 12, 3))
    for no_detail in (np.full((9, 9, 3), 77, np.uint8), ramp.astype(np.uint8)):
        assert detail.energy(no_detail) == 0 and detail.energy_index(no_detail) == 1  # the least there is


def test_gain_solves_for_the_target():
    x = dm.scale_pixels_array(_textured(24, 20, seed=6))
    local = detail._local_mean(x)

    def continuous_energy(gain):
        moved = local + gain * (x - local)
        return float(np.mean((detail.PIXEL_SCALE * detail._detail(moved)[1:-1, 1:-1]) ** 2))

    now = continuous_energy(1.0)
    for want in (now * 1.7, now / 1.7):
        assert abs(continuous_energy(detail._gain(x, local, want)) / want - 1) < 1e-9
    lowest = detail._gain(x, local, 0.0)  # below the quadratic's minimum: its g
    assert all(continuous_energy(lowest) <= continuous_energy(g) + 1e-9
               for g in np.linspace(1 / detail.MAX_GAIN, detail.MAX_GAIN, 40))  # the least within the range
    assert detail._gain(x, local, now * 1e6) == detail.MAX_GAIN
    assert detail._gain(np.zeros_like(x), np.zeros_like(x), 5.0) == 1.0  # no detail to scale


def test_match_brings_detail_to_the_target():
    sharp = _textured(48, 48, seed=2)
    smooth = _smooth(sharp)
    target = detail.energy_index(sharp)
    for start in (smooth, sharp):  # too smooth, then (against the smooth image's energy) too grainy
        goal = target if start is smooth else detail.energy_index(smooth)
        out = detail.match(dm.scale_pixels_array(start), goal, Box())
        assert out.dtype == np.uint8 and out.shape == start.shape
        ratio = detail.energy(out) / detail.index_energy(goal)
        assert 0.85 < ratio < 1.15, ratio
    x = dm.scale_pixels_array(smooth)
    assert np.array_equal(detail.match(x, detail.NO_DETAIL, Box()), smooth)
    assert np.array_equal(detail.match(x, detail.energy_index(smooth), Box()), smooth)


def test_match_stays_in_the_box():
    """Coefficients the layers bound stay bound: a box around every coefficient of the
    smooth image leaves it (almost) as it is, whatever the target."""
    sharp = _textured(32, 32, seed=4)
    x = dm.scale_pixels_array(_smooth(sharp))
    c = transform.forward_coded(x)
    box = Box(c - 1e-3, c + 1e-3, np.full(c.shape, 1e-3))
    out = detail.match(x, detail.energy_index(sharp), box)
    assert np.abs(out.astype(int) - _smooth(sharp)).max() <= 1


def test_progressive_files_carry_the_originals_detail(codec):
    image = synthetic_image(24, 20, "shapes", seed=5)
    data = codec.encode(image, steps=2)
    index = detail.energy_index(image)
    assert parse_file(data).header.detail_index == index != detail.NO_DETAIL
    assert describe(data)["detail_index"] == index
    assert parse_file(codec.encode(image, max_bytes=2000)).header.detail_index == index  # a lossy file too
    assert parse_file(codec.encode(image, mode="lossless", steps=2)).header.detail_index == 0
    assert describe(codec.encode(image, mode="lossless", steps=2))["detail_index"] is None
    completed = codec.decode(data, layers=1, completion_steps=2)
    assert 0.8 < detail.energy(completed) / detail.index_energy(index) < 1.25
