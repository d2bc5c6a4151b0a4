"""The benchmark scripts: metric and BD-rate helpers, and a --quick smoke run of each script."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import randomize_output, synthetic_image, tiny_config
from diffcodec.model.checkpoint import save_model
from diffcodec.model import DiffusionModel
from diffcodec.sheet import LABEL_HEIGHT

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import classical_codecs  # noqa: E402
from diffcodec.metrics import bd_rate, ms_ssim, ms_ssim_scales, psnr  # noqa: E402


# -- metrics -------------------------------------------------------------------------------

def test_psnr_known_values_and_identical_images():
    a = synthetic_image(40, 48, "shapes")
    assert psnr(a, a) == math.inf
    b = a.astype(np.int16)
    b = np.where(b < 255, b + 1, b - 1).astype(np.uint8)  # every value off by exactly one
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2), abs=1e-9)
    with pytest.raises(ValueError):
        psnr(a, a[:-1])


@pytest.mark.parametrize("size", [(40, 48), (200, 180)])
def test_ms_ssim_identical_is_one_and_drops_with_distortion(size):
    a = synthetic_image(*size, "shapes", seed=1)
    assert ms_ssim(a, a) == pytest.approx(1.0, abs=1e-9)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 20, a.shape), 0, 255).astype(np.uint8)
    assert 0 < ms_ssim(a, noisy) < 0.99
    assert ms_ssim(a, np.full_like(a, 128)) < ms_ssim(a, noisy)


def test_ms_ssim_scales_shrink_for_small_images():
    assert ms_ssim_scales(512, 768) == 5
    assert ms_ssim_scales(176, 176) == 5
    assert ms_ssim_scales(64, 64) == 3
    assert ms_ssim_scales(40, 48) == 2
    assert ms_ssim_scales(12, 12) == 1
    tiny = synthetic_image(8, 9, "gradient")  # smaller than the window: shrunk window, plain SSIM
    assert ms_ssim(tiny, tiny) == pytest.approx(1.0)


def test_bd_rate():
    bpp = np.array([0.1, 0.25, 0.5, 1.0, 2.0])
    quality = np.array([26.0, 29.0, 32.0, 35.5, 39.0])
    assert bd_rate(bpp, quality, bpp, quality) == pytest.approx(0.0, abs=1e-9)
    assert bd_rate(bpp, quality, 0.9 * bpp, quality) == pytest.approx(-10.0, abs=1e-6)
    assert bd_rate(bpp, quality, bpp, quality + 20) is None  # PSNR ranges do not overlap
    assert bd_rate(bpp[:1], quality[:1], bpp, quality) is None  # a single point is no curve
    # a dominated point (more rate, less quality) and a lossless one (inf) are ignored
    worse_bpp, worse_quality = np.append(bpp, [0.6, 3.0]), np.append(quality, [27.0, np.inf])
    assert bd_rate(worse_bpp, worse_quality, 0.9 * bpp, quality) == pytest.approx(-10.0, abs=1e-6)


# -- scripts -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bench_inputs(tmp_path_factory):
    """Two small generated images and a tiny saved model with a scale head."""
    root = tmp_path_factory.mktemp("bench")
    folder = root / "images"
    folder.mkdir()
    Image.fromarray(synthetic_image(40, 48, "gradient", seed=0)).save(folder / "a.png")
    Image.fromarray(synthetic_image(48, 40, "shapes", seed=1)).save(folder / "b.png")
    torch.manual_seed(0)
    model_path = root / "tiny.pt"
    save_model(randomize_output(DiffusionModel(tiny_config(progressive_heads=True))), model_path)
    return root, folder, model_path


def run_script(name: str, *args, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / name), *map(str, args)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


def test_plot_range_holds_lines_that_leave_it():
    """A curve whose last point lies beyond the x range is still drawn up to the edge."""
    from benchmarks.rate_distortion import PLOT_MAX_BPP, visible_values

    shown = visible_values(np.array([0.1, 0.8, 2 * PLOT_MAX_BPP]), np.array([20.0, 30.0, 50.0]))
    assert shown[:2] == [20.0, 30.0] and 30.0 < max(shown) < 50.0
    assert visible_values(np.array([0.1, 0.5]), np.array([20.0, 25.0])) == [20.0, 25.0]


def test_rate_distortion_quick(bench_inputs):
    root, folder, model_path = bench_inputs
    out = root / "rd"
    result = run_script("rate_distortion.py", folder, "--model", model_path, "--quick", "--steps", "3",
                        "--completion-steps", "0,2", "--chunk-symbols", "512", "--budget-bpps", "6,12",
                            "--out", out)
    documents = {d["name"]: d for d in (json.loads(p.read_text()) for p in out.glob("*.json")) if "results" in d}
    classical, _ = classical_codecs()
    expected = {"diffcodec (denoised)", "diffcodec (completion 2)", "diffcodec budget (denoised)",
                "diffcodec budget (completion 2)", "model ideal channel"} | {c.name for c in classical}
    assert {"JPEG", "WebP", "AVIF", "JPEG 2000"} <= expected
    assert set(documents) == expected
    assert len(list(out.glob("sheet_*.png"))) == 1  # the first image's layers, as `diffcodec previews` draws them
    ideal = documents.pop("model ideal channel")
    assert len(ideal["results"]["bpp"]) == len(ideal["results"]["psnr-rgb"]) >= 2
    assert ideal["results"]["bpp"] == sorted(ideal["results"]["bpp"])  # the rate to reach z_t grows as t falls
    for name, doc in documents.items():
        results = doc["results"]
        lengths = {len(results[key]) for key in ("bpp", "psnr-rgb", "ms-ssim-rgb", "encoding_time", "decoding_time")}
        assert len(lengths) == 1 and lengths.pop() >= 1, name
        values = np.array([results[key] for key in ("bpp", "psnr-rgb", "ms-ssim-rgb")], dtype=float)
        assert np.isfinite(values).all() and (values[0] > 0).all(), name
        assert isinstance(doc["description"], str) and doc["description"]
        if doc["kind"] == "classical":
            assert doc["round_trip_decoded"] is True, name
        else:
            assert doc["lossless_round_trip"] is True and doc["bpd"] > 0
    layer_points = documents["diffcodec (denoised)"]["results"]["bpp"]
    assert layer_points == sorted(layer_points)  # prefixes only grow

    raw = json.loads((out / "rd_raw.json").read_text())
    assert [image["name"] for image in raw["images"]] == ["a.png", "b.png"]
    for image in raw["images"]:
        for codec in classical:
            assert all(p["round_trip_decoded"] for p in image["methods"][codec.name])
    for plot in ("rd_psnr.png", "rd_msssim.png"):
        assert (out / plot).stat().st_size > 1000
    table = (out / "rd_table.md").read_text()
    assert "BD-rate" in table and "| JPEG |" in table and table in result.stdout
    assert "against the model's ideal channel" in table and "| rate-placed |" in table


def test_full_file_quick(bench_inputs):
    root, folder, model_path = bench_inputs
    out = root / "full"
    run_script("full_file.py", folder, "--model", model_path, "--quick", "--steps", "2", "--lossless-steps", "3",
               "--out", out)
    data = json.loads((out / "full_file.json").read_text())
    assert [r["image"] for r in data["images"]] == ["a.png", "b.png"] and data["means"]["exact"] is True
    for record in data["images"]:
        assert record["lossy_layers"] == 2 and record["tail"] in ("lossless", "predictive", "stored")
        assert record["ratio"] == pytest.approx(record["bpd"] / record["lossless_bpd"])
        assert 0 < record["lossy_encode_s"] < record["encode_s"] and 0 < record["lossy_decode_s"]
    assert "| mean |" in (out / "full_file_table.md").read_text()
    run_script("full_file.py", folder, "--model", model_path, "--quick", "--steps", "2", "--no-lossless", "--skip", "1",
               "--out", root / "default_only")
    alone = json.loads((root / "default_only" / "full_file.json").read_text())
    assert [r["image"] for r in alone["images"]] == ["b.png"] and "lossless_bpd" not in alone["images"][0]
    assert alone["images"][0]["bpd"] == pytest.approx(data["images"][1]["bpd"]) and alone["means"]["exact"] is True
    # parts join into one run; parts that overlap or differ in steps are refused
    run_script("full_file.py", folder, "--model", model_path, "--quick", "--steps", "2", "--lossless-steps", "3",
               "--limit", "1", "--out", root / "part_a")
    run_script("full_file.py", folder, "--model", model_path, "--quick", "--steps", "2", "--lossless-steps", "3",
               "--skip", "1", "--out", root / "part_b")
    parts = [root / "part_a" / "full_file.json", root / "part_b" / "full_file.json"]
    run_script("full_file.py", "--merge", *parts, "--out", root / "joined")
    joined = json.loads((root / "joined" / "full_file.json").read_text())
    assert [r["bpd"] for r in joined["images"]] == pytest.approx([r["bpd"] for r in data["images"]])
    assert joined["means"]["bpd"] == pytest.approx(data["means"]["bpd"])
    refused = run_script("full_file.py", "--merge", parts[0], parts[0], "--out", root / "twice", check=False)
    assert refused.returncode != 0 and "more than one part" in refused.stderr
    refused = run_script("full_file.py", "--merge", parts[1], root / "default_only" / "full_file.json",
                         "--out", root / "mixed", check=False)
    assert refused.returncode != 0 and "differ" in refused.stderr


def test_speed_quick(bench_inputs):
    root, folder, model_path = bench_inputs
    out = root / "speed"
    run_script("speed.py", folder, "--model", model_path, "--quick", "--steps", "1,2", "--out", out)
    data = json.loads((out / "speed.json").read_text())
    assert set(data["results"]) == {"1", "2"}
    for summary in data["results"].values():
        assert summary["all_lossless"] is True
        for side in ("encode", "decode"):
            total = summary[f"{side}_seconds"]
            assert total > 0 and summary[f"{side}_megapixels_per_s"] > 0
            assert summary[f"{side}_network_seconds"] + summary[f"{side}_coding_seconds"] == pytest.approx(total)
            assert 0 < summary[f"{side}_network_seconds"] < total
    assert "| steps |" in (out / "speed_table.md").read_text()


def test_size_target_in_parts_and_merged(bench_inputs):
    root, folder, model_path = bench_inputs
    common = ("--model", model_path, "--targets", "6", "12")
    run_script("size_target.py", folder, "--limit", "1", "--out", root / "part1", *common)
    run_script("size_target.py", folder, "--skip", "1", "--out", root / "part2", *common)
    merged = run_script("size_target.py", "--merge", root / "part1" / "size_target.json",
                        root / "part2" / "size_target.json", "--targets", "6", "12", "--out", root / "sized")
    rows = json.loads((root / "sized" / "size_target.json").read_text())["rows"]
    assert sorted((r["image"], r["target"]) for r in rows) == [("a.png", 6), ("a.png", 12), ("b.png", 6),
                                                                ("b.png", 12)]
    assert all(r["sized_bpp"] <= r["target"] and r["cut_bpp"] <= r["target"] for r in rows)
    assert "| 12.0 | 2 |" in merged.stdout


def test_rate_distortion_in_parts_and_merged(bench_inputs):
    root, folder, model_path = bench_inputs
    common = ("--model", model_path, "--quick", "--steps", "2", "--completion-steps", "0", "--budget-bpps", "none",
              "--no-classical", "--ideal-points", "2")
    run_script("rate_distortion.py", folder, "--limit", "1", "--out", root / "rd1", *common)
    run_script("rate_distortion.py", folder, "--skip", "1", "--out", root / "rd2", *common)
    run_script("rate_distortion.py", "--merge", root / "rd1" / "rd_raw.json", root / "rd2" / "rd_raw.json",
               "--out", root / "rd12")
    raw = json.loads((root / "rd12" / "rd_raw.json").read_text())
    assert [image["name"] for image in raw["images"]] == ["a.png", "b.png"] and raw["config"]["images"] == 2
    layers = json.loads((root / "rd12" / "diffcodec-denoised.json").read_text())
    first = [json.loads((root / part / "rd_raw.json").read_text())["images"][0] for part in ("rd1", "rd2")]
    mean_bpp = np.mean([image["methods"]["diffcodec (denoised)"][1]["bpp"] for image in first])
    assert layers["results"]["bpp"][1] == pytest.approx(mean_bpp)  # means over both parts' images
    assert "against the model's ideal channel" in (root / "rd12" / "rd_table.md").read_text()  # inf PSNR as null
    assert len(list((root / "rd12").glob("sheet_*.png"))) == 1
    stored = root / "classical"
    stored.mkdir()
    (stored / "webp.json").write_text(json.dumps({"name": "WebP", "kind": "classical", "results": {
        "bpp": layers["results"]["bpp"], "psnr-rgb": [p - 1 for p in layers["results"]["psnr-rgb"]]}}))
    run_script("rate_distortion.py", "--merge", root / "rd1" / "rd_raw.json", root / "rd2" / "rd_raw.json",
               "--out", root / "rd12against", "--against", stored)
    table = (root / "rd12against" / "rd_table.md").read_text()
    assert "| WebP |" in table and "WebP |" in table.split("## BD-rate")[1].splitlines()[4]  # a row and a BD column
    shared = run_script("rate_distortion.py", "--merge", root / "rd1" / "rd_raw.json", root / "rd1" / "rd_raw.json",
                        "--out", root / "rd11", check=False)
    assert shared.returncode == 2 and "share images" in shared.stderr


def test_batch_folder_against_separate_commands(bench_inputs):
    root, folder, model_path = bench_inputs
    result = run_script("batch.py", folder, "--bpp", "12", "--model", model_path, "--out", root / "batch")
    report = json.loads((root / "batch" / "batch.json").read_text())
    assert report["images"] == 2 and report["same_bytes"] is True and len(report["single_seconds"]) == 2
    assert "2 files" in report["folder_summary"], report["folder_summary"]
    assert "encode DIR -o OUT" in result.stdout


def test_completion_quick(bench_inputs):
    """Two parts (--limit, --skip) merged into one run; the first part's contact sheet."""
    root, folder, model_path = bench_inputs
    common = ("--model", model_path, "--steps", "2", "--crop", "32", "--limit", "1")
    first = run_script("completion.py", folder, *common, "--out", root / "completion_a",
                       "--sheet", root / "completion_a" / "sheet.png")
    run_script("completion.py", folder, *common, "--skip", "1", "--out", root / "completion_b")
    assert "high-frequency energy" in first.stdout
    parts = [root / f"completion_{p}" / "completion.json" for p in "ab"]
    run_script("completion.py", "--merge", *parts, "--out", root / "completion")
    rows = json.loads((root / "completion" / "completion.json").read_text())["rows"]
    assert {r["image"] for r in rows} == {"a.png", "b.png"} and {r["steps"] for r in rows} == {0, 2}
    assert all(np.isfinite(r["high_frequency"]) and len(r["std_ratio"]) == 3 for r in rows)
    assert "| 1 | estimate | 2 |" in (root / "completion" / "completion.md").read_text()
    layers = len({r["layer"] for r in rows if r["image"] == "a.png"})
    with Image.open(root / "completion_a" / "sheet.png") as sheet:  # a row per layer: original, estimate, 2 steps
        assert sheet.height == layers * (32 + LABEL_HEIGHT) and sheet.width % 3 == 0
    twice = run_script("completion.py", "--merge", parts[0], parts[0], "--out", root / "twice", check=False)
    assert twice.returncode != 0 and "more than one part" in twice.stderr


@pytest.mark.parametrize("script", ["completion.py", "full_file.py", "size_target.py"])
def test_negative_skip_is_refused(bench_inputs, script):
    root, folder, model_path = bench_inputs
    result = run_script(script, folder, "--model", model_path, "--skip", "-1", "--out", root / "neg", check=False)
    assert result.returncode != 0 and "--skip must be 0 or more" in result.stderr


def test_release_figures_measures_every_quoted_figure(bench_inputs):
    """benchmarks/release_figures.sh on two images: each benchmark in halves, merged; a
    failure names its log; a bad LIMIT gets the usage."""
    root, folder, model_path = bench_inputs
    script = str(REPO / "benchmarks" / "release_figures.sh")
    env = {**os.environ, "PYTHONPATH": str(REPO), "MPLBACKEND": "Agg", "PYTHON": sys.executable}

    def release(*args):
        return subprocess.run(["bash", script, *map(str, args)], capture_output=True, text=True, env=env, timeout=600)

    out = root / "release"
    done = release(model_path, folder, folder, out, 2)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [i["image"] for i in json.loads((out / "eval_kodak.json").read_text())["images"]] == ["a.png", "b.png"]
    full = json.loads((out / "full_file" / "full_file.json").read_text())
    assert [i["image"] for i in full["images"]] == ["a.png", "b.png"] and all(i["exact"] for i in full["images"])
    assert [i["name"] for i in json.loads((out / "rd" / "rd_raw.json").read_text())["images"]] == ["a.png", "b.png"]
    assert "| WebP |" in (out / "rd" / "rd_table.md").read_text()  # beside the stored classical curves
    assert (out / "completion" / "completion.md").is_file()
    broken = release(root / "missing.pt", folder, folder, root / "broken", 2)
    assert broken.returncode == 1 and "failed, see" in broken.stderr and "eval" in broken.stderr
    for args in ((), (model_path, folder, folder, root / "one", 1)):
        usage = release(*args)
        assert usage.returncode == 2 and "release_figures.sh MODEL KODAK" in usage.stdout
