"""A --quick smoke run of benchmarks/lossless.py on generated images and a tiny trained model."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image

from conftest import synthetic_image
from diffcodec.model.checkpoint import save_model

REPO = Path(__file__).resolve().parents[1]
CLASSICAL = ("PNG", "WebP-LL", "JPEG 2000 (mct=1)", "JPEG-XL")


def test_lossless_quick(tmp_path, trained_tiny_model):
    folder = tmp_path / "images"
    folder.mkdir()
    # larger than the 48x48 quick crop, so the crop is exercised; the third image is past --quick's two
    for i, (kind, h, w) in enumerate([("gradient", 56, 60), ("shapes", 52, 50), ("shapes", 40, 40)]):
        Image.fromarray(synthetic_image(h, w, kind, seed=i)).save(folder / f"{i}.png")
    model_path = tmp_path / "tiny.pt"
    save_model(trained_tiny_model, model_path)
    out = tmp_path / "out"

    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "lossless.py"), str(folder),
                             "--model", str(model_path), "--quick", "--nelbo-samples", "2",
                             "--progressive-steps", "3", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    data = json.loads((out / "lossless.json").read_text())
    assert data["config"]["steps"] == [2, 4] and data["config"]["quick"] is True
    jxl = "JPEG-XL" in data["config"]["codecs"]
    expected = set(CLASSICAL) if jxl else set(CLASSICAL) - {"JPEG-XL"}
    assert jxl or any("JPEG-XL" in note for note in data["config"]["notes"])
    assert [image["name"] for image in data["images"]] == ["0.png", "1.png"]
    for image in data["images"]:
        assert (image["height"], image["width"]) == (48, 48)
        dims = 48 * 48 * 3
        ours = image["diffcodec"]
        assert set(ours["lossless"]) == {"2", "4"}
        for facts in ours["lossless"].values():
            assert facts["round_trip"] is True
            assert facts["bpd"] == 8 * facts["bytes"] / dims and facts["header_bytes"] > 0
            assert facts["encode_seconds"] > 0 and facts["decode_seconds"] > 0
            assert math.isfinite(facts["ratio"]) and facts["ratio"] > 0
            assert facts["ratio"] == facts["bpd"] / facts["nelbo_bpd"] and sum(facts["bands"]) == 48
            assert facts["bound_ratio"] == facts["bpd"] / facts["bound_bpd"] and facts["bound_bpd"] > 0
        assert math.isfinite(ours["continuous_nelbo_bpd"]) and ours["continuous_nelbo_bpd"] > 0
        assert ours["progressive"]["round_trip"] is True and ours["progressive"]["steps"] == 3
        assert ours["progressive"]["bpd"] > 0
        assert set(image["classical"]) == expected
        for facts in image["classical"].values():
            assert facts["round_trip"] is True and facts["bpd"] == 8 * facts["bytes"] / dims
            assert facts["encode_seconds"] >= 0 and facts["decode_seconds"] >= 0

    means = data["means"]
    for steps, summary in means["lossless"].items():
        assert math.isfinite(summary["ratio"]) and summary["ratio"] == summary["bpd"] / summary["nelbo_bpd"]
        assert summary["bound_ratio"] == summary["bpd"] / summary["bound_bpd"]
        assert means["methods"][f"diffcodec lossless T={steps}"]["round_trips"] == 2
    assert all(means["methods"][name]["round_trips"] == 2 for name in expected)
    assert means["methods"]["diffcodec progressive (3 steps, full)"]["round_trips"] == 2

    table = (out / "lossless_table.md").read_text()
    assert "| **mean (2)** |" in table and "diffcodec T=4" in table and "| PNG |" in table
    assert "NOT EXACT" not in table and table in result.stdout


def test_lossless_curve_quick(tmp_path, trained_tiny_model):
    """benchmarks/lossless_curve.py: the coder's bound per T on both grids."""
    folder = tmp_path / "images"
    folder.mkdir()
    Image.fromarray(synthetic_image(40, 44, "shapes", seed=4)).save(folder / "a.png")
    model_path = tmp_path / "tiny.pt"
    save_model(trained_tiny_model, model_path)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "lossless_curve.py"), str(folder),
                             "--model", str(model_path), "--steps", "2,3", "--out", str(out)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads((out / "lossless_curve.json").read_text())
    [image] = data["images"]
    for grid in ("uniform", "model"):
        assert set(image["bound_bpd"][grid]) == {"2", "3"}
        assert all(0 < v < 20 for v in image["bound_bpd"][grid].values())
    assert data["mean_bound_bpd"] == image["bound_bpd"]
    assert "| **mean (1)** |" in (out / "lossless_curve.md").read_text()


def test_lossless_curve_in_parts_and_merged(tmp_path, trained_tiny_model):
    """--grids, --skip and --merge: two parts over different images join into one run; an
    image in two parts is refused."""
    folder = tmp_path / "images"
    folder.mkdir()
    for k, name in enumerate(("a.png", "b.png")):
        Image.fromarray(synthetic_image(24, 20, "shapes", seed=k)).save(folder / name)
    model_path = tmp_path / "tiny.pt"
    save_model(trained_tiny_model, model_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    script = [sys.executable, str(REPO / "benchmarks" / "lossless_curve.py")]

    def run(*args):
        return subprocess.run(script + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=120)

    common = ["--model", model_path, "--steps", "2", "--grids", "model"]
    assert run(folder, *common, "--limit", 1, "--out", tmp_path / "p1").returncode == 0
    assert run(folder, *common, "--skip", 1, "--out", tmp_path / "p2").returncode == 0
    parts = [tmp_path / p / "lossless_curve.json" for p in ("p1", "p2")]
    joined = run("--merge", *parts, "--out", tmp_path / "all")
    assert joined.returncode == 0, joined.stderr[-3000:]
    data = json.loads((tmp_path / "all" / "lossless_curve.json").read_text())
    assert [r["name"] for r in data["images"]] == ["a.png", "b.png"] and set(data["mean_bound_bpd"]) == {"model"}
    assert "| **mean (2)** |" in (tmp_path / "all" / "lossless_curve.md").read_text()
    twice = run("--merge", parts[0], parts[0], "--out", tmp_path / "twice")
    assert twice.returncode == 2 and "more than one part" in twice.stderr
