"""The command line: clear one-line errors, never a traceback."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from diffcodec.model.checkpoint import save_model
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
    assert result.stderr.strip().splitlines() == [
        f"error: unknown model '{tmp_path / 'none.pt'}': not a registered name (default) nor an existing file"]


@pytest.fixture
def coding_setup(trained_tiny_model, tmp_path):
    from PIL import Image

    from conftest import synthetic_image

    model_path = tmp_path / "model.pt"
    save_model(trained_tiny_model, model_path)
    image = synthetic_image(21, 34, "shapes", seed=9)
    source = tmp_path / "in.png"
    Image.fromarray(image).save(source)
    return model_path, image, source


def test_encode_decode_info_truncate(coding_setup, tmp_path):
    import numpy as np
    from PIL import Image

    model_path, image, source = coding_setup
    dfc = tmp_path / "a.dfc"
    assert run("encode", source, "-o", dfc, "--model", model_path, "--steps", "4", "-q").exit_code == 0
    out = tmp_path / "out.png"
    result = run("decode", dfc, "-o", out, "--model", model_path, "-q")
    assert result.exit_code == 0, result.output
    assert np.array_equal(np.asarray(Image.open(out)), image)

    result = run("info", dfc)
    assert result.exit_code == 0 and "tail:" in result.output and "complete" in result.output
    report = json.loads(run("info", dfc, "--json").output)
    assert len(report["layers"]) == 4 + 1 and report["file_bytes"] == dfc.stat().st_size
    assert report["rate_placed_layers"] == 4 and report["times"][0] == 1.0 and report["times"][-1] == 0.0

    small = tmp_path / "small.dfc"
    assert run("truncate", dfc, "-o", small, "--layers", "2").exit_code == 0
    assert json.loads(run("info", small, "--json").output)["complete_layers"] == 2
    enough = report["header_bytes"] + 200  # the header, and some layer data
    bpp = 8 * enough / (image.shape[0] * image.shape[1])
    for flag in (["--layers", "1"], ["--bytes", str(enough)], ["--bpp", f"{bpp:.3f}"], ["--steps", "2"]):
        target = tmp_path / f"p{flag[0]}.png"
        result = run("decode", small, "-o", target, "--model", model_path, "-q", *flag)
        assert result.exit_code == 0, result.output
        assert np.asarray(Image.open(target)).shape == image.shape


def test_never_overwrites_without_force(coding_setup, tmp_path):
    model_path, _, source = coding_setup
    dfc = tmp_path / "a.dfc"
    dfc.write_bytes(b"precious")
    assert_one_line_error(run("encode", source, "-o", dfc, "--model", model_path), "already exists")
    assert dfc.read_bytes() == b"precious"
    assert run("encode", source, "-o", dfc, "--model", model_path, "--force", "-q").exit_code == 0
    out = tmp_path / "out.png"
    out.write_bytes(b"precious")
    assert_one_line_error(run("decode", dfc, "-o", out, "--model", model_path), "already exists")
    assert_one_line_error(run("truncate", dfc, "-o", out, "--layers", "1"), "already exists")
    assert out.read_bytes() == b"precious"


@pytest.mark.parametrize("damage, fragment", [
    ("header_cut", "header is incomplete"), ("magic", "not a .dfc file"),
    ("layers", "damaged"), ("missing", "file not found"),
])
def test_decode_damaged_files(coding_setup, tmp_path, damage, fragment):
    model_path, _, source = coding_setup
    dfc = tmp_path / "a.dfc"
    run("encode", source, "-o", dfc, "--model", model_path, "-q")
    data = bytearray(dfc.read_bytes())
    if damage == "header_cut":
        dfc.write_bytes(data[:20])
    elif damage == "magic":
        data[1] ^= 0xFF
        dfc.write_bytes(data)
    elif damage == "layers":
        for offset in range(len(data) // 2, len(data), 5):
            data[offset] ^= 0xA5
        dfc.write_bytes(data)
    else:
        dfc.unlink()
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "x.png", "--model", model_path), fragment)
    assert not (tmp_path / "x.png").exists()


def test_decode_with_the_wrong_model(coding_setup, tiny_model, tmp_path):
    model_path, _, source = coding_setup
    dfc = tmp_path / "a.dfc"
    run("encode", source, "-o", dfc, "--model", model_path, "-q")
    other = tmp_path / "other.pt"
    save_model(tiny_model, other)
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "x.png", "--model", other), "encoded with model")


def test_encode_bad_inputs(coding_setup, tmp_path):
    model_path, _, _ = coding_setup
    assert_one_line_error(run("encode", tmp_path / "nope.png", "-o", tmp_path / "a.dfc", "--model", model_path),
                          "file not found")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG not really")
    assert_one_line_error(run("encode", junk, "-o", tmp_path / "a.dfc", "--model", model_path), "cannot read")
    assert_one_line_error(run("encode", junk, "-o", tmp_path / "a.dfc", "--model", tmp_path / "none.pt"),
                          "cannot read")
    assert_one_line_error(run("info", junk), "not a .dfc file")


def test_lossless_encode_decode_and_info(coding_setup, tmp_path):
    import numpy as np
    from PIL import Image

    model_path, image, source = coding_setup
    dfc = tmp_path / "l.dfc"
    result = run("encode", source, "-o", dfc, "--model", model_path, "--mode", "lossless", "--steps", "3", "-q")
    assert result.exit_code == 0, result.output
    out = tmp_path / "l.png"
    assert run("decode", dfc, "-o", out, "--model", model_path, "-q").exit_code == 0
    assert np.array_equal(np.asarray(Image.open(out)), image)
    result = run("info", dfc)
    report = json.loads(run("info", dfc, "--json").output)
    assert result.exit_code == 0 and report["mode"] in ("lossless", "predictive", "stored")
    if report["mode"] == "lossless":  # the tiny model may lose to a fallback without the model
        assert "bands (rows)" in result.output and "10 parameters" in result.output
        assert len(report["chain_params"]) == 3 * 10 and sum(report["bands"]) == 21
    else:
        assert {"predictive": "predictive pixel coder", "stored": "zlib pixels"}[report["mode"]] in result.output


def test_output_problems_are_one_line_errors(coding_setup, tmp_path):
    model_path, _, source = coding_setup
    dfc = tmp_path / "a.dfc"
    assert run("encode", source, "-o", dfc, "--model", model_path, "-q").exit_code == 0
    folder = tmp_path / "folder"
    folder.mkdir()
    assert_one_line_error(run("decode", dfc, "-o", folder, "--force", "--model", model_path), "is a folder")
    assert_one_line_error(run("decode", dfc, "-o", dfc / "x.png", "--model", model_path), "is not a folder")
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "no" / "x.png", "--model", model_path),
                          "does not exist")
    assert_one_line_error(run("encode", source, "-o", source, "--force", "--model", model_path), "is the input")
    assert_one_line_error(run("truncate", dfc, "-o", dfc, "--force", "--layers", "1"), "is the input")
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "x.png", "--device", "gpu7"), "unknown device")
    assert source.stat().st_size > 0 and dfc.stat().st_size > 0


def test_writes_never_follow_a_planted_link(coding_setup, tmp_path):
    """The temporary file is new and exclusive: a link planted at the old fixed temporary
    name, or at the target itself (with --force), never writes through to its target."""
    model_path, _, source = coding_setup
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"precious")
    dfc = tmp_path / "a.dfc"
    (tmp_path / ".a.dfc.partial").symlink_to(victim)
    assert run("encode", source, "-o", dfc, "--model", model_path, "-q").exit_code == 0
    link = tmp_path / "b.dfc"
    link.symlink_to(victim)
    assert_one_line_error(run("encode", source, "-o", link, "--model", model_path), "already exists")
    assert run("encode", source, "-o", link, "--model", model_path, "-q", "--force").exit_code == 0
    assert victim.read_bytes() == b"precious" and not link.is_symlink()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial") and not p.is_symlink()]
    import os

    mask = os.umask(0)
    os.umask(mask)
    assert dfc.stat().st_mode & 0o777 == 0o666 & ~mask  # the usual permissions, not mkstemp's 0600


def test_usage_errors_are_one_line(coding_setup, tmp_path):
    model_path, _, source = coding_setup
    for args in (["encode", source, "-o", tmp_path / "a.dfc", "--steps", "0"], ["decode"], ["frobnicate"],
                 ["encode", source, "-o", tmp_path / "a.dfc", "--mode", "lossy"]):
        result = run(*args)
        assert result.exit_code == 2, result.output
        assert len(result.output.strip().splitlines()) == 1 and result.output.startswith("error:"), result.output


def test_input_and_output_policy(coding_setup, tmp_path):
    import numpy as np
    from PIL import Image

    model_path, image, source = coding_setup
    frames = [Image.fromarray(image), Image.fromarray(255 - image)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    assert_one_line_error(run("encode", tmp_path / "anim.gif", "-o", tmp_path / "a.dfc", "--model", model_path),
                          "animated")
    dfc = tmp_path / "a.dfc"
    assert run("encode", source, "-o", dfc, "--model", model_path, "-q", "--steps", "2").exit_code == 0
    result = run("decode", dfc, "-o", tmp_path / "x.jpg", "--model", model_path, "-q")
    assert result.exit_code == 0 and "warning: JPEG does not store the pixels exactly" in result.output
    result = run("decode", dfc, "-o", tmp_path / "x.webp", "--model", model_path, "-q")
    assert result.exit_code == 0 and "warning" not in result.output
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.webp")), image)  # stored lossless
    cut = tmp_path / "cut.dfc"
    cut.write_bytes(dfc.read_bytes()[:-10])
    result = run("decode", cut, "-o", tmp_path / "c.png", "--model", model_path, "-q")
    assert result.exit_code == 0 and "a preview from a prefix" in result.output  # said even with -q
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "m.png", "--model", model_path,
                              "--max-pixels", "100"), "--max-pixels")


def test_hostile_numbers_and_paths_get_one_line(coding_setup, tmp_path):
    """Non-finite budgets are usage errors; a folder, a .dfc given as the model and a
    junk checkpoint each get one line that says what is known."""
    model_path, image, source = coding_setup
    dfc = tmp_path / "a.dfc"
    assert run("encode", source, "-o", dfc, "--model", model_path, "-q", "--steps", "1").exit_code == 0
    for bad in ("inf", "nan", "-inf"):
        for command in (("truncate", dfc, "-o", tmp_path / "t.dfc"), ("decode", dfc, "-o", tmp_path / "t.png")):
            result = run(*command, "--bpp", bad)
            assert result.exit_code == 2 and ("not a finite number" in result.output or "range" in result.output)
    result = run("truncate", dfc, "-o", tmp_path / "t.dfc", "--bpp", "1e308")
    assert result.exit_code == 0 and (tmp_path / "t.dfc").read_bytes() == dfc.read_bytes()
    assert run("decode", dfc, "-o", tmp_path / "s.png", "--steps", "1001").exit_code == 2
    from diffcodec.errors import ImageReadError
    from diffcodec.images import read_image

    with pytest.raises(ImageReadError, match="is a folder, not an image"):
        read_image(tmp_path)  # (the CLI encodes a folder's images: test_many_files_at_once)
    assert_one_line_error(run("decode", dfc, "-o", tmp_path / "m.png", "--model", dfc), "is a .dfc image file")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    result = run("decode", dfc, "-o", tmp_path / "j.png", "--model", junk)
    assert_one_line_error(result, "not a diffcodec checkpoint")
    assert "weights_only" not in result.output


def test_many_files_at_once(coding_setup, tmp_path):
    """A folder (or several files) into an output folder: one model load, a bad file fails
    alone with one line, the summary counts it, and the exit status says so."""
    import json

    import numpy as np
    from PIL import Image

    from conftest import synthetic_image

    model_path, _, _ = coding_setup
    folder = tmp_path / "images"
    folder.mkdir()
    images = {f"p{i}": synthetic_image(12, 16, "shapes", seed=i) for i in range(2)}
    for name, image in images.items():
        Image.fromarray(image).save(folder / f"{name}.png")
    (folder / "broken.png").write_bytes(b"not an image")
    (folder / "notes.txt").write_text("not an image either, and not taken as one")
    result = run("encode", folder, "-o", tmp_path / "coded", "--model", model_path)
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "broken.png" in errors[0]
    assert "encoded 2 of 3 files" in result.output and "1 failed" in result.output
    assert sorted(p.name for p in (tmp_path / "coded").iterdir()) == ["p0.dfc", "p1.dfc"]
    result = run("decode", tmp_path / "coded", "-o", tmp_path / "decoded", "--model", model_path, "--json")
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert report["files"] == 2 and report["failed"] == 0 and all(r["exact"] for r in report["results"])
    for name, image in images.items():
        assert np.array_equal(np.asarray(Image.open(tmp_path / "decoded" / f"{name}.png")), image)
    result = run("encode", folder / "p0.png", folder / "p1.png", "-o", tmp_path / "two", "--model", model_path,
                 "--json", "-q")
    assert result.exit_code == 0 and json.loads(result.stdout)["bytes"] > 0
    single = json.loads(run("encode", folder / "p0.png", "-o", tmp_path / "one.dfc", "--model", model_path,
                            "--json").stdout)
    assert single["output"].endswith("one.dfc") and single["bytes"] == (tmp_path / "one.dfc").stat().st_size
    (tmp_path / "a_file").write_text("")
    assert_one_line_error(run("encode", folder, "-o", tmp_path / "a_file", "--model", model_path),
                          "several inputs need an output folder")
    assert_one_line_error(run("encode", folder, "-o", tmp_path / "coded", "--model", model_path), "already exists")
    assert_one_line_error(run("encode", tmp_path / "decoded", folder / "p0.png", "-o", tmp_path / "x",
                              "--model", model_path), "would both be written")


def test_previews_and_their_contact_sheet(coding_setup, tmp_path):
    import numpy as np
    from PIL import Image

    model_path, image, source = coding_setup
    dfc = tmp_path / "a.dfc"
    assert run("encode", source, "-o", dfc, "--model", model_path, "-q", "--steps", "2").exit_code == 0
    out = tmp_path / "previews"
    result = run("previews", dfc, "-o", out, "--model", model_path, "--original", source)
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a.layer0.png", "a.layer1.png", "a.layer2.png", "a.layer3.png", "a.sheet.png"]
    assert np.array_equal(np.asarray(Image.open(out / "a.layer3.png")), image)  # the tail: exact
    assert "exact" in result.output.splitlines()[3] and " dB" in result.output.splitlines()[1]
    assert Image.open(out / "a.sheet.png").width > image.shape[1]
    assert_one_line_error(run("previews", dfc, "-o", out, "--model", model_path), "already exists")
    cut = tmp_path / "cut.dfc"  # previews of the layers a prefix holds, nothing after them
    assert run("truncate", dfc, "-o", cut, "--layers", "1").exit_code == 0
    result = run("previews", cut, "-o", tmp_path / "cut", "--model", model_path)
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["cut.layer0.png", "cut.layer1.png", "cut.sheet.png"]
    (tmp_path / "file").write_text("")
    assert_one_line_error(run("previews", dfc, "-o", tmp_path / "file", "--model", model_path), "is a file")
    other = tmp_path / "other.png"
    Image.fromarray(image[:5]).save(other)
    assert_one_line_error(run("previews", dfc, "-o", tmp_path / "p2", "--model", model_path, "--original", other),
                          "not its original")


def test_encode_to_a_size(coding_setup, tmp_path):
    model_path, image, source = coding_setup
    out = tmp_path / "s.dfc"
    result = run("encode", source, "-o", out, "--model", model_path, "--bpp", "16")
    assert result.exit_code == 0 and "lossy" in result.output, result.output
    assert out.stat().st_size <= 16 * image.shape[0] * image.shape[1] / 8
    result = run("encode", source, "-o", tmp_path / "t.dfc", "--model", model_path, "--bpp", "1", "--steps", "2")
    assert result.exit_code == 2 and "no --steps" in result.output
    assert_one_line_error(run("encode", source, "-o", tmp_path / "t.dfc", "--model", model_path, "--bytes", "50"),
                          "leaves no room for a layer")
    assert run("encode", source, "-o", tmp_path / "t.dfc", "--bpp", "inf").exit_code == 2
