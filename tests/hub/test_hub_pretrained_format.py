"""Our checkpoint format: exact save/load, round trips with the official layout, consistency checks."""

import json

import numpy as np
import pytest
import torch

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.convert import convert_command
from lightning_langcell.hub.loading import load_gene_vocabulary_for, load_model, load_text_tokenizer_for
from lightning_langcell.hub.pretrained import (
    load_pretrained,
    save_pretrained,
    write_gene_vocabulary,
)
from lightning_langcell.models import LangCellModel
from lightning_langcell.text import load_text_tokenizer
from lightning_langcell.tokenization import GeneVocabulary

NOT_IN_OFFICIAL = ("mgm_head.", "temp")


def _state(model):
    return model.state_dict()


def test_save_then_load_is_exact(tiny_model, tmp_path, outputs_of, same_outputs):
    folder = tiny_model.save_pretrained(tmp_path / "ours", model_card="# tiny\n")
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "README.md", "config.json", "gene_vocabulary/gene_median_dictionary.json.gz",
        "gene_vocabulary/token_dictionary.json.gz", "model.safetensors",
        "text_tokenizer/tokenizer.json", "text_tokenizer/tokenizer_config.json",
    ]
    info = json.loads((folder / "config.json").read_text())
    assert info["format"] == "lightning_langcell" and info["format_version"] == 1
    assert info["model"] == tiny_model.config.to_dict()
    assert info["gene_vocabulary"]["checksum"] == GeneVocabulary.bundled().checksum
    assert info["text_tokenizer"]["size"] == len(load_text_tokenizer()) == tiny_model.config.text.vocab_size
    bundle = load_pretrained(folder)
    assert bundle.report.initialized == [] and bundle.report.unused == []
    assert bundle.gene_vocabulary == GeneVocabulary.bundled()
    assert bundle.text_tokenizer("b cell")["input_ids"] == load_text_tokenizer()("b cell")["input_ids"]
    reloaded = LangCellModel.from_pretrained(folder)
    assert not reloaded.training and reloaded.config.to_dict() == tiny_model.config.to_dict()
    original, loaded = _state(tiny_model), _state(reloaded)
    assert original.keys() == loaded.keys()
    assert all(torch.equal(original[k], loaded[k]) for k in original)
    same_outputs(outputs_of(tiny_model), outputs_of(reloaded))
    # The saved tokenizer folder is a plain HF tokenizer folder (usable as a data module's text_tokenizer).
    assert len(load_text_tokenizer(folder / "text_tokenizer")) == len(load_text_tokenizer())
    with pytest.raises(CheckpointError, match="exists"):
        tiny_model.save_pretrained(folder)


def test_save_is_atomic(tiny_model, tmp_path):
    class Broken:
        def __len__(self):
            return tiny_model.config.text.vocab_size

        def get_vocab(self):
            return {}

        def save_pretrained(self, path):
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_pretrained(tiny_model, tmp_path / "ours", text_tokenizer=Broken())
    assert list(tmp_path.iterdir()) == []  # neither the target nor a temporary folder is left


def test_official_to_ours_to_official_is_exact(official_dir, tmp_path, outputs_of, same_outputs):
    ours = convert_command(str(official_dir), str(tmp_path / "ours"), to="ours")
    back = convert_command(str(ours), str(tmp_path / "official"), to="official")
    for name in ("cell_bert/pytorch_model.bin", "text_bert/pytorch_model.bin", "cell_proj.bin", "text_proj.bin",
                 "ctm_head.bin"):
        original = torch.load(official_dir / name, weights_only=True)
        written = torch.load(back / name, weights_only=True)
        # The release's unused text pooler is not carried (our text encoder has none).
        assert set(original) - set(written) <= {"pooler.dense.weight", "pooler.dense.bias"}
        assert set(written) <= set(original), name
        assert all(torch.equal(original[k], written[k]) for k in written), name
    for part in ("cell_bert", "text_bert"):
        original = json.loads((official_dir / part / "config.json").read_text())
        written = json.loads((back / part / "config.json").read_text())
        for key in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            assert written[key] == original[key], (part, key)
    # The fixture's tokenizer travels along: official -> ours -> official keeps it.
    tokenizer = load_text_tokenizer_for(back)
    assert tokenizer.get_vocab() == load_text_tokenizer(official_dir / "tokenizer").get_vocab()
    first, middle, last = (load_model(p) for p in (official_dir, ours, back))
    reference = outputs_of(first)
    same_outputs(reference, outputs_of(middle))
    same_outputs(reference, outputs_of(last))
    expected = np.load(official_dir / "expected" / "cell_embedding.npy")
    np.testing.assert_allclose(reference["cell_embedding"].numpy(), expected[:3], atol=1e-5, rtol=1e-5)


def test_ours_to_official_to_ours_is_exact(tiny_model, tmp_path, outputs_of, same_outputs):
    ours = tiny_model.save_pretrained(tmp_path / "ours")
    official = convert_command(str(ours), str(tmp_path / "official"), to="official")
    again = convert_command(str(official), str(tmp_path / "again"), to="ours")
    info, info_again = (json.loads((p / "config.json").read_text()) for p in (ours, again))
    assert info_again["model"] == info["model"]
    assert info_again["gene_vocabulary"] == info["gene_vocabulary"]
    assert info_again["text_tokenizer"] == info["text_tokenizer"]
    reloaded = load_model(again)
    original, loaded = _state(tiny_model), _state(reloaded)
    shared = [k for k in original if not k.startswith(NOT_IN_OFFICIAL)]
    assert len(shared) > 90 and all(torch.equal(original[k], loaded[k]) for k in shared)
    same_outputs(outputs_of(tiny_model), outputs_of(reloaded))


def test_custom_gene_vocabulary_survives_round_trips(tiny_model, tmp_path):
    bundled = GeneVocabulary.bundled()
    medians = dict(bundled.gene_median)
    first_gene = next(iter(medians))
    medians[first_gene] *= 2  # same tokens, other normalisation: a different vocabulary
    custom = GeneVocabulary(bundled.token_to_id, medians)
    ours = tiny_model.save_pretrained(tmp_path / "ours", gene_vocabulary=custom)
    official = convert_command(str(ours), str(tmp_path / "official"), to="official")
    again = convert_command(str(official), str(tmp_path / "again"), to="ours")
    assert load_gene_vocabulary_for(again) == custom != bundled
    assert load_pretrained(again).gene_vocabulary.gene_median[first_gene] == medians[first_gene]


# -- parts that do not fit together ---------------------------------------------------------------
@pytest.fixture()
def saved(tiny_model, tmp_path):
    return tiny_model.save_pretrained(tmp_path / "ours")


def test_swapped_gene_vocabulary_is_refused(saved):
    bundled = GeneVocabulary.bundled()
    tokens = {t: i for t, i in bundled.token_to_id.items() if i < 25000}
    smaller = GeneVocabulary(tokens, {g: m for g, m in bundled.gene_median.items() if g in tokens})
    write_gene_vocabulary(smaller, saved / "gene_vocabulary")
    with pytest.raises(CheckpointError, match="gene vocabulary in .* differs from the one the checkpoint was saved"):
        load_model(saved)
    info = json.loads((saved / "config.json").read_text())
    info["gene_vocabulary"]["checksum"] = smaller.checksum  # consistent record, wrong size
    (saved / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError, match="gene vocabulary has 25001 tokens but the cell encoder 25427"):
        load_model(saved)


def test_swapped_text_tokenizer_is_refused(saved, official_dir):
    load_text_tokenizer(official_dir / "tokenizer").save_pretrained(str(saved / "text_tokenizer"))
    with pytest.raises(CheckpointError, match=r"text tokenizer in .* \(1573 tokens\) is not the one .* \(8000 tokens"):
        load_model(saved)


def test_tokenizer_or_vocabulary_that_does_not_fit_is_refused_at_save(tiny_model, official_dir, tmp_path):
    bigger = load_text_tokenizer()
    bigger.add_tokens(["zzznewtoken"])
    with pytest.raises(CheckpointError, match="8001 tokens but the text encoder only 8000 rows"):
        tiny_model.save_pretrained(tmp_path / "a", text_tokenizer=bigger)
    official = load_model(official_dir)  # 1,575 text rows: the bundled tokenizer (8,000) cannot be its default
    with pytest.raises(CheckpointError, match="8000 tokens but the text encoder only 1575 rows"):
        official.save_pretrained(tmp_path / "b")
    tokens = {t: i for t, i in GeneVocabulary.bundled().token_to_id.items() if i < 100}
    small = GeneVocabulary(tokens, {g: 1.0 for g in tokens if g.startswith("ENSG")})
    with pytest.raises(CheckpointError, match="gene vocabulary has 101 tokens but the cell encoder 25427"):
        tiny_model.save_pretrained(tmp_path / "c", gene_vocabulary=small)
    assert not any((tmp_path / name).exists() for name in "abc")


def test_missing_part_is_named(saved):
    (saved / "gene_vocabulary" / "token_dictionary.json.gz").unlink()
    with pytest.raises(CheckpointError, match=r"Missing .*gene_vocabulary/token_dictionary\.json\.gz"):
        load_model(saved)


def test_missing_tokenizer_and_weights_are_named(saved):
    (saved / "model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=r"Missing weight file .*model\.safetensors"):
        load_model(saved)
    for path in (saved / "text_tokenizer").iterdir():
        path.unlink()
    (saved / "text_tokenizer").rmdir()
    with pytest.raises(CheckpointError, match=r"Missing the text tokenizer folder .*text_tokenizer"):
        load_model(saved)


def test_corrupted_weights_are_refused(saved):
    path = saved / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte in a tensor: the header still parses
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match the sha256 recorded"):
        load_model(saved)
    info = json.loads((saved / "config.json").read_text())
    info["weights"]["sha256"] = None  # no record: the safetensors reader itself must refuse a truncated file
    (saved / "config.json").write_text(json.dumps(info))
    path.write_bytes(bytes(raw[: len(raw) // 3]))
    with pytest.raises(CheckpointError, match=r"Cannot read .*model\.safetensors"):
        load_model(saved)


def test_newer_format_and_broken_config_are_refused(saved):
    info = json.loads((saved / "config.json").read_text())
    (saved / "config.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(CheckpointError, match="format_version 99; this library reads <= 1"):
        load_model(saved)
    (saved / "config.json").write_text(json.dumps({**info, "model": {**info["model"], "embed_dimm": 3}}))
    with pytest.raises(CheckpointError, match="invalid model config"):
        load_model(saved)


def test_attention_override_keeps_outputs(saved, tiny_model, outputs_of):
    eager = load_model(saved, attn_implementation="eager")
    assert eager.cell_bert.config._attn_implementation == "eager"
    for key, value in outputs_of(eager).items():
        torch.testing.assert_close(value, outputs_of(tiny_model)[key], atol=1e-5, rtol=1e-5)
