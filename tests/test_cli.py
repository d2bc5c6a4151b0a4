"""The command line: clear one-line errors, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffcodec.checkpoint import save_model
from diffcodec.cli import main

REPO = Path(__file__).resolve().parents[1]


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result


def assert_one_line_error(result, fragment):
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and fragment in lines[0], result.output
    assert "Traceback" not in result.output


def test_eval_prints_per_image_and_mean(tiny_model, image_folder, tmp_path):
    model_path = tmp_path / "m.pt"
    save_model(tiny_model, model_path)
    (image_folder / "broken.png").write_bytes(b"junk")
    result = run("eval", "--model", model_path, image_folder, "--samples", "2", "--json", tmp_path / "r.json")
    assert result.exit_code == 0, result.output
    assert "mean (4 images)" in result.output
    assert "warning: skipping" in result.output
    data = json.loads((tmp_path / "r.json").read_text())
    assert len(data["images"]) == 4 and data["mean"]["total"] > 0


def test_eval_t_step(tiny_model, image_folder, tmp_path):
    model_path = tmp_path / "m.pt"
    save_model(tiny_model, model_path)
    assert run("eval", "--model", model_path, image_folder, "--samples", "2", "--steps", "10").exit_code == 0


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt_model", "foreign_model"])
def test_eval_bad_input(problem, tiny_model, image_folder, tmp_path):
    model_path = tmp_path / "m.pt"
    save_model(tiny_model, model_path)
    folder = image_folder
    if problem == "missing":
        folder, fragment = tmp_path / "nope", "folder not found"
    elif problem == "empty":
        folder, fragment = tmp_path / "empty", "no image files"
        folder.mkdir()
    elif problem == "corrupt_model":
        model_path.write_bytes(model_path.read_bytes()[:1000])
        fragment = "not a readable model checkpoint"
    else:
        model_path = next(image_folder.iterdir())
        fragment = "not a readable model checkpoint"
    assert_one_line_error(run("eval", "--model", model_path, folder), fragment)


def test_train_bad_input(tmp_path):
    assert_one_line_error(run("train", "--data", tmp_path / "nope", "--out", tmp_path / "run"), "folder not found")
    assert_one_line_error(run("train", "--data", tmp_path, "--out", tmp_path / "run"), "no image files")
    result = run("train", "--data", tmp_path, "--out", tmp_path / "run", "--channels", "8,x")
    assert_one_line_error(result, "invalid model options")


def test_train_cli_small_run(image_folder, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", image_folder, "--val", image_folder, "--out", out, "--steps", "3",
            "--batch-size", "2", "--crop", "16", "--channels", "8,16", "--patch", "1", "--val-crop", "16",
            "--val-samples", "1", "--quiet"]
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert (out / "model.pt").exists()
    assert_one_line_error(run(*args), "--resume")
    assert run(*args, "--force").exit_code == 0


def test_real_process_has_no_traceback(tmp_path):
    """The installed entry point, as a user runs it."""
    result = subprocess.run([sys.executable, str(REPO / "bin" / "diffcodec"), "eval", "--model",
                             str(tmp_path / "none.pt"), str(tmp_path)], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [f"error: model checkpoint not found: {tmp_path / 'none.pt'}"]
