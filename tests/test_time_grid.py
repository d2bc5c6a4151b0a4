"""Optimised time grids: the dynamic programme, their storage, and the lossless coder using them."""

import copy
import itertools

import numpy as np
import pytest

from diffcodec.codec import Codec
from diffcodec.errors import CheckpointError
from diffcodec.format.container import TIME_UNITS, ContainerError, pack_header, parse_file
from diffcodec.format.info import describe
from diffcodec.model.checkpoint import load_model, save_model
from diffcodec.train.grid_fit import cheapest_grids, fit_time_grids, grid_cost
from diffcodec.coding.runner import ModelRunner
from diffcodec.model.time_grid import check_time_grids

from conftest import synthetic_image
from test_cli import assert_one_line_error, run


def upper_triangular(values: np.ndarray) -> np.ndarray:
    cost = np.full(values.shape, np.inf)
    rows, cols = np.triu_indices(len(values), 1)
    cost[rows, cols] = values[rows, cols]
    return cost


@pytest.mark.parametrize("seed", range(3))
def test_dynamic_programme_finds_the_cheapest_path(seed):
    cost = upper_triangular(np.random.default_rng(seed).random((9, 9)))
    grids = cheapest_grids(cost, 8)
    for steps in range(1, 9):
        brute = min(grid_cost(cost, [0, *inner, 8]) for inner in itertools.combinations(range(1, 8), steps - 1))
        assert grids[steps][0] == 0 and grids[steps][-1] == 8 and len(grids[steps]) == steps + 1
        assert grid_cost(cost, grids[steps]) == pytest.approx(brute)


def test_a_convex_step_cost_gives_the_uniform_grid():
    span = np.subtract.outer(np.arange(17), np.arange(17)).T.astype(float)
    grids = cheapest_grids(upper_triangular(span ** 2), 16)
    assert grids[4] == [0, 4, 8, 12, 16] and grids[16] == list(range(17))


@pytest.fixture(scope="module")
def fitted(trained_tiny_model):
    crops = np.stack([synthetic_image(24, 24, "shapes" if i % 2 else "gradient", seed=i) for i in range(6)])
    return fit_time_grids(ModelRunner(trained_tiny_model), crops, candidates=32, elements=2048, max_steps=16)


def test_fitted_grids_are_valid_and_beat_the_uniform_grid(fitted):
    check_time_grids(fitted)
    grids = fitted["time_grids"]
    assert grids["denominator"] == 32 and sorted(map(int, grids["grids"])) == list(range(1, 17))
    for summary in fitted["time_grid_fit"]["predicted_diffusion_bpd"].values():
        assert summary["optimised"] <= summary["uniform"] + 1e-9


@pytest.mark.parametrize("grids", [
    {"denominator": 3, "grids": {}},
    {"denominator": 8192, "grids": {}},
    {"denominator": 8, "grids": {"2": [8, 4]}},
    {"denominator": 8, "grids": {"2": [8, 5, 5, 0]}},
    {"denominator": 8, "grids": {"2": [8, 9, 0]}},
    {"denominator": 8, "grids": {"2": [8, 4.0, 0]}},
    {"denominator": 8, "grids": {"x": [8, 0]}},
    {"denominator": 8, "grids": [[8, 0]]},
    [8, 0],
])
def test_malformed_grids_are_refused(grids, tiny_model, tmp_path):
    with pytest.raises(ValueError):
        check_time_grids({"time_grids": grids})
    save_model(tiny_model, tmp_path / "bad.pt", {"time_grids": grids})
    with pytest.raises(CheckpointError, match="invalid metadata"):
        load_model(tmp_path / "bad.pt")


@pytest.fixture(scope="module")
def gridded_model(trained_tiny_model, fitted):
    model = copy.deepcopy(trained_tiny_model)
    model.metadata = {**trained_tiny_model.metadata, **fitted}
    return model


def test_lossless_files_use_and_store_the_models_grid(gridded_model, fitted):
    codec = Codec(gridded_model)
    image = synthetic_image(30, 26, "shapes", seed=3)
    data = codec.encode(image, steps=4, mode="lossless", stored_fallback=False)
    header = parse_file(data).header
    expected = [n * TIME_UNITS // 32 for n in fitted["time_grids"]["grids"]["4"]]
    assert header.time_grid == "explicit" and header.times == expected
    assert "optimised grid" in describe(data)["layers"][0]["step"]
    assert np.array_equal(codec.decode(data), image)
    # no stored grid for this T: uniform, as before
    uniform = codec.encode(image, steps=20, mode="lossless", stored_fallback=False)
    assert parse_file(uniform).header.time_grid == "uniform"
    assert np.array_equal(codec.decode(uniform), image)


@pytest.mark.parametrize("times", [
    lambda t: t[:-1], lambda t: [t[0] - 1, *t[1:]], lambda t: [t[0], t[2], t[1], *t[3:]], lambda t: t[:-1] + [1],
])
def test_damaged_lossless_grids_are_refused(gridded_model, times):
    data = Codec(gridded_model).encode(synthetic_image(16, 16, "shapes"), steps=4, mode="lossless",
                                       stored_fallback=False)
    f = parse_file(data)
    f.header.times = times(f.header.times)
    with pytest.raises(ContainerError, match="time grid"):
        parse_file(pack_header(f.header) + data[f.header_size:])


def test_tune_grid_command(trained_tiny_model, image_folder, tmp_path):
    source, out = tmp_path / "model.pt", tmp_path / "tuned.pt"
    save_model(trained_tiny_model, source, trained_tiny_model.metadata)
    args = ["tune-grid", "--model", source, "--data", image_folder, "--out", out,
            "--crops", 4, "--crop", 16, "--candidates", 64]
    result = run(*args)
    assert result.exit_code == 0, result.output
    tuned = load_model(out)
    assert tuned.model_hash == trained_tiny_model.model_hash
    assert len(tuned.metadata["time_grids"]["grids"]["16"]) == 17
    assert_one_line_error(run(*args), "exists")
    assert_one_line_error(run(*args[:4], tmp_path / "missing", *args[5:], "--force"), "missing")
