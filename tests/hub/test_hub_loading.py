"""``load_model``: layout detection, Geneformer 30M folders, unsafe pickles, bad folders, the convert CLI."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertModel

from lightning_langcell.errors import CheckpointError
from lightning_langcell.cli import main
from lightning_langcell.hub.loading import (
    detect_layout,
    load_model,
    load_model_with_report,
    load_text_tokenizer_for,
)
from lightning_langcell.text import load_text_tokenizer


def test_layouts_are_detected(official_dir, geneformer_dir, tiny_bert_dir, tiny_model, tmp_path):
    ours = tiny_model.save_pretrained(tmp_path / "ours")
    (tmp_path / "run.ckpt").write_bytes(b"")
    assert [detect_layout(p) for p in (ours, official_dir, geneformer_dir, tiny_bert_dir, tmp_path / "run.ckpt")] == [
        "ours", "official", "geneformer", "hf_bert", "lightning"]


def test_wrong_folder_or_file_is_refused_with_the_layouts(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "cells.h5ad").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"not a checkpoint folder this library knows \(it holds \['cells.h5ad'\]\)"
                                              r".*Expected one of: our format"):
        load_model(tmp_path / "data")
    with pytest.raises(CheckpointError, match=r"cells\.h5ad is a file of a kind this library does not load alone"):
        load_model(tmp_path / "data" / "cells.h5ad")


def test_text_bert_is_not_a_langcell_model(tiny_bert_dir):
    with pytest.raises(CheckpointError, match="BERT without LangCell parts .* text_init= .* text_source="):
        load_model(tiny_bert_dir)
    assert len(load_text_tokenizer_for(tiny_bert_dir)) == 41


# -- Geneformer 30M ------------------------------------------------------------------------------
def _geneformer_state(folder: Path) -> dict[str, torch.Tensor]:
    return torch.load(folder / "pytorch_model.bin", weights_only=True)


def test_geneformer_cell_encoder_loads_with_cls_row_and_mlm_head(geneformer_dir):
    model, report = load_model_with_report(geneformer_dir)
    source = _geneformer_state(geneformer_dir)
    table = source["bert.embeddings.word_embeddings.weight"]
    loaded = model.cell_bert.embeddings.word_embeddings.weight
    assert loaded.shape == (25427, 32) and torch.equal(loaded[:25426], table)
    torch.testing.assert_close(loaded[25426], table.mean(0))
    assert torch.equal(model.mgm_head.transform.dense.weight, source["cls.predictions.transform.dense.weight"])
    assert torch.equal(model.mgm_head.bias[:25426], source["cls.predictions.bias"])
    assert any("<cls>" in note for note in report.notes)
    assert "text_bert.embeddings.word_embeddings.weight" in report.initialized and "cell_proj.weight" in report.initialized
    assert not any(key.startswith("mgm_head") for key in report.initialized) and report.unused == []
    assert model.config.text.vocab_size == len(load_text_tokenizer()) and model.config.text.encoder_width == 32
    # The cell encoder computes what HF's BertModel computes with Geneformer's weights.
    reference = BertModel.from_pretrained(geneformer_dir, add_pooling_layer=False).eval()
    ids = torch.tensor([[25425, 7, 300, 9, 0, 0], [2, 3, 4, 5, 6, 25000]])
    mask = (ids > 0).long()
    with torch.no_grad():
        torch.testing.assert_close(model.encode_cells(ids, mask)[0], reference(ids, attention_mask=mask).last_hidden_state,
                                   atol=1e-5, rtol=1e-5)


def test_geneformer_with_text_side_from_a_bert_folder(geneformer_dir, tiny_bert_dir):
    model, report = load_model_with_report(geneformer_dir, text_source=tiny_bert_dir)
    bert = load_file(tiny_bert_dir / "model.safetensors")
    assert torch.equal(model.text_bert.embeddings.word_embeddings.weight, bert["embeddings.word_embeddings.weight"])
    assert model.config.text.hidden_size == 48 and model.config.text.encoder_width == 32
    assert "text_bert.encoder.layer.0.crossattention.self.key.weight" in report.initialized
    assert "text_proj.weight" in report.initialized


def test_geneformer_with_text_side_from_a_langcell_checkpoint(geneformer_dir, official_dir):
    model = load_model(geneformer_dir, text_source=official_dir)
    donor = load_model(official_dir)
    for name in ("text_bert", "text_proj", "ctm_head"):
        mine, theirs = getattr(model, name).state_dict(), getattr(donor, name).state_dict()
        assert all(torch.equal(mine[k], theirs[k]) for k in theirs), name
    assert model.config.embed_dim == donor.config.embed_dim


def test_geneformer_text_source_of_another_width_is_refused(geneformer_dir, tmp_path, make_tiny):
    other = make_tiny(cell={"hidden_size": 64}).save_pretrained(tmp_path / "wide")
    with pytest.raises(CheckpointError, match="cross-attends to cells of width 64, but this Geneformer's hidden size is 32"):
        load_model(geneformer_dir, text_source=other)


def test_geneformer_v2_dictionary_is_refused(geneformer_dir, tmp_path):
    folder = tmp_path / "v2"
    shutil.copytree(geneformer_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "vocab_size": 20275}))
    with pytest.raises(CheckpointError, match="Geneformer V2 .* 20,275-token dictionary"):
        load_model(folder)


def test_text_arguments_only_apply_to_geneformer(official_dir, tiny_bert_dir):
    with pytest.raises(CheckpointError, match="apply only to checkpoints in format 'geneformer'"):
        load_model(official_dir, text_source=tiny_bert_dir)


# -- unsafe pickles --------------------------------------------------------------------------------
def _tensor_after_side_effect(marker: str, rows: int, cols: int) -> torch.Tensor:
    Path(marker).mkdir()
    return torch.zeros(rows, cols)


class _CodeCarryingTensor:
    """Unpickles (only with weights_only=False) by calling a function with a side effect."""

    def __init__(self, marker, rows, cols):
        self.args = (str(marker), rows, cols)

    def __reduce__(self):
        return (_tensor_after_side_effect, self.args)


def test_pickle_with_code_is_refused_unless_trusted(official_copy, tmp_path):
    marker = tmp_path / "code_ran"
    torch.save({"weight": _CodeCarryingTensor(marker, 2, 96), "bias": torch.ones(2)}, official_copy / "ctm_head.bin")
    with pytest.raises(CheckpointError, match=r"ctm_head\.bin holds Python objects .* refused .* trust_pickle=True"):
        load_model(official_copy)
    assert not marker.exists()
    with pytest.warns(UserWarning, match=r"UNSAFE: unpickling .*ctm_head\.bin with weights_only=False"):
        model = load_model(official_copy, trust_pickle=True)
    assert marker.is_dir()
    assert torch.equal(model.ctm_head.weight, torch.zeros(2, 96)) and torch.equal(model.ctm_head.bias, torch.ones(2))
    marker.rmdir()
    with pytest.raises(CheckpointError, match="refused"):
        load_model(official_copy)  # trust does not leak into later loads
    assert not marker.exists()


# -- official layout: parts and tokenizer ---------------------------------------------------------
def test_official_layout_missing_part_and_tokenizer(official_copy):
    shutil.rmtree(official_copy / "tokenizer")
    with pytest.raises(CheckpointError, match=r"no tokenizer/ folder; tried the bundled one\): the text tokenizer has "
                                              r"8000 tokens but the text encoder only 1575 rows"):
        load_text_tokenizer_for(official_copy)
    (official_copy / "text_proj.bin").unlink()
    with pytest.raises(CheckpointError, match=r"Missing .*text_proj\.bin"):
        load_model(official_copy)


def test_official_corrupted_safetensors_is_refused(official_copy):
    state = torch.load(official_copy / "cell_bert" / "pytorch_model.bin", weights_only=True)
    save_file(state, official_copy / "cell_bert" / "model.safetensors")
    raw = (official_copy / "cell_bert" / "model.safetensors").read_bytes()
    (official_copy / "cell_bert" / "model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"Cannot read .*cell_bert/model\.safetensors.*Re-download or re-export"):
        load_model(official_copy)


# -- the convert command ---------------------------------------------------------------------------
def test_convert_cli_round_trip(official_dir, tmp_path, outputs_of, same_outputs, capsys):
    result = main(["convert", str(official_dir), str(tmp_path / "ours")])
    assert result == {"written": str(tmp_path / "ours"), "format": "ours"}
    main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "official"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as refused:
        main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "official"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.splitlines()[:2] == [f"error: {tmp_path / 'back'} exists.",
                                                         "fix: Choose a new folder or pass --overwrite."]
    main(["convert", str(tmp_path / "ours"), str(tmp_path / "back"), "--to", "official", "--overwrite"])
    same_outputs(outputs_of(load_model(official_dir)), outputs_of(load_model(tmp_path / "back")))
    with pytest.raises(SystemExit) as unknown:
        main(["convert", str(official_dir), str(tmp_path / "x"), "--to", "onnx"])
    assert unknown.value.code == 2 and "onnx" in capsys.readouterr().err


def test_convert_geneformer_with_a_text_source(geneformer_dir, official_dir, tmp_path):
    main(["convert", str(geneformer_dir), str(tmp_path / "ours"), "--text-source", str(official_dir),
          "--text-tokenizer", str(official_dir / "tokenizer")])
    model = load_model(tmp_path / "ours")
    assert model.config.text.vocab_size == 1575 and model.config.cell.vocab_size == 25427
    assert len(load_text_tokenizer_for(tmp_path / "ours")) == 1573
