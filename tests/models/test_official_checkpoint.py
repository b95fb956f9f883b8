"""Official checkpoint layout: export/load round trip, tolerated variants, refused checkpoints."""

import json
import os

import pytest
import torch
from safetensors.torch import save_file

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.official import export_official, load_official, load_official_with_report
from lightning_langcell.models import LangCellConfig, LangCellModel

OFFICIAL_PARTS = ("cell_bert.", "text_bert.", "cell_proj.", "text_proj.", "ctm_head.")


def _official_state(model: LangCellModel) -> dict[str, torch.Tensor]:
    return {k: v for k, v in model.state_dict().items() if k.startswith(OFFICIAL_PARTS)}


def _assert_same_weights(a: LangCellModel, b: LangCellModel) -> None:
    state_a, state_b = _official_state(a), _official_state(b)
    assert state_a.keys() == state_b.keys()
    for key in state_a:
        assert torch.equal(state_a[key], state_b[key]), key


def _cell_weights(folder) -> dict[str, torch.Tensor]:
    return torch.load(folder / "cell_bert" / "pytorch_model.bin", weights_only=True)


def test_export_refuses_mean_pooled_model(tmp_path):
    model = LangCellModel(LangCellConfig.preset("tiny", cell_pooling="mean"))
    with pytest.raises(CheckpointError, match="pools cells with 'mean'"):
        export_official(model, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_export_then_load_is_exact(tmp_path, randomise):
    config = LangCellConfig.preset("tiny", cell={"hidden_size": 32, "max_position_embeddings": 64},
                                   text={"vocab_size": 100, "hidden_size": 48}, cell_pooling="cls")
    model = LangCellModel(config)
    randomise(model)
    folder = export_official(model, tmp_path / "export")
    assert sorted(p.name for p in folder.iterdir()) == ["cell_bert", "cell_proj.bin", "ctm_head.bin",
                                                        "text_bert", "text_proj.bin"]
    reloaded = load_official(folder, attn_implementation="eager")
    _assert_same_weights(model, reloaded)
    assert reloaded.config.cell == model.config.cell and reloaded.config.text == model.config.text
    ids = torch.tensor([[25426, 5, 9, 0], [25426, 7, 8, 11]])
    mask = (ids > 0).long()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.encode_cells(ids, mask)[1], model.encode_cells(ids, mask)[1],
                                   atol=1e-6, rtol=1e-6)
    with pytest.raises(CheckpointError, match="exists"):
        export_official(model, folder)


def test_reexported_fixture_matches_the_release_files(test_data_dir, tmp_path):
    source = test_data_dir / "langcell-official-tiny"
    folder = export_official(load_official(source), tmp_path / "again")
    original = torch.load(source / "text_bert/pytorch_model.bin", weights_only=True)
    written = torch.load(folder / "text_bert/pytorch_model.bin", weights_only=True)
    assert set(original) - set(written) == {"pooler.dense.weight", "pooler.dense.bias"}
    for key in written:
        assert torch.equal(written[key], original[key]), key
    for name in ("cell_bert/pytorch_model.bin", "cell_proj.bin", "text_proj.bin", "ctm_head.bin"):
        original = torch.load(source / name, weights_only=True)
        written = torch.load(folder / name, weights_only=True)
        assert original.keys() == written.keys()
        assert all(torch.equal(original[k], written[k]) for k in original), name


def test_prefixed_sharded_safetensors_load_identically(official_copy, test_data_dir):
    reference = load_official(test_data_dir / "langcell-official-tiny")
    state = {f"bert.{k}": v for k, v in _cell_weights(official_copy).items()}
    state["bert.embeddings.position_ids"] = torch.arange(2048)[None]
    keys = sorted(state)
    shards = {"model-00001-of-00002.safetensors": keys[:20], "model-00002-of-00002.safetensors": keys[20:]}
    for name, shard_keys in shards.items():
        save_file({k: state[k].contiguous() for k in shard_keys}, official_copy / "cell_bert" / name)
    index = {"weight_map": {k: name for name, shard_keys in shards.items() for k in shard_keys}}
    (official_copy / "cell_bert" / "model.safetensors.index.json").write_text(json.dumps(index))
    (official_copy / "cell_bert" / "pytorch_model.bin").unlink()
    model, report = load_official_with_report(official_copy)
    _assert_same_weights(model, reference)
    assert any("position_ids" in note for note in report.notes)


def test_cell_vocabulary_without_cls_row_gets_the_mean_row(official_copy):
    state = _cell_weights(official_copy)
    table = state["embeddings.word_embeddings.weight"]
    state["embeddings.word_embeddings.weight"] = table[:25426].clone()
    torch.save(state, official_copy / "cell_bert" / "pytorch_model.bin")
    config = json.loads((official_copy / "cell_bert/config.json").read_text())
    config["vocab_size"] = 25426
    (official_copy / "cell_bert/config.json").write_text(json.dumps(config))
    model, report = load_official_with_report(official_copy)
    loaded = model.cell_bert.embeddings.word_embeddings.weight
    assert loaded.shape[0] == 25427 and model.config.cell.vocab_size == 25427
    assert torch.equal(loaded[:25426], table[:25426])
    torch.testing.assert_close(loaded[25426], table[:25426].mean(0))
    assert any("<cls>" in note for note in report.notes)


def test_text_vocabulary_without_added_tokens_is_padded(official_copy):
    path = official_copy / "text_bert" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    table = state["embeddings.word_embeddings.weight"]
    state["embeddings.word_embeddings.weight"] = table[:-2].clone()
    torch.save(state, path)
    model, report = load_official_with_report(official_copy)
    loaded = model.text_bert.embeddings.word_embeddings.weight
    assert loaded.shape == table.shape
    assert torch.equal(loaded[:-2], table[:-2])
    torch.testing.assert_close(loaded[-1], table[:-2].mean(0))
    assert any("[DEC]" in note for note in report.notes)


def test_missing_head_file_is_named(official_copy):
    (official_copy / "ctm_head.bin").unlink()
    with pytest.raises(CheckpointError, match=r"Missing .*ctm_head\.bin"):
        load_official(official_copy)


def test_missing_weights_and_config_are_named(official_copy, tmp_path):
    with pytest.raises(CheckpointError, match="No checkpoint folder"):
        load_official(tmp_path / "nowhere")
    (official_copy / "text_bert" / "config.json").unlink()
    with pytest.raises(CheckpointError, match=r"Missing .*text_bert/config\.json"):
        load_official(official_copy)


def test_shape_mismatch_is_refused(official_copy):
    config = json.loads((official_copy / "cell_bert/config.json").read_text())
    config["intermediate_size"] += 8
    (official_copy / "cell_bert/config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"cell_bert/pytorch_model\.bin: tensor 'encoder\.layer\.0\.intermediate"
                                              r"\.dense\.weight' has shape \(64, 32\) .* expects \(72, 32\)"):
        load_official(official_copy)


def test_missing_tensor_is_refused(official_copy):
    path = official_copy / "text_bert" / "pytorch_model.bin"
    state = torch.load(path, weights_only=True)
    del state["encoder.layer.1.crossattention.output.LayerNorm.bias"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="lacks the tensor 'encoder.layer.1.crossattention.output.LayerNorm.bias'"):
        load_official(official_copy)


class _RunsCode:
    """A pickle payload that would create a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.makedirs, (self.marker,))


def test_pickle_with_code_is_refused_unread(official_copy, tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"weight": torch.zeros(2, 96), "bias": _RunsCode(marker)}, official_copy / "ctm_head.bin")
    with pytest.raises(CheckpointError, match=r"ctm_head\.bin holds Python objects .* refused"):
        load_official(official_copy)
    assert not marker.exists()


def test_truncated_file_is_refused(official_copy):
    path = official_copy / "text_proj.bin"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"Cannot read .*text_proj\.bin"):
        load_official(official_copy)
