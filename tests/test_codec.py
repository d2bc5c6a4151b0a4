"""The progressive codec: exact round trips, decodable prefixes, honest sizes, clear errors."""

import numpy as np
import pytest
import torch
from PIL import Image

import diffcodec
from diffcodec.codec import Codec, PrefixWarning
from diffcodec.format.container import pack_file, parse_file
from diffcodec.errors import DiffcodecError
from diffcodec.format import describe

from conftest import synthetic_image


@pytest.fixture(scope="module")
def codec(trained_tiny_model):
    return Codec(trained_tiny_model, tile=64, chunk_symbols=512)


def psnr(a, b):
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.parametrize("shape, kind", [
    ((24, 24), "noise"), ((24, 30), "gradient"), ((40, 36), "shapes"),
    ((1, 1), "noise"), ((7, 13), "shapes"), ((33, 65), "shapes"),
])
def test_exact_round_trip(codec, shape, kind):
    image = synthetic_image(*shape, kind, seed=sum(shape))
    data = codec.encode(image, steps=4)
    assert np.array_equal(codec.decode(data), image)


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "1"])
def test_other_image_modes(codec, mode):
    rgba = synthetic_image(9, 11, "shapes", channels=4)
    rgba[..., 3] = np.arange(99).reshape(9, 11)  # a real alpha channel
    image = Image.fromarray(rgba, "RGBA").convert(mode)
    expected = np.asarray(image.convert("RGB" if mode in ("P", "1") else ("L" if mode == "1" else mode)))
    if mode == "1":
        expected = np.asarray(image.convert("L"))
    out = codec.decode(codec.encode(image, steps=3))
    assert out.shape == expected.shape and np.array_equal(out, expected)


def test_sixteen_bit_images_are_refused(codec):
    image = Image.fromarray(np.full((4, 4), 1000, dtype=np.uint16))
    with pytest.raises(DiffcodecError, match="16-bit"):
        codec.encode(image)


def test_tiled_image_round_trip(codec):
    """An image larger than the tile size (64 here) is processed in tiles, still exact."""
    image = synthetic_image(70, 150, "shapes", seed=3)
    assert np.array_equal(codec.decode(codec.encode(image, steps=3)), image)


def test_every_prefix_decodes(codec):
    image = synthetic_image(30, 34, "shapes", seed=5)
    data = codec.encode(image, steps=4)
    parsed = parse_file(data)
    assert any(len(layer.chunk_lengths) > 1 for layer in parsed.header.layers)  # cuts inside layers happen
    first_chunk = parsed.header_size + parsed.header.layers[0].chunk_lengths[0]
    for cut in range(first_chunk, len(data), 97):
        result = codec.decode_result(data[:cut])
        assert result.image.shape == image.shape and not result.exact
        assert result.bytes_used <= cut and result.bytes_total == len(data)
    with pytest.warns(PrefixWarning, match="prefix"):
        codec.decode(data[:first_chunk])
    for layers in range(1, len(parsed.header.layers) + 1):
        assert codec.decode(data, layers=layers).shape == image.shape
    assert np.array_equal(codec.decode(data, layers=len(parsed.header.layers)), image)
    for nothing in (dict(layers=0), dict(max_bytes=first_chunk - 1)):  # the header alone is no image
        with pytest.raises(DiffcodecError, match="nothing to decode"):
            codec.decode(data, **nothing)


def test_a_cut_tail_shows_the_last_lossy_layer(codec):
    """The tail is one chunk: without all of it, the image is the last step layer's."""
    image = synthetic_image(32, 32, "shapes", seed=8)
    data = codec.encode(image, steps=4)
    header = parse_file(data).header
    cut = codec.decode_result(data[:-1])
    assert not cut.exact and cut.layers_used == header.lossy_steps == 4
    assert np.array_equal(cut.image, codec.decode(data, layers=4))


def test_psnr_never_decreases_on_a_natural_image(trained_tiny_model):
    codec = Codec(trained_tiny_model)
    image = synthetic_image(48, 48, "shapes", seed=11)
    images = codec.decode_every_layer(codec.encode(image, steps=4))  # 0.05 ... 3.2 bpp
    values = [psnr(out, image) for out in images]
    assert len(values) == 4 + 2
    # a layer far smaller than its plan codes nothing (48 x 48 at 0.05 bpp is 14 bytes): its
    # latent moves by the model's own step, which may cost the display a hundredth of a dB
    assert all(b >= a - 0.05 for a, b in zip(values, values[1:])), values
    assert values[4] > values[0] + 3  # the 3.2 bpp layer
    assert values[-1] == float("inf")


def test_previews_of_a_prefix_stop_at_its_last_layer_and_say_it_is_cut(trained_tiny_model):
    from diffcodec.sheet import labels, preview_sizes

    codec = Codec(trained_tiny_model, chunk_symbols=256)
    image = synthetic_image(48, 48, "shapes", seed=11)
    data = codec.encode(image, steps=4)
    f = parse_file(data)
    chunks = f.header.layers[3].chunk_lengths
    assert len(chunks) > 2  # the plan, then several chunks of data
    cut = f.prefix(layers=3).size + chunks[0] + chunks[1]  # layer 4 cut after its first data chunk
    images = codec.decode_every_layer(data[:cut])
    assert len(images) == 5 and np.array_equal(images[4], codec.decode_result(data[:cut]).image)
    lines = labels(data[:cut], images, image)
    assert "(last cut)" in lines[4] and f"{cut} B" in lines[4] and "cut" not in lines[3]
    plan_only = f.prefix(layers=3).size + chunks[0]  # layer 4's plan and no coefficients: nothing to show
    assert parse_file(data[:plan_only]).layers_with_data() == 3
    images = codec.decode_every_layer(data[:plan_only])
    assert len(images) == len(labels(data[:plan_only], images)) == len(preview_sizes(data[:plan_only])) == 4


def test_layer_sizes_match_the_model_estimate(trained_tiny_model):
    codec = Codec(trained_tiny_model)
    image = synthetic_image(96, 96, "shapes", seed=2)
    data = codec.encode(image, steps=6)
    header = parse_file(data).header
    for layer in header.layers:
        estimate = layer.estimated_bits / 8
        framing = 8 * len(layer.chunk_lengths)  # range coder flush: at most two words per chunk
        assert abs(layer.size - estimate) <= 0.01 * estimate + framing, (layer.size, estimate)
    report = describe(data)
    assert report["file_bytes"] == len(data)
    assert report["layers"][-1]["cumulative_bpp"] == pytest.approx(8 * len(data) / 96**2)


def test_generative_completion_and_truncation_points(codec):
    image = synthetic_image(20, 20, "gradient")
    data = codec.encode(image, steps=4)
    out = codec.decode(data, layers=2, completion_steps=3)
    assert out.shape == image.shape
    parsed = parse_file(data)
    header_size = parsed.header_size
    assert parsed.prefix(layers=0).size == header_size
    assert parsed.prefix().size == len(data)
    cut = parsed.prefix(max_bytes=header_size + 200).size
    assert header_size <= cut <= header_size + 200
    assert diffcodec.truncate(data, max_bytes=header_size + 200) == data[:cut]
    with pytest.raises(DiffcodecError, match="smaller than the header"):
        parsed.prefix(max_bytes=10)


def _completion_with(codec, monkeypatch, image, error_std: float):
    """Complete, from the seed's latent at the time of layer 1 of a file of ``image`` and with no
    bounds, with a network that predicts x_eps = the image and the given std of its error
    (the progressive estimate grey)."""
    from diffcodec.coding import progressive
    from diffcodec.coding.uq_step import Box
    from diffcodec.format.container import TIME_UNITS
    from diffcodec.model import diffusion as dm

    context, coded = codec._decoding(parse_file(codec.encode(image, steps=2)))
    chain = progressive.chain_of(context, coded)
    x_eps, grey = dm.scale_pixels_array(image), np.zeros(image.shape)
    log_scale = np.full(image.shape, np.log(error_std))
    monkeypatch.setattr(context.runner, "predict", lambda z, gamma, tiling, chain=False, edge_rows=None:
                        (x_eps, grey, grey, log_scale) if chain else (grey, grey))
    return progressive.complete_by_sampling(chain, chain.start(*image.shape[:2]), chain.times[1] / TIME_UNITS, 8, Box())


def test_completion_samples_from_the_eps_estimate(codec, monkeypatch):
    """Completion's steps take the eps-based estimate (projected into the layers' box), not
    the progressive one, whose direct head drained samples to grey (issue 28)."""
    image = synthetic_image(16, 16, "shapes", seed=3)
    out = _completion_with(codec, monkeypatch, image, error_std=1e-9)
    assert np.abs(out.astype(int) - image).max() <= 1


def test_completion_steps_carry_the_predicted_error(codec, monkeypatch):
    """A step's noise is the chain's reverse std, sigma_Q^2 + (c s_x)^2 with s_x the network's
    predicted error: a less certain network draws samples further from x_eps."""
    from diffcodec.coding import chain, progressive

    calls = []

    def recorded(sigma_q, c, log_scale):
        calls.append((sigma_q, c, float(np.exp(log_scale).mean())))
        return chain.reverse_std(sigma_q, c, log_scale)

    monkeypatch.setattr(progressive, "reverse_std", recorded)
    image = synthetic_image(16, 16, "shapes", seed=3)
    spread = [np.abs(_completion_with(codec, monkeypatch, image, s).astype(int) - image).mean() for s in (1e-9, 0.1)]
    assert spread[1] > spread[0] + 2
    assert len(calls) == 16 and all(c > 0 for _, c, _ in calls)
    assert [round(s, 6) for _, _, s in calls] == [0.0] * 8 + [0.1] * 8
    std = chain.reverse_std(0.3, 0.5, np.log(np.array([0.2, 0.0 + 1e-300])))
    assert np.allclose(std, [np.sqrt(0.09 + 0.01), 0.3])


def test_decoding_does_not_depend_on_thread_count(codec):
    image = synthetic_image(40, 40, "shapes", seed=4)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        data = codec.encode(image, steps=4)
        torch.set_num_threads(1)
        assert np.array_equal(codec.decode(data), image)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("damage", ["header_cut", "magic", "flip_layer", "flip_header", "extra_bytes"])
def test_damaged_files_are_clear_errors(codec, damage):
    image = synthetic_image(24, 24, "shapes")
    data = bytearray(codec.encode(image, steps=3))
    header_size = parse_file(bytes(data)).header_size
    if damage == "header_cut":
        data = data[: header_size - 3]
    elif damage == "magic":
        data[0] ^= 0xFF
    elif damage == "flip_layer":
        for offset in range(header_size, len(data), 37):
            data[offset] ^= 0x5A
    elif damage == "flip_header":
        data[header_size // 2] ^= 0x01
    else:
        data += b"junk"
    with pytest.raises(DiffcodecError):
        codec.decode(bytes(data))


def test_file_from_another_model(codec, tiny_model):
    data = codec.encode(synthetic_image(8, 8, "noise"), steps=2)
    with pytest.raises(DiffcodecError, match="encoded with model"):
        Codec(tiny_model).decode(data)


def test_library_accepts_pil_numpy_and_tensors(trained_tiny_model):
    image = synthetic_image(10, 12, "shapes")
    for given in (image, Image.fromarray(image), torch.from_numpy(image).permute(2, 0, 1)):
        data = diffcodec.encode(given, steps=2, model=trained_tiny_model)
        assert np.array_equal(diffcodec.decode(data, model=trained_tiny_model), image)
    as_tensor = diffcodec.decode(data, model=trained_tiny_model, output="tensor")
    assert torch.equal(as_tensor, torch.from_numpy(image).permute(2, 0, 1))
    assert diffcodec.decode(data, model=trained_tiny_model, output="pil").size == (12, 10)


def test_decode_result_says_how_far_it_got(codec):
    image = synthetic_image(20, 22, "shapes", seed=12)
    data = codec.encode(image, steps=3)
    full = codec.decode_result(data)
    assert full.exact and full.layers_used == full.layers_total == 3 + 1 and np.array_equal(full.image, image)
    two = codec.decode_result(data, layers=2)
    assert not two.exact and two.layers_used == 2 and two.image.shape == image.shape
    f = parse_file(data)
    cut = codec.decode_result(f, max_bytes=f.prefix(layers=3).size + 1)
    assert cut.layers_used == 3 and not cut.partial and not cut.exact
    if len(f.chunks[3]) > 2:  # a step layer's first chunk holds its band scales
        lengths = f.header.layers[3].chunk_lengths
        part = codec.decode_result(f, max_bytes=f.prefix(layers=3).size + lengths[0] + lengths[1])
        assert part.layers_used == 3 and part.partial and not part.exact
    assert np.array_equal(codec.decode_result(f, bpp=8 * len(data) / 440).image, image)


def test_library_decode_takes_the_model_the_file_names(trained_tiny_model, tmp_path, monkeypatch):
    import dataclasses

    from diffcodec.model import DiffusionModel, registry, save_model

    named = DiffusionModel(dataclasses.replace(trained_tiny_model.config, name="tiny-registered"))
    named.load_state_dict(trained_tiny_model.state_dict())
    path = tmp_path / "tiny.pt"
    save_model(named, path)
    monkeypatch.setitem(registry.REGISTRY, "tiny-registered", path)
    image = synthetic_image(12, 10, "gradient", seed=1)
    data = diffcodec.encode(image, steps=2, model=str(path))
    assert np.array_equal(diffcodec.decode(data), image)
    assert diffcodec.decode_result(data).exact
    assert diffcodec.info(data)["model_name"] == "tiny-registered"
    assert diffcodec.truncate(data, layers=1) == data[: parse_file(data).prefix(layers=1).size]


def test_rate_placed_grid_and_band_scales(codec):
    """The header's time grid runs from 1 to 0 with the rate-placed layers first; a prefix
    holding only a layer's band scales decodes as the layers before it; damaged band scales
    are refused."""
    from diffcodec.coding.layer_plan import SKIP
    from diffcodec.format.container import BLEND_LEVELS, MIN_STEP

    image = synthetic_image(40, 36, "shapes", seed=5)
    data = codec.encode(image, steps=3)
    f = parse_file(data)
    header = f.header
    assert header.lossy_steps == 3 and header.steps == len(header.times) - 1 > 3
    assert header.times[0] == 1 << 24 and header.times[-1] == 0
    assert all(a - b >= MIN_STEP for a, b in zip(header.times, header.times[1:]))
    assert len(header.blends) == 3 + 1 and all(0 <= b <= BLEND_LEVELS for b in header.blends)
    for layer in range(header.lossy_steps):
        scales = np.frombuffer(f.chunks[layer][0][:108], dtype=np.uint8)
        assert np.all((scales <= 128) | (scales == SKIP))
    scales_only = f.prefix(layers=1).size + header.layers[1].chunk_lengths[0]
    assert np.array_equal(codec.decode(data[:scales_only]), codec.decode(data, layers=1))
    damaged = bytearray(data)
    damaged[f.prefix(layers=1).size] = 200  # a scale index the table does not have
    with pytest.raises(DiffcodecError, match="layer 2 fails its check"):
        codec.decode(bytes(damaged))
    chunks = [list(layer) for layer in f.chunks]  # the same, its checks recomputed: caught all the same
    chunks[1][0] = bytes([200]) + chunks[1][0][1:]
    with pytest.raises(DiffcodecError, match="band scales"):
        codec.decode(pack_file(header, chunks))


def test_layers_end_near_the_rungs_of_the_rate_ladder(codec):
    """The placer's trial fits bring each layer's cumulative size near its rung (0.05, 0.2,
    0.8, 3.2 bpp); the first rungs are below what a 128 x 128 layer's plan alone costs."""
    from diffcodec.coding.placement import PLACEMENT_TOLERANCE, RATE_GROWTH, RATE_START
    image = synthetic_image(128, 128, "shapes", seed=3)
    header = parse_file(codec.encode(image, steps=4)).header
    cumulative = np.cumsum([layer.size for layer in header.layers[:4]]) * 8 / (128 * 128)
    for rung, bpp in zip([RATE_START * RATE_GROWTH ** k for k in (2, 3)], cumulative[2:]):
        assert abs(bpp / rung - 1) < 2 * PLACEMENT_TOLERANCE, cumulative


def test_encode_to_a_size_target(codec):
    """A lossy file of at most the target: layers on the ladder, the last ending at the
    target, no tail; its whole decode is a lossy image, not a prefix (no PrefixWarning)."""
    import warnings

    from diffcodec.format.container import NO_TAIL

    image = synthetic_image(48, 64, "shapes", seed=4)
    for kwargs, limit in ((dict(bpp=6.0), 6 * 48 * 64 // 8), (dict(max_bytes=2000), 2000)):
        data = codec.encode(image, **kwargs)
        assert len(data) <= limit
        header = parse_file(data).header
        assert header.tail_mode == NO_TAIL and len(header.layers) == header.lossy_steps == header.steps
        result = codec.decode_result(data)
        assert not result.exact and result.whole and "a lossy file, whole" in result.describe()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            codec.decode(data)
        assert codec.decode(data, layers=1).shape == image.shape  # still progressive
    with pytest.raises(DiffcodecError, match="leaves no room for a layer"):
        codec.encode(image, max_bytes=100)
    with pytest.raises(DiffcodecError, match="not with --mode lossless"):
        codec.encode(image, bpp=1.0, mode="lossless")
    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(DiffcodecError, match="bpp must be"):
            codec.encode(image, bpp=bad)
