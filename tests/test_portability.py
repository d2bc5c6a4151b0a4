"""Files decode exactly on other machines: other CPUs are simulated with the libraries' own
switches (ATEN_CPU_CAPABILITY, ONEDNN_MAX_CPU_ISA, NPY_DISABLE_CPU_FEATURES, thread count),
each in a fresh process (benchmarks/portability.py). A file written under any setting is
byte-identical to the native one and decodes to the exact pixels under every other."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffcodec import DiffusionModel, save_model
from diffcodec.errors import CheckpointError

from conftest import randomize_output, synthetic_image, tiny_config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from benchmarks import portability  # noqa: E402


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("portability")
    model = randomize_output(DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True)), seed=3)
    save_model(model, root / "model.pt")
    images = []
    for name, channels, (h, w) in [("rgb", 3, (21, 26)), ("gray", 1, (17, 12)), ("rgba", 4, (14, 19))]:
        pixels = synthetic_image(h, w, "shapes", seed=len(images), channels=channels)
        path = root / f"{name}.png"
        Image.fromarray(pixels[:, :, 0] if channels == 1 else pixels).save(path)
        images.append(path)
    return root, images


def test_files_are_the_same_bytes_and_decode_exactly_everywhere(setup):
    root, images = setup
    settings = ("native", "aten default", "onednn SSE41", "numpy avx512 off", "1 thread")
    report = portability.run(str(root / "model.pt"), images, root / "out", settings=settings, fallback=False)
    for writer, files in report["identical"].items():
        assert all(files.values()), (writer, files)
    for setting, files in report["decoded"].items():
        assert all(exact for exact, _ in files.values()), (setting, files)
    assert len(report["decoded"]["native"]) == 2 * len(images)
    assert report["images"] == [p.name for p in images]  # names only: no local paths in results


def test_compare_checks_this_machines_files_against_a_stored_report(setup, tmp_path):
    """`compare` (a real other machine against a committed report): the same bytes and exact
    decodes where the files agree, a changed digest reported as a difference, a report of
    another model refused."""
    import json

    root, images = setup
    model = str(root / "model.pt")
    written = portability.write(model, images, tmp_path / "there", ["lossless"], fallback=False)
    written[f"{images[0].stem}.lossless.dfc"] = ("0" * 64, 1.0)  # as if the other machine wrote other bytes
    report = {"model": model, "model_hash": portability._model_hash(model), "machine": "elsewhere",
              "modes": ["lossless"], "written": {"native": written}}
    result = portability.compare({**report, "fallback": False}, model, images, tmp_path / "here")
    assert result["identical"] == {f: f != f"{images[0].stem}.lossless.dfc" for f in written}
    assert all(exact for exact, _ in result["decoded"].values())
    assert result["reference_machine"] == "elsewhere" and "| NO |" in (tmp_path / "here" / "compare.md").read_text()
    assert json.loads((tmp_path / "here" / "compare.json").read_text())["machine"] == portability.machine()
    with pytest.raises(SystemExit, match="written with model"):
        portability.compare({**report, "model_hash": "f" * 64}, model, images, tmp_path / "again")
    with pytest.raises(SystemExit, match="not a portability report"):
        portability.compare({"images": []}, model, images, tmp_path / "again")
    with pytest.raises(SystemExit, match="no files for"):
        portability.compare(report, model, [root / "elsewhere.png"], tmp_path / "again")


def test_the_cuda_setting_runs_its_process_on_the_gpu(setup, monkeypatch):
    """`--settings cuda` / `--writers cuda` hand the codec's process the device, not an
    environment; the CPU settings stay on the CPU, and the default run asks for no GPU."""
    import inspect
    import json

    root, images = setup
    commands = []

    def fake_run(command, **kwargs):
        commands.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=json.dumps({}), stderr="")

    monkeypatch.setattr(portability.subprocess, "run", fake_run)
    portability._in_process("cuda", "read", "m.pt", images, root, ["lossless"])
    portability._in_process("1 thread", "read", "m.pt", images, root, ["lossless"])
    devices = [c[c.index("--device") + 1] for c in commands]
    assert devices == ["cuda", "cpu"]
    assert "cuda" not in portability.CPU_SETTINGS and "cuda" in portability.SETTINGS
    assert inspect.signature(portability.run).parameters["settings"].default == portability.CPU_SETTINGS


@pytest.mark.skipif(not __import__("torch").cuda.is_available(), reason="needs a GPU")
def test_files_written_on_the_gpu_are_the_cpus(setup):
    root, images = setup
    report = portability.run(str(root / "model.pt"), images, root / "gpu", settings=("native", "cuda"),
                             writers=("native", "cuda"), fallback=False)
    assert all(report["identical"]["cuda"].values())
    for setting in ("native", "cuda"):
        assert all(exact for exact, _ in report["decoded"][setting].values())


def test_merge_joins_reports_of_other_images(tmp_path):
    def report(name, settings=("native", "1 thread")):
        files = {f"{name}.{m}.dfc": None for m in portability.MODES}
        return {"model": "default", "images": [f"/somewhere/{name}.png"], "modes": list(portability.MODES),
                "written": {w: {f: ("ab", 1.0) for f in files} for w in portability.WRITERS},
                "identical": {w: {f: True for f in files} for w in portability.WRITERS},
                "decoded": {s: {f: (True, 2.0) for f in files} for s in settings}}

    merged = portability.merge([report("a"), report("b")], tmp_path)
    assert merged["images"] == ["a.png", "b.png"] and len(merged["decoded"]["1 thread"]) == 4
    assert "| 1 thread | 2/2 | 2/2 | 2.0 |" in (tmp_path / "portability.md").read_text()
    part = portability.merge([report("a"), report("b", settings=("native",))], tmp_path / "part")
    assert len(part["decoded"]["native"]) == 4 and len(part["decoded"]["1 thread"]) == 2
    assert "| 1 thread | 1/1 | 1/1 | 2.0 |" in (tmp_path / "part" / "portability.md").read_text()
    with pytest.raises(SystemExit):
        portability.merge([report("a"), {**report("b"), "modes": ["lossless"]}], tmp_path)


def test_exact_network_is_close_to_the_float_one(tiny_model):
    """The exact twin computes the same function up to its rounding."""
    import torch

    from diffcodec.model.exact_network import ExactNetwork

    z = torch.randn(1, 3, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        reference = tiny_model.network(z.float(), torch.tensor([-2.0]))
    exact = ExactNetwork(tiny_model.network)(z, -2.0)
    reference = reference if isinstance(reference, tuple) else (reference,)
    for ref, out in zip(reference, exact):
        assert out.dtype == torch.float64
        assert float((ref.double() - out).abs().max()) < 1e-2 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("weight_bits", [0, 8])
def test_every_sum_of_the_exact_network_reads_grid_values(weight_bits, monkeypatch):
    """The exactness rests on it: convolutions and norms only ever see values on the
    activation grids (then every product is exact and every sum an integer number of units);
    a quantization-aware model's blocks take the fused norm (which rounds an input that is not
    on the grid yet as it reads it)."""
    import torch

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en
    from diffcodec.model.network import calibrate_inputs

    seen = []

    def checked(method, fraction_bits):
        def call(self, x):
            seen.append(en.on_grid(x, fraction_bits))
            return method(self, x)
        return call

    monkeypatch.setattr(en._Layer, "conv", checked(en._Layer.conv, en.FOURIER_FRACTION_BITS))
    monkeypatch.setattr(en._Upsampler, "conv", checked(en._Upsampler.conv, en.ACT_FRACTION_BITS))
    monkeypatch.setattr(en._Norm, "__call__", checked(en._Norm.__call__, en.ACT_FRACTION_BITS))
    norm_silu = en.ExactNetwork.norm_silu

    def checked_norm_silu(self, norm, x, film=None):  # the compiled norm's input
        seen.append(en.on_grid(x, en.ACT_FRACTION_BITS))
        return norm_silu(self, norm, x, film)

    monkeypatch.setattr(en.ExactNetwork, "norm_silu", checked_norm_silu)
    norm_silu_conv = en.ExactNetwork.norm_silu_conv

    fused = []

    def checked_norm_silu_conv(self, norm, x, layer, film=None, on_grid=True):  # the fused norm's input
        if on_grid:
            seen.append(en.on_grid(x, en.ACT_FRACTION_BITS))
        fused.append(layer.reads_int16_same(x))
        return norm_silu_conv(self, norm, x, layer, film, on_grid)

    monkeypatch.setattr(en.ExactNetwork, "norm_silu_conv", checked_norm_silu_conv)
    model = DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True, patch_size=2,
                                       weight_bits=weight_bits))
    randomize_output(model)
    z = 3 * torch.randn(1, 3, 19, 22, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    if weight_bits:
        calibrate_inputs(model.network, lambda: model.network(z.float(), torch.tensor([1.5])))
    en.ExactNetwork(model.network)(z, 1.5)
    assert len(seen) > 10 and all(seen)
    assert any(fused) == bool(weight_bits and compiled.library() is not None and en.compiled_loops_agree())


def test_every_convolution_layout_takes_the_same_sums():
    """Per-tap products on padded slices, strided taps, stacked layers and phase-wise
    upsampling give exactly what a plain float64 convolution of grid values gives."""
    import torch
    from torch.nn import functional as F

    from diffcodec.model import exact_network as en

    generator = torch.Generator().manual_seed(2)
    x = en.quantize(4 * torch.randn(6, 10, 5, generator=generator, dtype=torch.float64))
    nchw = x.permute(2, 0, 1)[None]

    def module(out_channels, **kwargs):
        m = torch.nn.Conv2d(5, out_channels, 3, padding=1, **kwargs).double()
        torch.nn.init.normal_(m.weight, generator=generator)
        return m

    def reference(layer, image):
        return F.conv2d(image, en.round_weight(layer.weight), stride=layer.stride, padding=1) + layer.bias.view(1, -1, 1, 1)

    def channels_last(out):
        return out[0].permute(1, 2, 0).detach()

    same, strided, other = module(4), module(3, stride=2), module(2)
    assert torch.equal(en._Layer(same, x.device).conv(x), channels_last(reference(same, nchw)))
    assert torch.equal(en._Layer(strided, x.device).conv(x), channels_last(reference(strided, nchw)))
    [stacked] = en._Layer.stacked([en._Layer(same, x.device), en._Layer(other, x.device)])
    expected = torch.cat([channels_last(reference(same, nchw)), channels_last(reference(other, nchw))], dim=-1)
    assert stacked.widths == [4, 2] and torch.equal(stacked.conv(x), expected)
    upsampled = F.interpolate(nchw, scale_factor=2.0, mode="nearest")
    assert torch.equal(en._Upsampler(same, x.device).conv(x), channels_last(reference(same, upsampled)))


def test_portable_math_matches_numpy():
    from diffcodec.model import exact

    rng = np.random.default_rng(0)
    x = rng.uniform(-30, 30, 1000)
    assert np.allclose(exact.exp(x), np.exp(x), rtol=1e-15, atol=0)
    assert np.allclose(exact.log(np.exp(x)), x, rtol=0, atol=1e-14)
    assert np.allclose(exact.sin(x), np.sin(x), atol=1e-15)
    assert np.allclose(exact.cos(x), np.cos(x), atol=1e-15)
    small = x * 1e-9
    assert np.allclose(exact.expm1(small), np.expm1(small), rtol=1e-15, atol=0)
    assert np.allclose(exact.log1p(small), np.log1p(small), rtol=1e-15, atol=0)
    assert exact.tree_sum(np.arange(10.0)) == 45.0


@pytest.mark.parametrize("path", ["auto", "plain"])
def test_the_compiled_exp_and_log_are_the_numpy_code(path, monkeypatch):
    """exp and log in one compiled pass (AVX2 four at a time, or plain C) give the numpy
    code's bits on values at the vector path's edges (2^q leaving the normal doubles, -1022 and
    1023, subnormal and non-finite inputs), alone and mixed into a vector, on an odd count, and
    every large array the codec computes takes that pass; so do the fixed-point sum (NaN,
    infinities and the clamp, halves) and the ordered products (the block DCT's); a compiled
    pass one ulp off is not used."""
    from diffcodec.model import compiled, exact

    if compiled.library() is None:
        pytest.skip("no C compiler here: the numpy code runs instead")
    monkeypatch.setenv("DIFFCODEC_KERNEL", path)
    rng = np.random.default_rng(3)
    edges = np.array([-708.39, -708.40, -708.5, -745.2, 709.4, 709.8, 5e-324, 1e-310, 2.2250738585072014e-308,
                      np.inf, -np.inf, np.nan, 0.0, -0.0, -1.0, 0.7071067811865475, 0.7071067811865476])
    x = np.concatenate([np.repeat(edges, 4), rng.permutation(np.tile(edges, 3)), rng.uniform(-800, 800, 4001),
                        np.exp2(rng.uniform(-1074, 1024, 4001))])
    with np.errstate(all="ignore"):
        for name, numpy_code in (("exp", exact._exp), ("log", exact._log)):
            got, expected = compiled.elementwise(name, x, *exact._COMPILED_SERIES[name]), numpy_code(x)
            assert np.array_equal(np.isnan(got), np.isnan(expected)), (path, name)
            assert np.array_equal(got[~np.isnan(got)].view(np.int64), expected[~np.isnan(got)].view(np.int64)), (path, name)
    halves = np.array([0.5, 1.5, 2.5, -0.5, -2.5, -3.5]) * 2.0**-16  # rounded half to even
    for values in (x, halves, np.concatenate([halves, x[:7]])):
        for bits in (16, 40):
            limit = 2.0 ** (62 - bits) / values.size
            assert compiled.fixed_sum(values, bits, limit) == int(exact._fixed_units(values, bits, limit).sum())
    assert exact.fixed_sum(np.tile(halves, 20), 16) == 20 * -2 * 2.0**-16  # the compiled sum (120 values)
    matrix, blocks = rng.standard_normal((5, 7)), rng.standard_normal((3, 7, 9)) * 1e3  # odd sizes
    blocks[0, 0, :3] = [-0.0, 1e-310, 1e308]  # a signed zero, a subnormal, an overflow
    with np.errstate(all="ignore"):
        got, expected = compiled.ordered_products(matrix, blocks), exact._ordered_products(matrix, blocks)
    assert np.array_equal(got.view(np.int64), expected.view(np.int64))
    assert exact._use_compiled(x)
    real = compiled.elementwise
    monkeypatch.setattr(compiled, "elementwise", lambda *a: np.nextafter(real(*a), np.inf))
    exact._compiled_agrees.cache_clear()
    try:
        assert not exact._use_compiled(x)
        with np.errstate(all="ignore"):
            assert np.array_equal(exact.log(x[x > 0]), exact._log(x[x > 0]), equal_nan=True)
    finally:
        monkeypatch.undo()
        exact._compiled_agrees.cache_clear()


def test_threads_follow_the_free_cores_and_come_back():
    import torch

    from diffcodec.coding.runner import _busy_cores, threads_for_free_cores

    before = torch.get_num_threads()
    busy = _busy_cores()
    assert busy is None or busy >= 0
    with threads_for_free_cores():
        assert 1 <= torch.get_num_threads() <= before
    assert torch.get_num_threads() == before


def test_frozen_streams_hold_with_no_simd_and_one_thread():
    """The frozen digests (test_reference_stream.py: both modes' bytes and a completion)
    under the kernels of a CPU without AVX and with one thread."""
    env = {**os.environ, **portability.SETTINGS["no SIMD (default + SSE41)"], **portability.SETTINGS["1 thread"]}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           str(REPO / "tests" / "test_reference_stream.py")],
                          cwd=REPO, env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]


def _quantized_conv(in_channels, out_channels, kernel, generator, exponent=-9, **kwargs):
    import torch

    from diffcodec.model.network import QuantizedConv2d

    conv = QuantizedConv2d(in_channels, out_channels, kernel, padding=kernel // 2, weight_bits=8, **kwargs)
    torch.nn.init.normal_(conv.weight, generator=generator)
    torch.nn.init.normal_(conv.bias, generator=generator)
    conv.input_exponent.fill_(exponent)
    return conv


@pytest.mark.parametrize("kernel", ["off", "plain", "auto"])
def test_quantized_layers_take_the_exact_integer_sums(kernel, monkeypatch):
    """A quantization-aware layer's sums, from float64 products (kernel off) or from the
    compiled loop (its plain C path, or AVX2 where the CPU has it), are exactly the integer
    sums of its 16-bit inputs and 8-bit weights, times the channel's step, plus the bias, in
    every layout (same, strided, 1x1, upsampling, stacked), and it stacks only with layers on
    its grid."""
    import torch

    from diffcodec.model import compiled

    if kernel != "off" and compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    monkeypatch.setenv("DIFFCODEC_KERNEL", kernel)
    from torch.nn import functional as F

    from diffcodec.model import exact_network as en
    from diffcodec.model.network import weight_scales

    generator = torch.Generator().manual_seed(4)
    x = en.quantize(30 * torch.randn(6, 10, 5, generator=generator, dtype=torch.float64))  # some clamp at 2^15 units

    def reference(conv, image, stride=1):
        step = weight_scales(conv.weight.detach(), 8)
        k = torch.round(conv.weight.detach() / step).long()
        q = torch.clamp(torch.round(image * 2.0**-int(conv.input_exponent)), -en.INPUT_LIMIT, en.INPUT_LIMIT).long()
        padded = F.pad(q.permute(2, 0, 1), (conv.padding[1],) * 2 + (conv.padding[0],) * 2)
        patches = F.unfold(padded[None].double(), conv.kernel_size, stride=stride).long()[0]  # (C k k, L)
        total = (k.reshape(k.shape[0], -1) @ patches).T  # integer sums, int64
        side = (image.shape[0] + 2 * conv.padding[0] - conv.kernel_size[0]) // stride + 1
        total = total.reshape(side, -1, k.shape[0]).double()
        return total * (step.view(-1).double() * 2.0 ** int(conv.input_exponent)) + conv.bias.detach().double()

    same, strided = _quantized_conv(5, 4, 3, generator), _quantized_conv(5, 3, 3, generator, stride=2)
    pointwise, other_grid = _quantized_conv(5, 2, 1, generator), _quantized_conv(5, 2, 3, generator, exponent=-7)
    assert en._Layer(same, x.device)._compiled(x) == (kernel != "off")
    assert torch.equal(en._Layer(same, x.device).conv(x), reference(same, x))
    assert torch.equal(en._Layer(strided, x.device).conv(x), reference(strided, x, stride=2))
    assert torch.equal(en._Layer(pointwise, x.device).conv(x), reference(pointwise, x))
    upsampled = F.interpolate(x.permute(2, 0, 1)[None], scale_factor=2.0, mode="nearest")[0].permute(1, 2, 0)
    assert torch.equal(en._Upsampler(same, x.device).conv(x), reference(same, upsampled))
    stacks = en._Layer.stacked([en._Layer(m, x.device) for m in (same, same, other_grid)])
    assert [s.widths for s in stacks] == [[4, 4], [2]]
    assert torch.equal(torch.cat([s.conv(x) for s in stacks], dim=-1),
                       torch.cat([reference(same, x), reference(same, x), reference(other_grid, x)], dim=-1))
    uncalibrated = _quantized_conv(5, 2, 3, generator)
    uncalibrated.input_exponent.fill_(1 << 10)
    with pytest.raises(CheckpointError, match="calibrated"):
        en._Layer(uncalibrated, x.device)


def test_quantized_exact_network_computes_what_it_trained():
    """A quantization-aware model: the exact network gives the float network's outputs up to
    the activation grid's rounding (every layer reads the integers it trained on)."""
    import torch

    from diffcodec.model.exact_network import ExactNetwork
    from diffcodec.model.network import QuantizedConv2d, calibrate_inputs

    model = randomize_output(DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True,
                                                        patch_size=2, weight_bits=8)), seed=5)
    assert sum(isinstance(m, QuantizedConv2d) for m in model.network.modules()) > 10
    z = torch.randn(1, 3, 20, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    calibrate_inputs(model.network, lambda: model.network(z.float(), torch.tensor([-2.0])))
    with torch.no_grad():
        reference = model.network(z.float(), torch.tensor([-2.0]))
    exact = ExactNetwork(model.network)(z, -2.0)
    for ref, out in zip(reference, exact):
        assert float((ref.double() - out).abs().max()) < 1e-2 * max(1.0, float(ref.abs().max()))


@pytest.mark.parametrize("weight_bits", [0, 8])
def test_the_progressive_heads_over_the_top_rows_are_those_of_the_whole(weight_bits):
    """With ``edge_rows`` the exact network gives x_direct and the progressive log-scale over
    the top rows only, bit for bit those of the whole pass, and the rest as it is; so do the
    runner's tiles (two tile rows, the second starting below the edge)."""
    import torch

    from diffcodec.coding.runner import ModelRunner
    from diffcodec.model.exact_network import ExactNetwork
    from diffcodec.model.network import calibrate_inputs

    model = randomize_output(DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True, patch_size=2,
                                                        weight_bits=weight_bits)), seed=6)
    generator = torch.Generator().manual_seed(1)
    if weight_bits:
        calibrate_inputs(model.network, lambda: model.network(torch.randn(1, 3, 16, 16, generator=generator),
                                                              torch.tensor([-2.0])))
    network = ExactNetwork(model.network)
    for height, width in ((21, 10), (3, 8), (1, 1)):
        z = torch.randn(1, 3, height, width, generator=generator, dtype=torch.float64)
        whole = network(z, -2.0)
        for edge_rows in (0, 1, 3, 4, 5, 40):
            top = network(z, -2.0, edge_rows)
            rows = min(edge_rows, height)
            assert torch.equal(top[0], whole[0]) and torch.equal(top[3], whole[3]), (height, edge_rows)
            assert all(torch.equal(top[k], whole[k][:, :, :rows]) for k in (1, 2)), (height, edge_rows)
    runner = ModelRunner(model)
    z = np.random.default_rng(2).standard_normal((80, 24, 3))
    whole = runner._predict_tiles(z, -2.0, 16)
    for edge_rows in (0, 4, 20, 56):  # 56: the second tile row's window starts at 16, inside the edge
        top = runner._predict_tiles(z, -2.0, 16, edge_rows)
        assert np.array_equal(top[0], whole[0]) and np.array_equal(top[3], whole[3])
        assert all(np.array_equal(top[k], whole[k][:edge_rows]) for k in (1, 2))


@pytest.mark.parametrize("weight_bits, fourier", [(0, (7, 8)), (8, (7, 8)), (0, ())])
def test_the_compiled_loop_changes_no_bit(weight_bits, fourier, monkeypatch):
    """A network's outputs with the compiled loops (stem input, norm, SiLU and grid roundings
    for every model, with Fourier features or without; integer products for a
    quantization-aware one; AVX2 and plain paths, one and two threads) are bit for bit those
    of the torch code."""
    import torch

    from diffcodec.model import compiled
    from diffcodec.model.exact_network import ExactNetwork
    from diffcodec.model.network import calibrate_inputs

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    model = randomize_output(DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True,
                                                        patch_size=2, weight_bits=weight_bits,
                                                        fourier_exponents=fourier)), seed=6)
    with torch.no_grad():  # norms with a spread of scales and offsets
        for module in model.network.modules():
            if hasattr(module, "weight") and module.__class__.__name__ == "ChannelNorm":
                module.weight.copy_(1 + torch.randn(module.weight.shape, generator=torch.Generator().manual_seed(2)))
                module.bias.copy_(torch.randn(module.bias.shape, generator=torch.Generator().manual_seed(3)))
    z = 2 * torch.randn(1, 3, 36, 20, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    calibrate_inputs(model.network, lambda: model.network(z.float(), torch.tensor([1.0])))
    network = ExactNetwork(model.network)
    monkeypatch.setenv("DIFFCODEC_KERNEL", "off")
    reference = network(z, 1.0)
    monkeypatch.setattr(compiled, "PARALLEL_WORK", 0)  # two threads even on loops this small
    threads = torch.get_num_threads()
    try:
        for setting, count in (("auto", 1), ("auto", 2), ("plain", 2)):
            monkeypatch.setenv("DIFFCODEC_KERNEL", setting)
            torch.set_num_threads(count)
            network._films.clear()  # the embedding and FiLMs too, not those the torch code made
            assert all(torch.equal(a, b) for a, b in zip(network(z, 1.0), reference)), (setting, count)
    finally:
        torch.set_num_threads(threads)


def test_without_a_compiler_the_float64_products_run(tmp_path, monkeypatch):
    """No C compiler: the loop is not built, quantization-aware layers take the float64
    products (the same sums); a tap outside the rows is refused before the C loop runs."""
    import torch

    from diffcodec.model import compiled

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    compiled.library.cache_clear()
    try:
        assert compiled.library() is None and not compiled.available()
    finally:
        monkeypatch.undo()
        compiled.library.cache_clear()
    if compiled.library() is None:
        pytest.skip("no C compiler here")
    packed = compiled.pack(torch.ones(1, 2, 3))
    with pytest.raises(IndexError):
        compiled.tap_products(torch.ones(4, 2), torch.arange(4), [1], packed, 3)
    with pytest.raises(IndexError):  # a count of rows, 0 .. n - 1
        compiled.tap_products(torch.ones(4, 2), 4, [1], packed, 3)
    with pytest.raises(IndexError):
        compiled.tap_products(torch.ones(4, 2), 3, [-1], packed, 3)
    with pytest.raises(IndexError):
        compiled.tap_products(torch.ones(4, 2), -1, [0], packed, 3)
    assert torch.equal(compiled.tap_products(torch.ones(4, 2), 3, [1], packed, 3),
                       compiled.tap_products(torch.ones(4, 2), torch.arange(3), [1], packed, 3))
    with pytest.raises(TypeError):
        compiled.to_int16(torch.ones(2, 2, 2), 0)  # float32: refused, not misread


@pytest.mark.parametrize("path", ["auto", "plain"])
def test_the_compiled_products_cannot_overflow(path, monkeypatch):
    """The integer loop at its bounds: every input 2^15 - 1, weights of 8 bits (and an
    upsampler's merged taps, four of them summed) all of one sign, over 4,608 terms: its
    32-bit sums move to 64 bits in time, on both paths, with one and two threads."""
    import torch

    from diffcodec.model import compiled

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    monkeypatch.setenv("DIFFCODEC_KERNEL", path)
    monkeypatch.setattr(compiled, "PARALLEL_WORK", 0)
    rows = torch.full((13, 512), compiled.INPUT_LIMIT, dtype=torch.int16)
    rows[5] = -compiled.INPUT_LIMIT
    threads = torch.get_num_threads()
    try:
        for peak in (127, 508):
            taps = torch.full((9, 512, 20), peak, dtype=torch.int64)
            taps[:, :, 3] = -peak
            expected = sum(rows[k : k + 4].long() @ taps[k] for k in range(9)).double()
            for count in (1, 2):
                torch.set_num_threads(count)
                got = compiled.tap_products(rows, torch.arange(4), list(range(9)), compiled.pack(taps), 20)
                assert torch.equal(got, expected), (peak, count)
    finally:
        torch.set_num_threads(threads)


def test_the_compiled_roundings_agree_at_their_edges(monkeypatch):
    """to_int16, the rounding to the grid, the norm with SiLU and the SiLU on values at their
    edges (halves, beyond the clamps, NaN, infinities), on views with gaps between their rows,
    and channel counts that leave a tail beside the AVX2 path's groups of four: the AVX2 and
    plain paths give the torch code's numbers (a NaN, which the network never reads, goes to
    the clamp's top or the table's end, where torch's conversion of it is undefined)."""
    import torch

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    edges = torch.tensor([0.5, 1.5, 2.5, -2.5, -0.5, 32766.5, -32767.5, 4e4, -4e4, float("nan"), float("inf"),
                          -float("inf"), 3.25, -7.75], dtype=torch.float64)
    x = edges.repeat(3)[:39].view(1, 3, 13) * 2.0**-3  # read at exponent -3: the edges themselves
    integers = torch.nan_to_num(torch.round(x * 8), nan=compiled.INPUT_LIMIT).clamp(-compiled.INPUT_LIMIT,
                                                                                     compiled.INPUT_LIMIT)
    table = torch.from_numpy(en._silu_table())
    offset, limit = int(en.ACT_LIMIT * en._ACT_SCALE), en.ACT_LIMIT * en._ACT_SCALE
    generator = torch.Generator().manual_seed(4)
    for setting in ("auto", "plain"):
        monkeypatch.setenv("DIFFCODEC_KERNEL", setting)
        got = compiled.to_int16(x, -3, (1, 0, 2, 1))
        assert torch.equal(got[1:, 2:-1].double(), integers), setting
        wide = torch.cat([x * 2.0**-9, x * 2.0**6, x * 2.0**-14], dim=1).view(3, 3, 13)  # halves; beyond the clamp
        other = torch.randn(3, 3, 13, dtype=torch.float64, generator=generator)
        for a, b in ((wide, None), (wide[:, 1:], None), (wide[:, :, 1:12], wide[:, :, :11]), (wide[:, 1:], other[:, 1:])):
            expected = en.quantize(a if b is None else a + b)
            assert torch.equal(compiled.to_grid(a, b, en.ACT_LIMIT, en._magic(en.ACT_FRACTION_BITS)).view(torch.int64),
                               expected.view(torch.int64)), setting  # NaN where NaN, signed zeros alike
        for channels in (1, 4, 7, 12):
            v = en.quantize(60 * torch.randn(2, 5, channels, generator=generator, dtype=torch.float64))
            v[0, 0] = 0.0  # a constant pixel: variance 0
            weight, bias = 1 + torch.randn(channels, dtype=torch.float64, generator=generator), torch.randn(
                channels, dtype=torch.float64, generator=generator)
            mul, add = 40 * torch.randn(channels, dtype=torch.float64, generator=generator), torch.zeros(channels,
                                                                                                      dtype=torch.float64)
            add[0] = float("nan")  # a NaN reads the table's end
            norm = en._Norm.__new__(en._Norm)
            norm.weight, norm.bias = weight, bias
            filmed = norm(v) * mul + add
            got = compiled.norm_silu(v, weight, bias, mul, add, table, offset, limit)
            expected = en._silu_lookup(torch.nan_to_num(filmed, nan=float("inf")), table, offset)
            assert torch.equal(got, expected), (setting, channels)
            assert torch.equal(compiled.silu(filmed, table, offset, limit), expected), (setting, channels)
            # the same lookup as a layer on the grid 2^-9 reads it, straight into its padded 16-bit input
            read = lambda y: torch.round(y * 2.0**9).clamp(-compiled.INPUT_LIMIT, compiled.INPUT_LIMIT)  # noqa: E731
            table16 = read(table).to(torch.int16)
            fused = compiled.norm_silu_int16(v, weight, bias, mul, add, table16, offset, limit, (1, 2, 1, 1))
            assert fused.shape == (5, 7, channels) and not fused[0].any() and not fused[3:].any()
            assert not fused[:, 0].any() and not fused[:, -1].any()
            assert torch.equal(fused[1:3, 1:-1], read(expected).to(torch.int16)), (setting, channels)
            # and of values off the grid (a view with gaps between its rows), put on it first
            wider = torch.zeros(2, 7, channels, dtype=torch.float64)
            steps = torch.tensor([0.5, -0.5, 0.4, -0.4, 1.5, 0.6], dtype=torch.float64)  # halves go to even
            wider[:, 1:6] = v + steps.repeat(10 * channels)[: 10 * channels].view(2, 5, channels) * 2.0**-12
            wider[0, 1, 0] = 1e4  # beyond the clamp
            off = wider[:, 1:6]
            filmed = norm(en.quantize(off)) * mul + add
            fused = compiled.norm_silu_int16(off, weight, bias, mul, add, table16, offset, limit, (1, 2, 1, 1),
                                             (en.ACT_LIMIT, en._magic(en.ACT_FRACTION_BITS)))
            expected = en._silu_lookup(torch.nan_to_num(filmed, nan=float("inf")), table, offset)
            assert torch.equal(fused[1:3, 1:-1], read(expected).to(torch.int16)), (setting, channels)


@pytest.mark.parametrize("path", ["auto", "plain"])
def test_the_compiled_float_products_are_the_exact_sums(path, monkeypatch):
    """The float64 loop (layers that are not quantization-aware) on inputs of the stem's fine
    grid and 16-bit weights, an odd number of rows and outputs that do not fill a tile: the
    exact sums plus the bias, as the float64 products (torch) give them."""
    import torch

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    monkeypatch.setenv("DIFFCODEC_KERNEL", path)
    generator = torch.Generator().manual_seed(5)
    rows = en.quantize(50 * torch.randn(23, 7, generator=generator, dtype=torch.float64), en.FOURIER_FRACTION_BITS)
    taps = en.round_weight(torch.randn(9, 7, 21, generator=generator).permute(2, 1, 0)).permute(2, 1, 0)
    bias = torch.randn(21, generator=generator, dtype=torch.float64)
    offsets = [0, 1, 2, 5, 6, 7, 10, 11, 12]
    got = compiled.float_products(rows, torch.arange(11), offsets, compiled.pack_float(taps.contiguous()), 21, bias)
    expected = sum(rows[k : k + 11] @ taps[t] for t, k in enumerate(offsets)) + bias
    assert torch.equal(got, expected)


@pytest.mark.parametrize("patch", [1, 2, 3])
def test_the_compiled_stem_input_agrees_at_its_edges(patch, monkeypatch):
    """The stem's input (z on its grid and its Fourier features, unshuffled) on values beyond
    both clamps (8 and 256), between grid points, infinities and -0, on both paths, as the
    torch code gives it."""
    import torch
    import torch.nn.functional as F

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    generator = torch.Generator().manual_seed(7)
    z = torch.round(torch.randn(1, 3, 2 * patch, 3 * patch, generator=generator, dtype=torch.float64) * 3 * 2**18) / 2**18
    z.view(-1)[:8] = torch.tensor([300.0, -257.5, 8.0, -8.5, 255.99, float("inf"), -float("inf"), -0.0])
    tables = [en.fourier_table(n) for n in (7, 8)]
    expected = F.pixel_unshuffle(en.fourier_features(z, tables), patch)[0].permute(1, 2, 0)
    for setting in ("auto", "plain"):
        monkeypatch.setenv("DIFFCODEC_KERNEL", setting)
        got = compiled.fourier(z, patch, *en.flat_tables(tables), en.ACT_LIMIT, en._magic(en.FOURIER_FRACTION_BITS),
                               en.FOURIER_LIMIT)
        assert torch.equal(got.view(torch.int64), expected.contiguous().view(torch.int64)), setting


def test_where_there_is_a_compiler_the_loops_build_and_agree():
    """A C compiler on the path builds the loops and they pass their check (else the codec
    quietly runs the torch code, the same numbers several times slower)."""
    import os
    import shutil

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en

    if os.environ.get("DIFFCODEC_KERNEL") == "off" or not shutil.which(compiled._builds()[-1][0]):
        pytest.skip("no C compiler here (or the loops are turned off)")
    assert compiled.library() is not None and en.compiled_loops_agree()


def test_loops_that_disagree_with_the_torch_code_are_not_used(monkeypatch):
    """A compiled norm one ulp off (as a compiler that fused a multiply-add would make it)
    fails the check, and the torch code runs instead."""
    import torch

    from diffcodec.model import compiled
    from diffcodec.model import exact_network as en

    if compiled.library() is None:
        pytest.skip("no C compiler here: the float64 products run instead")
    real = compiled.norm_silu

    def one_ulp_off(*args, **kwargs):
        out = real(*args, **kwargs)
        return torch.nextafter(out, torch.full_like(out, float("inf")))

    monkeypatch.setattr(compiled, "norm_silu", one_ulp_off)
    en._loops_agree.cache_clear()
    try:
        assert not en.compiled_loops_agree()
    finally:
        monkeypatch.undo()
        en._loops_agree.cache_clear()
    assert en.compiled_loops_agree()


@pytest.mark.parametrize("setting, first, expected", [(None, "diffcodec, torch", "PASSIVE"),
                                                     ("ACTIVE", "diffcodec, torch", "ACTIVE"),
                                                     (None, "torch, diffcodec", "unset")])
def test_import_sets_a_passive_openmp_wait_policy_unless_the_user_chose(setting, first, expected):
    """Spinning OpenMP threads slow a pass many times beside another busy process: importing
    diffcodec (before torch) asks for passive waiting, unless the user set a policy (after
    torch it would be too late: libgomp has read it, so it is left alone)."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if setting is not None:
        env["OMP_WAIT_POLICY"] = setting
    code = f"import os, {first}; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == expected


def test_a_pass_reads_the_kernel_setting_once(monkeypatch):
    """Inside pinned_setting (a whole network pass) DIFFCODEC_KERNEL is the value read when
    it began; outside, every call reads the environment again (the tests rely on that)."""
    from diffcodec.model import compiled

    monkeypatch.setenv("DIFFCODEC_KERNEL", "plain")
    with compiled.pinned_setting():
        monkeypatch.setenv("DIFFCODEC_KERNEL", "off")
        assert compiled.setting() == "plain" and compiled._path() == 0
        with compiled.pinned_setting():
            assert compiled.setting() == "off"
        assert compiled.setting() == "plain"
    assert compiled.setting() == "off" and not compiled.available()
