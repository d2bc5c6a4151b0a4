"""Checkpoints: self-describing, hashed, verified on load."""

import pytest
import torch

from diffcodec.model.checkpoint import load_model, model_hash, save_model
from diffcodec.errors import CheckpointError


def test_save_load_identical_outputs(tiny_model, tmp_path):
    path = tmp_path / "m.pt"
    digest = save_model(tiny_model, path, {"note": "test"})
    loaded = load_model(path)
    assert loaded.config == tiny_model.config
    assert loaded.model_hash == digest == model_hash(tiny_model)
    assert loaded.metadata == {"note": "test"}
    x = torch.randint(0, 256, (2, 3, 7, 13))
    with torch.no_grad():
        a = tiny_model.nelbo(x, generator=torch.Generator().manual_seed(4))
        b = loaded.nelbo(x, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a.total, b.total)


def test_hash_changes_with_weights(tiny_model):
    before = model_hash(tiny_model)
    with torch.no_grad():
        tiny_model.network.stem.bias[0] += 1e-3
    assert model_hash(tiny_model) != before


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable model checkpoint"),
        (b"this is not a checkpoint at all", "not a readable model checkpoint"),
    ],
)
def test_garbage_file_is_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_model(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_model(tmp_path / "nope.pt")


def test_foreign_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, path)
    with pytest.raises(CheckpointError, match="not a diffcodec model checkpoint"):
        load_model(path)


def test_damaged_weights_detected(tiny_model, tmp_path):
    path = tmp_path / "m.pt"
    save_model(tiny_model, path)
    data = torch.load(path, weights_only=True)
    data["state_dict"]["network.stem.weight"][0, 0, 0, 0] += 1.0
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="damaged"):
        load_model(path)


def test_truncated_file(tiny_model, tmp_path):
    path = tmp_path / "m.pt"
    save_model(tiny_model, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_model(path)


def test_weights_do_not_fit_config(tiny_model, tmp_path):
    path = tmp_path / "m.pt"
    save_model(tiny_model, path)
    data = torch.load(path, weights_only=True)
    data["config"]["level_channels"] = [8, 32]
    from diffcodec.model.checkpoint import weights_hash
    from diffcodec.model import ModelConfig
    data["hash"] = weights_hash(ModelConfig.from_dict(data["config"]), data["state_dict"])
    torch.save(data, path)
    with pytest.raises(CheckpointError, match="do not fit"):
        load_model(path)


def test_update_metadata_keeps_the_hash(tiny_model, tmp_path):
    from diffcodec.model.checkpoint import update_metadata

    path = tmp_path / "m.pt"
    digest = save_model(tiny_model, path, {"step": 3})
    update_metadata(path, {"kodak_bpd": 3.1})
    loaded = load_model(path)
    assert loaded.model_hash == digest
    assert loaded.metadata == {"step": 3, "kodak_bpd": 3.1}


def test_model_registry(tiny_model, tmp_path, monkeypatch):
    from diffcodec.model import registry as models

    path = tmp_path / "named.pt"
    save_model(tiny_model, path, {"data": "generated"})
    monkeypatch.setitem(models.REGISTRY, "tiny", path)
    assert models.resolve_model("tiny") == path
    assert models.load_named_model("tiny").model_hash == model_hash(tiny_model)
    rows = {row["name"]: row for row in models.list_models()}
    assert rows["tiny"]["metadata"] == {"data": "generated"} and rows["tiny"]["parameters"] > 0
    with pytest.raises(CheckpointError, match="unknown model"):
        models.resolve_model("no-such-model")


def test_later_config_fields_leave_old_hashes_alone(tiny_model):
    """A field added to ModelConfig is stored only when used: models without it keep their
    hash, so their files still decode."""
    import dataclasses

    from diffcodec.model import DiffusionModel

    assert "chain_scale_head" not in tiny_model.config.to_dict()
    chained = DiffusionModel(dataclasses.replace(tiny_model.config, progressive_heads=True, chain_scale_head=True))
    assert chained.config.to_dict()["chain_scale_head"] is True
    with pytest.raises(ValueError, match="progressive_heads"):
        dataclasses.replace(tiny_model.config, chain_scale_head=True)
