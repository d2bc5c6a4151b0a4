"""The progressive file's bits-back tail: its bridge is the forward process conditioned on
the known end, it round-trips on any size and channel policy, and it refunds what the
layers sent."""

import math

import numpy as np
import pytest

from conftest import synthetic_image
from diffcodec import Codec
from diffcodec.coding import tail
from diffcodec.coding.chain import BitsBackChain
from diffcodec.format.container import MIN_STEP, TIME_UNITS, Mode, parse_file
from diffcodec.format.info import describe


def _gaussian_conditional(cov: np.ndarray, target: int, given: list[int]) -> tuple[np.ndarray, float]:
    """Coefficients on ``given`` and the std of variable ``target`` of a zero-mean Gaussian."""
    c_tg = cov[target, given]
    weights = np.linalg.solve(cov[np.ix_(given, given)], c_tg)
    return weights, math.sqrt(cov[target, target] - c_tg @ weights)


def test_bridge_is_the_forward_process_conditioned_on_its_end():
    """q(z_0 | x, z_T) and q(z_i | z_{i-1}, z_T) against the joint Gaussian of x, z_0..z_T."""
    gammas = np.array([-9.0, -4.0, -1.5, 0.5, 2.0])
    grid = BitsBackChain(gammas, bridged=True)
    alpha = np.sqrt(1 / (1 + np.exp(gammas)))
    sigma2 = 1 / (1 + np.exp(-gammas))
    # z_i = alpha_i x + noise with Cov(noise_i, noise_j) = alpha_j / alpha_i * sigma2_i for i <= j
    n = len(gammas)
    cov = np.zeros((n + 1, n + 1))
    cov[0, 0] = 1.0  # x, unit variance (any variance gives the same conditionals)
    for i in range(n):
        cov[0, i + 1] = cov[i + 1, 0] = alpha[i]
        for j in range(i, n):
            cov[i + 1, j + 1] = cov[j + 1, i + 1] = alpha[i] * alpha[j] + alpha[j] / alpha[i] * sigma2[i]
    assert grid.latents == n - 1
    for i in range(grid.latents):
        weights, std = _gaussian_conditional(cov, i + 1, [i, n])  # the earlier variable (x for i = 0), z_T
        assert np.allclose([grid.q_prev[i], grid.q_end[i]], weights, rtol=1e-9, atol=1e-12)
        assert math.isclose(grid.q_std[i], std, rel_tol=1e-9)
    unbridged = BitsBackChain(gammas)
    assert unbridged.latents == n and unbridged.q_end == [0.0] * n


def test_tail_times_come_from_the_model_grid_below_the_last_layer(tiny_model):
    codec = Codec(tiny_model)  # no stored grid: the uniform 16-step one
    times = tail.tail_times(codec.runner, TIME_UNITS // 2 + 3)
    assert times[0] == TIME_UNITS // 2 + 3 and times[-1] == 0 and len(times) == 9
    assert all(a - b >= MIN_STEP for a, b in zip(times, times[1:]))
    near = TIME_UNITS // 2 + TIME_UNITS // 64  # within half a step of a grid time: it is dropped
    assert tail.tail_times(codec.runner, near)[1] == TIME_UNITS * 7 // 16
    assert tail.tail_times(codec.runner, MIN_STEP) == [MIN_STEP, 0]


@pytest.mark.parametrize("shape, kind, channels", [
    ((1, 1), "noise", 3), ((13, 9), "shapes", 3), ((40, 36), "shapes", 3), ((21, 17), "gradient", 1),
    ((19, 23), "shapes", 4), ((9, 70), "noise", 3),
])
def test_bits_back_tail_round_trips(trained_tiny_model, shape, kind, channels):
    codec = Codec(trained_tiny_model)
    image = synthetic_image(*shape, kind, seed=sum(shape), channels=channels)
    if channels == 1:
        image = image[..., 0]
    data = codec.encode(image, steps=3, stored_fallback=False)
    header = parse_file(data).header
    assert header.tail_mode == Mode.LOSSLESS and sum(header.bands) == shape[0]
    assert np.array_equal(codec.decode(data), image)
    assert describe(data)["layers"][-1]["step"].startswith("tail: bits-back")


def test_tail_refunds_what_the_layers_sent(trained_tiny_model):
    """The tail costs less than a lossless file of the same chain: the layers' bits are not paid twice."""
    codec = Codec(trained_tiny_model)
    image = synthetic_image(48, 48, "shapes", seed=3)
    data = codec.encode(image, steps=6, stored_fallback=False)
    f = parse_file(data)
    lossless = codec.encode(image, steps=16, mode="lossless", stored_fallback=False)
    assert f.header.layers[-1].size < parse_file(lossless).header.layers[0].size
    assert np.array_equal(codec.decode(data), image)


def test_a_tail_falls_back_where_smaller(trained_tiny_model):
    """Noise costs the chain more than zlib: the tail is then zlib, and still exact."""
    codec = Codec(trained_tiny_model)
    rng = np.random.default_rng(0)
    image = np.repeat(rng.integers(0, 2, size=(24, 24, 1), dtype=np.uint8) * 255, 3, axis=2)
    data = codec.encode(image, steps=2)
    assert parse_file(data).header.tail_mode in (Mode.STORED, Mode.PREDICTIVE)
    assert np.array_equal(codec.decode(data), image)
