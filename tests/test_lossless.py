"""Lossless mode: bits-back over the diffusion chain, exact and robust."""

import numpy as np
import pytest
from PIL import Image

from diffcodec.coding import chain, direct, lossless, step_context
from diffcodec.coding.ans import AnsStack
from diffcodec.codec import Codec
from diffcodec.format.container import CHAIN_PARAMS_PER_STEP, Mode, pack_header, parse_file
from diffcodec.errors import DiffcodecError

from conftest import synthetic_image


@pytest.fixture(scope="module")
def codec(trained_tiny_model):
    return Codec(trained_tiny_model)


@pytest.mark.parametrize("steps", [2, 6])
@pytest.mark.parametrize("shape, kind", [
    ((24, 24), "noise"), ((40, 30), "gradient"), ((48, 48), "shapes"),
    ((1, 1), "noise"), ((7, 13), "shapes"), ((33, 65), "shapes"),
])
def test_exact_round_trip(codec, shape, kind, steps):
    image = synthetic_image(*shape, kind, seed=sum(shape))
    data = codec.encode(image, steps=steps, mode="lossless", stored_fallback=False)
    assert np.array_equal(codec.decode(data), image)


def test_bits_back_bands_are_used(codec):
    image = synthetic_image(64, 40, "shapes", seed=1)
    data = codec.encode(image, steps=4, mode="lossless", stored_fallback=False)
    header = parse_file(data).header
    assert header.mode == Mode.LOSSLESS and sum(header.bands) == 64 and len(header.bands) > 2
    assert np.array_equal(codec.decode(data), image)


@pytest.mark.parametrize("mode", ["L", "RGBA"])
def test_gray_and_alpha(codec, mode):
    rgba = synthetic_image(20, 18, "shapes", channels=4)
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    out = codec.decode(codec.encode(image, steps=3, mode="lossless", stored_fallback=False))
    assert np.array_equal(out, np.asarray(image))


@pytest.mark.parametrize("damage", ["truncate", "flip", "flip_many"])
def test_damaged_lossless_files(codec, damage):
    image = synthetic_image(48, 32, "shapes", seed=3)
    data = bytearray(codec.encode(image, steps=3, mode="lossless", stored_fallback=False))
    header_size = parse_file(bytes(data)).header_size
    if damage == "truncate":
        data = data[:-8]
        message = "only decodes when complete"
    elif damage == "flip":
        data[(header_size + len(data)) // 2] ^= 0x10
        message = "damaged|checksum"
    else:
        for offset in range(header_size, len(data), 3):
            data[offset] ^= 0xFF
        message = "damaged|checksum"
    with pytest.raises(DiffcodecError, match=message):
        codec.decode(bytes(data))


def test_lossless_from_another_model(codec, tiny_model):
    data = codec.encode(synthetic_image(16, 16, "noise"), steps=2, mode="lossless", stored_fallback=False)
    with pytest.raises(DiffcodecError, match="encoded with model"):
        Codec(tiny_model).decode(data)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 2, 3), (2, 17, 3), (8, 33, 3), (5, 64, 3)])
def test_direct_band_round_trip(shape):
    for kind in ("noise", "shapes"):
        band = synthetic_image(*shape[:2], kind, seed=shape[1])
        stack = AnsStack()
        direct.encode(stack, band)
        reader = AnsStack(stack.words())
        assert np.array_equal(direct.decode(reader, shape), band) and reader.is_empty()


def test_direct_band_predicts_from_neighbours():
    """Smooth content codes far below 8 bits per value: every pass is coarse to
    fine, each column predicted from decoded neighbours (none read before it is decoded)."""
    assert [h for _, h in direct.column_passes(40)] == [0, 8, 4, 2, 1]
    assert np.array_equal(np.sort(np.concatenate([c for c, _ in direct.column_passes(40)])), np.arange(40))
    sizes = {}
    for kind in ("gradient", "noise"):
        stack = AnsStack()
        direct.encode(stack, synthetic_image(8, 256, kind, seed=2))
        sizes[kind] = stack.num_bits() / (8 * 256 * 3)
    assert sizes["gradient"] < 3.0 and 7.9 < sizes["noise"] < 11  # noise: no model fits; the stored fallback takes it


def test_step_fit_recovers_the_error_scale_and_the_correlations():
    """Residuals with a known error scale, spatial and colour correlation: the fit finds them."""
    rng = np.random.default_rng(0)
    c, sigma_q = 0.5, 1e-3
    samples = []
    for _ in range(4):
        scale = np.exp(rng.normal(-2.0, 0.3, (64, 64, 1))) * np.ones((1, 1, 3))
        smooth = rng.standard_normal((66, 66))
        smooth = (smooth[1:-1, 1:-1] + 0.25 * (smooth[:-2, 1:-1] + smooth[2:, 1:-1] + smooth[1:-1, :-2] + smooth[1:-1, 2:]))
        luma = smooth / smooth.std()
        error = 0.4 * scale * (0.8 * luma[:, :, None] + 0.6 * rng.standard_normal((64, 64, 3)))
        samples.append((c * error + sigma_q * rng.standard_normal(error.shape), scale))
    fitted = step_context.fit(samples, c, sigma_q)
    plain = step_context.fit([(r, s) for r, s in samples], c, sigma_q)
    assert fitted == plain  # deterministic
    assert fitted.spatial > 4 and fitted.colour[0] > 8  # neighbours and red predict
    # the first group (no context) sees the whole error: its factor is about 0.4
    assert abs(step_context.scale_factor(fitted.scales[0]) - 0.4) < 0.03
    # the later groups' residuals are smaller than the first's
    assert all(s < fitted.scales[0] for s in fitted.scales[1:])
    rate = lambda ctx: sum(step_context.bits(r, s, c, sigma_q, ctx) for r, s in samples)  # noqa: E731
    assert rate(fitted) < 0.97 * rate(step_context.StepContext(scales=(fitted.scales[0],) * 6))


def test_step_context_pushes_and_pops_the_same_latents():
    rng = np.random.default_rng(3)
    context = step_context.StepContext(scales=(0, -3, -5, -8, -9, -12), spatial=10, colour=(20, 7, 9))
    for shape in [(1, 1, 3), (1, 2, 3), (3, 1, 3), (5, 7, 3)]:
        mean, scale = rng.normal(0, 1, shape).reshape(-1), np.exp(rng.normal(-1, 0.3, shape)).reshape(-1)
        delta = 0.05
        n = np.rint((mean + 0.3 * rng.standard_normal(mean.size)) / delta).astype(np.int64)
        stack = AnsStack()
        step_context.push(stack, n, mean, scale, 0.7, 0.1, delta, shape, context)
        assert np.array_equal(step_context.pop(stack, mean, scale, 0.7, 0.1, delta, shape, context), n)
        assert stack.is_empty()


@pytest.mark.parametrize("count", [1, 2, 3, 10, 1000, 3 * 768])
def test_pop_order_is_a_permutation(count):
    for step in (0, 1, 17):
        order = chain.pop_order(count, step)
        assert np.array_equal(np.sort(order), np.arange(count))
        assert np.array_equal(order, chain.pop_order(count, step))


def test_q_samples_outside_their_range_are_damage():
    with pytest.raises(DiffcodecError, match="left its range"):
        AnsStack().push_sample(np.array([100]), np.zeros(1), 1.0, 0.5)


def test_pilot_crops_cover_small_images_whole_and_sample_large_ones():
    small = np.zeros((100, 120, 3), np.uint8)
    assert [c.shape for c in lossless.pilot_crops(small)] == [small.shape]
    crops = lossless.pilot_crops(np.zeros((512, 768, 3), np.uint8))
    assert sum(c.shape[0] * c.shape[1] for c in crops) <= lossless.PILOT_PIXELS and len(crops) >= 3


def test_calibration_is_stored_and_checked(codec):
    image = synthetic_image(40, 32, "shapes", seed=5)
    data = codec.encode(image, steps=4, mode="lossless", stored_fallback=False)
    parsed = parse_file(data)
    assert len(parsed.header.chain_params) == 4 * CHAIN_PARAMS_PER_STEP
    parsed.header.chain_params = [10_000] * 4 * CHAIN_PARAMS_PER_STEP
    with pytest.raises(DiffcodecError, match="damaged file"):
        codec.decode(pack_header(parsed.header) + data[parsed.header_size:])


def test_images_the_model_cannot_compress_are_stored(codec):
    image = synthetic_image(24, 20, "noise", seed=11)
    data = codec.encode(image, steps=3, mode="lossless")
    parsed = parse_file(data)
    assert parsed.header.mode == Mode.STORED and len(data) < image.size + 200
    assert np.array_equal(codec.decode(data), image)
    with pytest.raises(DiffcodecError, match="truncated|damaged"):
        codec.decode(data[:-5])
    damaged = bytearray(data)
    damaged[parsed.header_size + 10] ^= 0x40
    with pytest.raises(DiffcodecError, match="damaged|checksum"):
        codec.decode(bytes(damaged))


def test_smooth_images_the_model_loses_on_use_the_predictive_coder(codec):
    image = synthetic_image(40, 36, "shapes", seed=2)  # mild noise on smooth shapes: zlib does poorly
    chain_only = codec.encode(image, steps=3, mode="lossless", stored_fallback=False)
    data = codec.encode(image, steps=3, mode="lossless")
    parsed = parse_file(data)
    assert parsed.header.mode == Mode.PREDICTIVE and len(data) < len(chain_only)
    assert np.array_equal(codec.decode(data), image)
    with pytest.raises(DiffcodecError, match="truncated|damaged"):
        codec.decode(data[:-4])
    for offset in (parsed.header_size + 5, len(data) - 3):
        damaged = bytearray(data)
        damaged[offset] ^= 0x21
        with pytest.raises(DiffcodecError, match="damaged|checksum"):
            codec.decode(bytes(damaged))


@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_all_black_images(codec, mode):
    """Black pixels push nothing onto an empty ANS stack: zlib takes such files."""
    image = Image.new(mode, (13, 6))
    for fallback in (True, False):
        data = codec.encode(image, steps=2, mode="lossless", stored_fallback=fallback)
        assert np.array_equal(codec.decode(data), np.asarray(image))


def test_decode_work_counts_each_bands_context_rows():
    from dataclasses import replace

    from diffcodec.codec import decode_work
    from diffcodec.format.container import Header

    assert lossless.network_rows([8, 3, 6]) == 6 + (3 + 6)  # the direct band runs no network
    assert lossless.network_rows([1] * 17) == 16 + sum(range(16))
    header = Header(mode=Mode.LOSSLESS, model_name="m", model_hash=bytes(16), height=17, width=10, channels=3,
                    steps=4, seed=0, tile=64, bands=[8, 3, 6])
    assert decode_work(header) == 10 * 4 * 15
    assert decode_work(replace(header, bands=[1] * 17)) == 10 * 4 * 136
    hybrid = replace(header, mode=Mode.PROGRESSIVE, lossy_steps=3, steps=7, tail_mode=Mode.LOSSLESS)
    assert decode_work(hybrid) == 17 * 10 * (3 + 1) + 10 * 4 * 15  # step layers, the tail's display, its chain
    assert decode_work(replace(hybrid, tail_mode=Mode.STORED, bands=[], steps=4)) == 17 * 10 * 4
    assert decode_work(replace(header, mode=Mode.PREDICTIVE, bands=[], steps=1024)) == 0  # no network
