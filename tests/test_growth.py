"""Growing a model in depth: extra blocks per level that start as the identity, so a grown
model computes what the model it grew from computed, float and exact, and trains on from it."""

import dataclasses
from pathlib import Path

import pytest
import torch

from diffcodec.errors import CheckpointError, DiffcodecError
from diffcodec.model import DiffusionModel, ModelConfig
from diffcodec.model.checkpoint import load_model, model_hash, save_model, weights_hash
from diffcodec.model.network import UNCALIBRATED, QuantizedConv2d, calibrate_inputs, extra_block_prefixes

from conftest import randomize_output, tiny_config


def grown(model: DiffusionModel, extra=(0, 1)) -> DiffusionModel:
    """``model`` with ``extra`` blocks per level, its weights loaded (the new blocks' are missing)."""
    bigger = DiffusionModel(dataclasses.replace(model.config, extra_blocks=extra))
    missing, unexpected = bigger.load_state_dict(model.state_dict(), strict=False)
    new = tuple("network." + prefix for prefix in extra_block_prefixes(model.config, bigger.config))
    assert not unexpected and missing and all(name.startswith(new) for name in missing)
    return bigger.eval()


def qat_model(seed: int = 3) -> DiffusionModel:
    """A tiny quantization-aware model with every input grid calibrated."""
    model = randomize_output(DiffusionModel(tiny_config(progressive_heads=True, chain_scale_head=True, patch_size=2,
                                                        weight_bits=8)), seed=seed)
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
    calibrate_inputs(model.network, lambda: model.network(z, torch.tensor([-2.0])))
    return model.eval()


def test_a_config_without_extra_blocks_keeps_its_dict_and_hash():
    """extra_blocks is stored only when used: every existing model's config, hash and file stay
    as they were (the hashes below are those of the code before the field existed)."""
    assert "extra_blocks" not in tiny_config().to_dict()
    assert tiny_config(extra_blocks=(0, 0)) == tiny_config()  # all zeros: no extra blocks, stored as ()
    assert "extra_blocks" not in tiny_config(extra_blocks=[0, 0]).to_dict()
    assert weights_hash(tiny_config(), {}) == "ffd18f9b1344fc3b9a9ad156f8700b44e10a54d91ca7dcece2740db027b296c5"
    qat = tiny_config(weight_bits=8, progressive_heads=True, chain_scale_head=True)
    assert weights_hash(qat, {}) == "7cf05a9491bf58f900e0a890689abfb9d986ac01ae261a7f30ff9f29f09b5c2f"
    stored = torch.load(Path(__file__).parents[1] / "diffcodec" / "weights" / "default.pt", map_location="cpu",
                        weights_only=True)
    assert ModelConfig.from_dict(stored["config"]).to_dict() == stored["config"]
    with_extra = tiny_config(extra_blocks=(1, 2))
    assert with_extra.to_dict()["extra_blocks"] == [1, 2] and ModelConfig.from_dict(with_extra.to_dict()) == with_extra
    assert weights_hash(with_extra, {}) != weights_hash(tiny_config(), {})


@pytest.mark.parametrize("extra", [(1,), (0, -1), (0, 1.0), (0, True), (0, 17)])
def test_extra_blocks_are_checked(extra):
    with pytest.raises(ValueError, match="extra_blocks"):
        tiny_config(extra_blocks=extra)
    with pytest.raises(CheckpointError, match="invalid"):
        ModelConfig.from_dict({**tiny_config().to_dict(), "extra_blocks": list(extra)})


def test_a_grown_model_saves_and_loads(tmp_path):
    model = grown(randomize_output(DiffusionModel(tiny_config())), (2, 1))
    assert [len(blocks) for blocks in model.network.down_blocks] == [3, 2]
    prefixes = extra_block_prefixes(tiny_config(), model.config)
    assert prefixes == ["down_blocks.0.1.", "down_blocks.0.2.", "down_blocks.1.1."]
    path = tmp_path / "grown.pt"
    save_model(model, path)
    loaded = load_model(path)
    assert loaded.config.extra_blocks == (2, 1) and loaded.model_hash == model_hash(model)


@pytest.mark.parametrize("weight_bits", [0, 8])
def test_a_grown_network_computes_what_it_grew_from(weight_bits):
    """The new blocks start as the identity (conv2 zero, skip the identity): the same float
    outputs, bit for bit, in every head."""
    model = qat_model() if weight_bits else randomize_output(DiffusionModel(tiny_config(progressive_heads=True)), 2)
    bigger = grown(model)
    for block in bigger.network.down_blocks[1][1:]:
        assert not block.conv2.weight.any() and not block.conv2.bias.any() and isinstance(block.skip, torch.nn.Identity)
    z = torch.randn(1, 3, 20, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before, after = model.network(z, torch.tensor([-1.0])), bigger.network(z, torch.tensor([-1.0]))
    assert len(before) == len(after) and all(torch.equal(a, b) for a, b in zip(before, after))


def test_the_exact_network_of_a_grown_model_is_the_same_bit_for_bit():
    """A quantization-aware model grown and its new layers calibrated: the exact network (what
    the coder runs) gives every output exactly as before."""
    from diffcodec.model.exact_network import ExactNetwork

    model = qat_model()
    bigger = grown(model)
    new = [m for m in bigger.network.down_blocks[1][1].modules() if isinstance(m, QuantizedConv2d)]
    with pytest.raises(CheckpointError, match="calibrated"):
        ExactNetwork(bigger.network)
    z = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    calibrate_inputs(bigger.network, lambda: bigger.network(z, torch.tensor([-2.0])))
    assert UNCALIBRATED not in [int(m.input_exponent) for m in new]
    x = torch.randn(1, 3, 19, 22, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    before, after = ExactNetwork(model.network)(x, -2.0), ExactNetwork(bigger.network)(x, -2.0)
    assert len(before) == len(after) == 4 and all(torch.equal(a, b) for a, b in zip(before, after))


def test_train_init_grows_an_old_checkpoint(image_folder, tmp_path, monkeypatch):
    """train --init OLD --extra-blocks: the old weights load (only the new blocks' are missing),
    the model starts computing what OLD did, its new layers' input grids are calibrated and the
    old ones kept; it trains, saves and resumes; any other mismatch is still an error."""
    from click.testing import CliRunner

    from diffcodec.cli import main
    from diffcodec.model.exact_network import ExactNetwork
    from diffcodec.train import Trainer, TrainOptions
    from diffcodec.train import trainer as trainer_module

    base = qat_model()
    init = tmp_path / "old.pt"
    save_model(base, init)
    common = dict(data=[str(image_folder)], batch_size=2, crop=16, progress=False, val_every_minutes=1e9,
                  checkpoint_every_minutes=1e9, objective="uq", train_trunk=True, init=str(init))
    trainer = Trainer(TrainOptions(out=str(tmp_path / "run"), max_steps=2, model={"extra_blocks": [0, 1]}, **common),
                      log=lambda m: None)
    model = trainer.model.eval()
    assert model.config.extra_blocks == (0, 1) and len(model.network.down_blocks[1]) == 2
    old = dict(base.network.named_modules())
    for name, module in model.network.named_modules():
        if isinstance(module, QuantizedConv2d):
            assert int(module.input_exponent) != UNCALIBRATED
            if name in old:
                assert int(module.input_exponent) == int(old[name].input_exponent), name
    x = torch.randn(1, 3, 16, 20, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    before, after = ExactNetwork(base.network)(x, 0.5), ExactNetwork(model.network)(x, 0.5)
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    model.train()
    trainer.run()
    assert load_model(tmp_path / "run" / "model.pt").config.extra_blocks == (0, 1)

    def cli(out, extra):
        args = ["train", "--data", image_folder, "--out", tmp_path / out, "--steps", "1", "--batch-size", "2", "--crop",
                "16", "--objective", "uq", "--train-trunk", "--init", init, "--extra-blocks", extra, "--quiet"]
        return CliRunner().invoke(main, [str(a) for a in args])

    result = cli("cli", "1,1")
    assert result.exit_code == 0, result.output
    assert load_model(tmp_path / "cli" / "model.pt").config.extra_blocks == (1, 1)
    resumed = CliRunner().invoke(main, ["train", "--out", str(tmp_path / "cli"), "--resume", "--steps", "2", "--quiet"])
    assert resumed.exit_code == 0, resumed.output

    result = cli("bad", "0,1,1")  # one count per level of the --init model
    assert result.exit_code == 1 and "invalid model options" in result.output and "Traceback" not in result.output
    with pytest.raises(CheckpointError, match="does not fit"):  # fewer blocks than the checkpoint has
        Trainer(TrainOptions(out=str(tmp_path / "shrink"), max_steps=1, model={"extra_blocks": [0, 0]},
                             **{**common, "init": str(tmp_path / "cli" / "model.pt")}), log=lambda m: None)
    with pytest.raises(DiffcodecError, match="frozen trunk"):  # new blocks that could never train
        Trainer(TrainOptions(out=str(tmp_path / "frozen"), max_steps=1, model={"extra_blocks": [0, 1]},
                             **{**common, "train_trunk": False}), log=lambda m: None)
    lacking = qat_model()  # a weight missing outside the new blocks: still refused
    weights = lacking.state_dict()
    lacking.state_dict = lambda: {k: v for k, v in weights.items() if k != "network.down_blocks.1.0.conv1.weight"}
    monkeypatch.setattr(trainer_module, "load_model", lambda path: lacking)
    with pytest.raises(CheckpointError, match="does not fit"):
        Trainer(TrainOptions(out=str(tmp_path / "lacking"), max_steps=1, model={"extra_blocks": [0, 1]}, **common),
                log=lambda m: None)
