"""Training: the loss goes down, runs resume, bad data is reported clearly."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from diffcodec.errors import DatasetError, DiffcodecError
from diffcodec.train.evaluation import image_nelbo
from diffcodec.images import read_image
from diffcodec.train import Trainer, TrainOptions, resolve_options

from conftest import TINY_MODEL_OPTIONS

REPO = Path(__file__).resolve().parents[1]


def options(folder, out, **overrides):
    base = dict(data=[str(folder)], out=str(out), model=TINY_MODEL_OPTIONS, batch_size=4, crop=16, lr=2e-3, warmup_steps=10,
                val_every_minutes=1e9, checkpoint_every_minutes=1e9, progress=False, log_every_steps=10)
    return TrainOptions(**{**base, **overrides})


def test_hundred_steps_lower_the_loss(image_folder, tmp_path):
    trainer = Trainer(options(image_folder, tmp_path / "run", max_steps=100),
                      log=lambda m: None)
    image = read_image(next(image_folder.iterdir()))
    before = image_nelbo(trainer.model, image, samples=8).total
    summary = trainer.run()
    after = image_nelbo(trainer.model, image, samples=8).total
    assert summary["step"] == 100
    assert after < before - 1.0, (before, after)
    curve = [json.loads(line) for line in (tmp_path / "run" / "curve.jsonl").read_text().splitlines()]
    train = [r["train_bpd"] for r in curve if "train_bpd" in r]
    assert train[-1] < train[0]
    for name in ("model.pt", "state.pt"):
        assert (tmp_path / "run" / name).exists()


def test_resume_continues_where_it_stopped(image_folder, tmp_path):
    out = tmp_path / "run"
    Trainer(options(image_folder, out, max_steps=5), log=lambda m: None).run()
    with pytest.raises(DiffcodecError, match="--resume"):
        Trainer(options(image_folder, out, max_steps=5), log=lambda m: None)
    resumed = Trainer(options(image_folder, out, max_steps=9, resume=True), log=lambda m: None)
    assert resumed.step == 5
    assert resumed.run()["step"] == 9


def test_cooldown_takes_the_rate_to_zero_at_the_last_step(image_folder, tmp_path):
    from diffcodec.train.trainer import learning_rate

    assert [learning_rate(s, 1.0, 0, 4, 10) for s in (0, 5, 6, 7, 9)] == [1.0, 1.0, 1.0, 0.75, 0.25]
    assert learning_rate(0, 1.0, 10, 4, 10) == 0.1  # warm-up still applies
    out = tmp_path / "run"
    Trainer(options(image_folder, out, max_steps=6, cooldown_steps=4, warmup_steps=0, log_every_steps=3),
            log=lambda m: None).run()
    rates = [r["lr"] for r in map(json.loads, (out / "curve.jsonl").read_text().splitlines()) if "lr" in r]
    assert rates == [2e-3, 2e-3 * 0.25]  # the rates of updates 3 and 6 (the last)
    with pytest.raises(DiffcodecError, match="--steps"):
        resolve_options(overrides=dict(data=["x"], out="y", cooldown_steps=5))


def test_validation_writes_best(image_folder, tmp_path):
    trainer = Trainer(options(image_folder, tmp_path / "run", max_steps=3, val=str(image_folder),
                                             val_crop=16, val_samples=2), log=lambda m: None)
    summary = trainer.run()
    assert summary["val"]["total"] > 0
    assert (tmp_path / "run" / "best.pt").exists()


def test_unreadable_file_is_skipped(image_folder, tmp_path):
    (image_folder / "broken.png").write_bytes(b"not a png")
    skipped = []
    trainer = Trainer(options(image_folder, tmp_path / "run", max_steps=1),
                      on_skip=lambda p, r: skipped.append(p.name), log=lambda m: None)
    assert skipped == ["broken.png"]
    trainer.run()


def test_missing_and_empty_folders(tmp_path):
    with pytest.raises(DatasetError, match="not found"):
        Trainer(options(tmp_path / "nope", tmp_path / "run"), log=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no image files"):
        Trainer(options(tmp_path / "empty", tmp_path / "run"), log=lambda m: None)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.png").write_bytes(b"junk")
    with pytest.raises(DatasetError, match="no readable images"):
        Trainer(options(tmp_path / "junk", tmp_path / "run"), on_skip=lambda p, r: None,
                log=lambda m: None)


def test_grayscale_and_rgba_training_images_become_rgb(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    Image.new("L", (20, 20), 90).save(folder / "gray.png")
    Image.new("RGBA", (20, 20), (1, 2, 3, 4)).save(folder / "rgba.png")
    trainer = Trainer(options(folder, tmp_path / "run", max_steps=2), log=lambda m: None)
    assert trainer.sampler.sample(2).shape == (2, 3, 16, 16)
    trainer.run()


def test_distributed_training_on_cpu(image_folder, tmp_path):
    """Two gloo processes through torchrun: DistributedDataParallel wiring works."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533",
           str(REPO / "bin" / "diffcodec"), "train", "--data", str(image_folder), "--out", str(out),
           "--steps", "3", "--batch-size", "2", "--crop", "16", "--channels", "8,16", "--patch", "1", "--quiet"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (out / "model.pt").exists()
    assert "2 process(es)" in result.stderr


def test_config_file_flags_and_stored_options(image_folder, tmp_path):
    """train reads a TOML config, flags override it, the run stores what it resolved and
    --resume needs nothing but --out."""
    from click.testing import CliRunner

    from diffcodec.cli import main

    out = tmp_path / "run"
    config = tmp_path / "train.toml"
    config.write_text(f'data = ["{image_folder}"]\nbatch_size = 2\ncrop = 16\nmax_steps = 2\nlr = 1e-3\n'
                      f'progress = false\n[model]\nlevel_channels = [8, 16]\npatch_size = 1\n')
    result = CliRunner().invoke(main, ["train", "--config", str(config), "--out", str(out), "--lr", "2e-3"])
    assert result.exit_code == 0, result.output
    stored = json.loads((out / "options.json").read_text())
    assert stored["lr"] == 2e-3 and stored["crop"] == 16 and stored["model"]["level_channels"] == [8, 16]
    result = CliRunner().invoke(main, ["train", "--out", str(out), "--resume", "--steps", "4", "--quiet"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output.strip().splitlines()[-1])["step"] == 4
    assert json.loads((out / "options.json").read_text())["crop"] == 16
    bad = tmp_path / "bad.json"
    bad.write_text('{"batch": 3}')
    result = CliRunner().invoke(main, ["train", "--config", str(bad), "--out", str(out)])
    assert result.exit_code == 1 and "unknown options ['batch']" in result.output


def test_chain_objective_makes_a_lossless_model(image_folder, tmp_path, trained_tiny_model):
    """--objective chain from a model with progressive heads: a chain scale head (started as
    the progressive one), the grid it trained on in the metadata, the schedule untouched, and
    a model the lossless coder round-trips with."""
    import numpy as np
    import torch

    from diffcodec.codec import Codec
    from diffcodec.model.checkpoint import load_model, save_model
    from diffcodec.train.evaluation import chain_validation

    from conftest import synthetic_image

    init = tmp_path / "init.pt"
    save_model(trained_tiny_model, init, {"time_grids": {"denominator": 4, "grids": {"2": [4, 1, 0]}}})
    trainer = Trainer(options(image_folder, tmp_path / "run", max_steps=30, objective="chain", chain_steps=2,
                              init=str(init), lr=1e-3), log=lambda m: None)
    times = torch.tensor([0.0, 0.25, 1.0])
    images = [read_image(path)[:32, :32] for path in sorted(image_folder.iterdir())]
    before = chain_validation(trainer.model, images, times)["total"]
    trainer.run()
    model = load_model(tmp_path / "run" / "model.pt")
    assert model.config.chain_scale_head and model.metadata["chain_training"] == {"steps": 2, "times": [0.0, 0.25, 1.0]}
    assert chain_validation(trainer.model, images, times)["total"] < before
    for name, tensor in trained_tiny_model.schedule.state_dict().items():
        assert torch.equal(model.schedule.state_dict()[name], tensor)
    codec = Codec(str(tmp_path / "run" / "model.pt"))
    image = synthetic_image(20, 28, "shapes", seed=2)
    assert np.array_equal(codec.decode(codec.encode(image, steps=3, mode="lossless", stored_fallback=False)), image)


def test_chain_objective_can_keep_the_continuous_bound(image_folder, tmp_path, trained_tiny_model):
    """--elbo-weight w adds w times the continuous NELBO to the chain loss (the same draws),
    and validation reports both parts."""
    import torch

    from diffcodec.model.checkpoint import save_model
    from diffcodec.train.losses import Objective, chain_loss

    init = tmp_path / "init.pt"
    save_model(trained_tiny_model, init, {"time_grids": {"denominator": 4, "grids": {"2": [4, 1, 0]}}})
    trainer = Trainer(options(image_folder, tmp_path / "run", max_steps=2, objective="chain", chain_steps=2,
                              init=str(init), elbo_weight=0.5, val=str(image_folder), val_crop=16),
                      log=lambda m: None)
    model, times = trainer.model, trainer.chain_times
    x = torch.randint(0, 256, (2, 3, 16, 16)).float()
    generator = torch.Generator().manual_seed(5)
    with torch.no_grad():
        expected = chain_loss(model, x, times, generator=generator) + 2.0 * model.nelbo(x, generator=generator).total
        got, _ = Objective(model, "chain", chain_times=times, elbo_weight=2.0)(x, torch.Generator().manual_seed(5))
    assert torch.allclose(got, expected)
    val = trainer.run()["val"]
    assert val["total"] == pytest.approx(val["chain"] + 0.5 * val["nelbo"])


def test_chain_objective_needs_a_chain_head(tiny_model):
    from diffcodec.train.losses import Objective

    with pytest.raises(ValueError, match="chain scale head"):
        Objective(tiny_model, "chain", chain_times=None)


def test_chain_step_cost_is_least_at_the_true_error():
    """The chain head's loss is minimised by the error's own scale, whatever the step size."""
    import torch

    from diffcodec.train.losses import chain_step_nats

    error = torch.full((1,), 0.05, dtype=torch.float64)
    log_scales = torch.linspace(-6, 0, 601, dtype=torch.float64)
    for gap in (10.0, 1e3, 1e6):
        cost = chain_step_nats(error, torch.tensor(gap, dtype=torch.float64), log_scales)
        assert abs(float(log_scales[cost.argmin()]) - float(torch.log(error))) < 0.02


def test_training_device_gives_cuda_an_index(monkeypatch):
    # torch.cuda.set_device rejects a bare "cuda" (seen on the first GPU run): the trainer
    # names the current GPU, or each torchrun process's own
    import torch

    from diffcodec.train.trainer import training_device

    chosen = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "set_device", lambda device: chosen.append(device))
    assert training_device("cuda") == torch.device("cuda", 0)
    assert training_device("cuda:1") == torch.device("cuda", 1)
    assert training_device("cuda", world=2, local_rank=1) == torch.device("cuda", 1)
    assert all(d.index is not None for d in chosen) and len(chosen) == 3
    assert training_device("cpu") == torch.device("cpu")


def test_extra_data_reads_debian_licences_and_downscales(tmp_path):
    """bin/extra-training-data: a machine-readable copyright file's multi-line Files and
    Copyright fields give each photograph its holders and licence; images shrink to a
    shorter side of 512 and smaller ones are left alone."""
    import importlib.machinery
    import importlib.util
    from pathlib import Path

    import numpy as np
    from PIL import Image

    path = Path(__file__).resolve().parents[1] / "bin" / "extra-training-data"
    loader = importlib.machinery.SourceFileLoader("extra_training_data", str(path))
    tool = importlib.util.module_from_spec(importlib.util.spec_from_loader(loader.name, loader))
    loader.exec_module(tool)
    doc = tmp_path / "usr/share/doc/pkg"
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\n"
        "Files: nature/A.jpg\n       nature/B.jpg\nCopyright: 2008, Someone <a@b.c>\u00b4\n"
        "           2009, Another\nLicense: GPL-2+\nComment: see AUTHORS\n\n"
        "Files: 16.04/C.jpg\nLicense: CC-BY-4.0\nCopyright: Third, 2018\n\n"
        "Files: debian/*\nCopyright: Packager\nLicense: GPL-2+\n\n"
        "License: GPL-2+\n This package is free software\n")
    found = tool.debian_licences(tmp_path, "pkg")
    assert found["nature/B.jpg"] == ("2008, Someone <a@b.c>; 2009, Another", "GPL-2+")
    assert tool.licence_of(found, "16.04/C.jpg") == ("Third, 2018", "CC-BY-4.0")  # any field order
    assert tool.licence_of(found, "debian/x.jpg")[0] == "Packager"
    with pytest.raises(SystemExit):
        tool.licence_of(found, "elsewhere/C.jpg")
    assert tool.pixels_in_name(Path("2560x1600.jpg")) == 2560 * 1600 and tool.pixels_in_name(Path("screenshot.png")) == 0
    big, small = tmp_path / "big.png", tmp_path / "small.png"
    Image.fromarray(np.zeros((1024, 1600, 3), np.uint8)).save(big)
    Image.fromarray(np.zeros((300, 400, 3), np.uint8)).save(small)
    assert tool.downscaled(big).size == (800, 512) and tool.downscaled(small).size == (400, 300)


def test_quantization_aware_training_makes_a_portable_integer_model(image_folder, tmp_path, trained_tiny_model):
    """--weight-bits 8 from a float model: every convolution after the stem becomes
    quantization-aware, its input grid fixed from the first batches before the first step,
    and the saved model (resumable, grids kept) is one the codec round-trips with."""
    import numpy as np

    from diffcodec.codec import Codec
    from diffcodec.model.checkpoint import load_model, save_model
    from diffcodec.model.network import UNCALIBRATED, QuantizedConv2d

    from conftest import synthetic_image

    init = tmp_path / "init.pt"
    save_model(trained_tiny_model, init)
    run = tmp_path / "run"
    Trainer(options(image_folder, run, max_steps=10, objective="uq", init=str(init), weight_bits=8),
            log=lambda m: None).run()
    model = load_model(run / "model.pt")
    layers = [m for m in model.network.modules() if isinstance(m, QuantizedConv2d)]
    assert model.config.weight_bits == 8 and len(layers) > 10 and not isinstance(model.network.stem, QuantizedConv2d)
    exponents = [int(m.input_exponent) for m in layers]
    assert UNCALIBRATED not in exponents
    resumed = Trainer(options(image_folder, run, max_steps=12, objective="uq", weight_bits=8, resume=True),
                      log=lambda m: None)
    resumed.run()
    assert [int(m.input_exponent) for m in resumed.model.network.modules() if isinstance(m, QuantizedConv2d)] == exponents
    codec = Codec(str(run / "model.pt"))
    image = synthetic_image(20, 28, "shapes", seed=2)
    for mode, steps in (("progressive", 2), ("lossless", 3)):
        assert np.array_equal(codec.decode(codec.encode(image, steps=steps, mode=mode, stored_fallback=False)), image)
