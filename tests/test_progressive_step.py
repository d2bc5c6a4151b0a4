"""One progressive step on both sides: the latent it sends, the bounds its symbols put on
x, and the estimate projected into them (no network: a step with made-up estimates)."""

import numpy as np

from diffcodec.coding import layer_plan, randomness, transform, uq_step
from diffcodec.model import diffusion as dm


def _step(height=40, width=56, seed=0):
    rng = np.random.default_rng(seed)
    x = dm.scale_pixels_array(rng.integers(0, 256, size=(height, width, 3)))
    x_hat = np.clip(x + rng.normal(scale=0.2, size=x.shape), -1, 1)
    z = rng.normal(size=x.shape)
    coef = dm.step_coefficients(-2.0, -4.0)
    offsets = (coef.c / coef.delta) * transform.forward_coded(x - x_hat)
    dither = randomness.shared_uniform(seed, randomness.DITHER, 0, offsets.size)
    plan, _ = layer_plan.fit(offsets, dither, layer_plan.FitSample(height, width))
    step = uq_step.Step(coef, x_hat, coef.b * z + coef.c * x_hat, dither, plan.coded,
                            plan.stds(height, width))
    symbols = np.rint(offsets[plan.coded] + dither[plan.coded]).astype(np.int32)
    return x, x_hat, step, symbols


def test_the_bounds_hold_x_and_the_projection_only_helps():
    x, x_hat, step, symbols = _step()
    box = step.bounds(symbols)
    coefficients = transform.forward_coded(x)
    known = step.coded
    assert known.any() and not known.all()
    assert np.all(coefficients[known] >= box.low[known] - 1e-6) and np.all(coefficients[known] <= box.high[known] + 1e-6)
    assert np.all(np.isinf(box.low[~known])) and np.all(np.isinf(box.high[~known]))
    projected = box.project(x_hat)
    assert np.sum((projected - x) ** 2) < np.sum((x_hat - x) ** 2)
    assert uq_step.Box().project(x_hat) is x_hat  # no layers, no bounds
    # a later step's bounds narrow the box; a cut layer bounds only the symbols present
    narrowed = box.narrowed(step.bounds(symbols[: symbols.size // 2]))
    assert np.array_equal(narrowed.low, box.low) and np.array_equal(narrowed.high, box.high)


def test_skipped_coefficients_get_the_scaled_step_noise():
    _, _, step, symbols = _step()
    noise = transform.forward_coded(step.latent(symbols) - step.mu_p) / step.coef.delta
    skipped = ~step.coded
    assert np.allclose(noise[skipped], -uq_step.SKIP_NOISE * step.dither[skipped])
    sent = np.flatnonzero(step.coded)
    assert np.allclose(noise[sent], symbols - step.dither[sent])


def test_a_wide_box_leaves_a_good_estimate_where_it_is():
    """The belief inside the box is no wider than the layer's own scale: an estimate well
    inside a wide early box stays put instead of being pulled towards its middle."""
    x_hat = np.full((8, 8, 3), 0.25)
    count = x_hat.size
    box = uq_step.Box(np.full(count, -50.0, dtype=np.float32), np.full(count, 10.0, dtype=np.float32),
                          np.full(count, 0.1, dtype=np.float32))
    assert np.allclose(box.project(x_hat), x_hat, atol=1e-6)
