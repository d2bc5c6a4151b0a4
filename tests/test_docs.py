"""The README's commands and the package's example run as written, so they cannot go stale.

They run in a temporary folder laid out like a checkout (the sample image at its path),
with the shipped default model; the CLI commands read a small crop as the user's photo.png.
"""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import numpy as np
from click.testing import CliRunner
from PIL import Image

import diffcodec
from diffcodec.cli import main

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "diffcodec" / "samples" / "parrots.png"


def _blocks(language: str) -> list[str]:
    text = (REPO / "README.md").read_text()
    return re.findall(rf"```{language}\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    """The diffcodec commands of a shell block, comments and the install steps left out."""
    commands = []
    for line in block.replace("\\\n", " ").splitlines():
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["diffcodec"]:
                commands.append(words[1:])
    return commands


def _checkout(tmp_path: Path) -> Path:
    (tmp_path / "diffcodec" / "samples").mkdir(parents=True)
    (tmp_path / "diffcodec" / "samples" / "parrots.png").symlink_to(SAMPLE)
    return tmp_path


def _run(commands: list[list[str]], folder: Path, monkeypatch) -> None:
    monkeypatch.chdir(folder)
    for args in commands:
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, (args, result.output)


def test_the_set_up_command_runs(tmp_path, monkeypatch):
    setup = _commands(_blocks("bash")[0])
    assert [c[0] for c in setup] == ["encode", "decode"]
    _run(setup, _checkout(tmp_path), monkeypatch)
    decoded = np.asarray(Image.open(tmp_path / "parrots.png"))
    assert np.array_equal(decoded, np.asarray(Image.open(SAMPLE).convert("RGB")))


def test_the_cli_examples_run_on_a_photo(tmp_path, monkeypatch):
    block = next(b for b in _blocks("bash") if "photo.png" in b)
    commands = _commands(block)
    assert {c[0] for c in commands} >= {"encode", "decode", "info", "truncate"}
    Image.open(SAMPLE).crop((80, 60, 240, 188)).save(tmp_path / "photo.png")  # 160x128: 0.2 bpp holds a layer
    (tmp_path / "photos").mkdir()
    Image.open(SAMPLE).crop((0, 0, 64, 48)).save(tmp_path / "photos" / "small.png")
    _run(commands, tmp_path, monkeypatch)
    exact = np.asarray(Image.open(tmp_path / "exact.png"))
    assert np.array_equal(exact, np.asarray(Image.open(tmp_path / "photo.png").convert("RGB")))


def test_the_library_example_runs(tmp_path, monkeypatch):
    (example,) = _blocks("python")
    monkeypatch.chdir(_checkout(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffcodec.PrefixWarning)
        exec(compile(example, "README.md", "exec"), {})
    assert (tmp_path / "preview.png").exists()


def test_the_package_example_runs():
    lines = [line.strip() for line in diffcodec.__doc__.splitlines() if line.startswith("    ")]
    image = np.asarray(Image.open(SAMPLE).convert("RGB"))[:32, :40]
    namespace = {"image": image}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", diffcodec.PrefixWarning)
        exec("\n".join(lines), namespace)
    assert np.array_equal(namespace["pixels"], image)
