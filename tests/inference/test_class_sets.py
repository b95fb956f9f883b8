"""Ontology-wide zero-shot: class sets (all of CL, subtrees, presets), the class-text embedding
cache, and top-k over thousands of classes in bounded memory."""

import gzip
import json
from importlib import resources

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference import text_cache
from lightning_langcell.inference.class_sets import class_presets, class_set_ids, subtree_ids
from lightning_langcell.inference.classes import candidate_classes
from lightning_langcell.inference.text_cache import cached_class_texts
from lightning_langcell.inference.zero_shot import ZeroShotScorer, encode_class_texts, per_class_match_logits
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.zero_shot_scores import ctm_match_probability
from lightning_langcell.text import Ontology
from lightning_langcell.text.ontology import OntologyTerm


# ------------------------------------------------------------------------------ class sets
def test_subtree_holds_known_descendants_and_not_a_sibling():
    t_cells = subtree_ids("CL:0000084")  # T cell
    assert t_cells[0] == "CL:0000084"
    for descendant in ("CL:0000624", "CL:0000625", "CL:0000815", "CL:0000895"):  # CD4, CD8, Treg, naive CD4
        assert descendant in t_cells
    assert "CL:0000236" not in t_cells  # B cell: a sibling under lymphocyte
    assert "CL:0000542" not in t_cells  # lymphocyte: the parent
    blood = class_set_ids("CL:0000988+")  # hematopoietic cell
    assert {"CL:0000084", "CL:0000236", "CL:0000623", "CL:0001054"} <= set(blood)
    assert set(t_cells) < set(blood)
    assert "CL:0000127" not in blood  # astrocyte


def test_descendants_on_a_hand_made_hierarchy():
    terms = [OntologyTerm("CL:1", "root", "d"), OntologyTerm("CL:2", "a", "d", parents=("CL:1",)),
             OntologyTerm("CL:3", "b", None, parents=("CL:1",)), OntologyTerm("CL:4", "a1", "d", parents=("CL:2",)),
             OntologyTerm("CL:5", "ab", "d", parents=("CL:2", "CL:3"))]
    ontology = Ontology({"CL": terms})
    assert ontology.descendants("CL:1") == ["CL:2", "CL:3", "CL:4", "CL:5"]
    assert ontology.descendants("CL:3") == ["CL:5"]
    assert ontology.descendants("CL:4") == []
    assert subtree_ids("CL:1", ontology) == ["CL:1", "CL:2", "CL:4", "CL:5"]  # CL:3 has no definition


def test_all_ontology_is_every_bundled_cl_term_with_a_definition():
    source = resources.files("lightning_langcell.text") / "resources" / "ontology_CL.json.gz"
    payload = json.loads(gzip.decompress(source.read_bytes()))
    expected = sorted(term_id for term_id, text in zip(payload["id"], payload["definition"]) if text)
    classes = candidate_classes("CL:all")
    assert len(classes) == len(expected) == 3221
    assert sorted(classes.term_ids) == expected
    assert classes.names[classes.term_ids.index("CL:0000236")] == "B cell"  # named by label


def test_presets_hold_valid_ids_with_definitions():
    ontology = Ontology.bundled()
    presets = class_presets()
    assert set(presets) == {"blood", "lung", "pancreas", "brain"}
    for name, ids in presets.items():
        assert len(set(ids)) == len(ids) >= 10, name
        for term_id in ids:
            term = ontology.term(term_id)
            assert term is not None and term.id == term_id and term.definition, (name, term_id)
    blood = candidate_classes("preset:blood")
    assert blood.term_ids == list(presets["blood"]) and "B cell" in blood.names


def test_class_sets_in_lists_and_errors_name_the_valid_choices():
    mixed = candidate_classes(["preset:brain", "CL:0000540"])
    assert mixed.term_ids[:-1] == list(class_presets()["brain"]) and mixed.names[-1] == "CL:0000540"
    with pytest.raises(LangCellInputError, match=r"Unknown class preset 'liver'.*blood.*brain.*lung.*pancreas"):
        candidate_classes("preset:liver")
    with pytest.raises(LangCellInputError, match="CL:9999999"):
        candidate_classes("CL:9999999+")
    with pytest.raises(LangCellInputError, match="CL:all"):
        candidate_classes("B cell")  # a single plain string: the error lists the class sets


# ----------------------------------------------------------------------------------- cache
def _random_model(seed: int) -> LangCellModel:
    config = LangCellConfig.preset(
        "tiny", cell={"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48},
        text={"num_hidden_layers": 2, "vocab_size": 300, "hidden_size": 48, "intermediate_size": 64,
              "num_attention_heads": 4})
    model = LangCellModel(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            centre = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            parameter.copy_(centre + 0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def _texts(n_classes: int, seed: int, max_length: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, max_length + 1, (n_classes,), generator=generator)
    ids = torch.zeros(n_classes, max_length, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths.tolist()):
        ids[row, :length] = torch.randint(5, 300, (length,), generator=generator)
        ids[row, 0] = 2
        mask[row, :length] = 1
    return ids, mask


@pytest.fixture
def encoder_calls(monkeypatch):
    """Counts the class-text encodings the cache asks for."""
    calls = []

    def counting(model, input_ids, attention_mask, chunk_size=None):
        calls.append(input_ids.shape[0])
        return encode_class_texts(model, input_ids, attention_mask, chunk_size)

    monkeypatch.setattr(text_cache, "encode_class_texts", counting)
    return calls


def test_cache_serves_identical_embeddings_keyed_by_weights_and_texts(tmp_path, encoder_calls):
    model = _random_model(0)
    ids, mask = _texts(12, seed=1)
    first = cached_class_texts(model, ids, mask, tmp_path)
    assert encoder_calls == [12] and len(list(tmp_path.glob("*.safetensors"))) == 1
    torch.testing.assert_close(first.embedding, encode_class_texts(model, ids, mask).embedding, atol=0, rtol=0)
    again = cached_class_texts(model, ids, mask, tmp_path)
    assert encoder_calls == [12]  # served from disk
    assert torch.equal(again.embedding, first.embedding)

    changed = ids.clone()
    changed[3, 1] = (changed[3, 1] + 1) % 300  # one token of one text
    cached_class_texts(model, changed, mask, tmp_path)
    assert encoder_calls == [12, 12]
    with torch.no_grad():
        model.cell_bert.embeddings.word_embeddings.weight.add_(1.0)  # cell side: not part of the key
    cached_class_texts(model, ids, mask, tmp_path)
    assert encoder_calls == [12, 12]
    with torch.no_grad():
        model.text_proj.weight.mul_(1.5)  # text side: other embeddings
    other = cached_class_texts(model, ids, mask, tmp_path)
    assert encoder_calls == [12, 12, 12]
    assert not torch.allclose(other.embedding, first.embedding)
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_corrupted_or_foreign_entry_is_recomputed(tmp_path, encoder_calls):
    model = _random_model(0)
    ids, mask = _texts(7, seed=2)
    reference = cached_class_texts(model, ids, mask, tmp_path).embedding
    (entry,) = tmp_path.glob("*.safetensors")
    entry.write_bytes(b"\x00not a safetensors file")
    repaired = cached_class_texts(model, ids, mask, tmp_path).embedding
    assert encoder_calls == [7, 7] and torch.equal(repaired, reference)
    text_cache.save_entry(entry, "another key", torch.zeros(7, reference.shape[1]))  # a foreign entry
    assert torch.equal(cached_class_texts(model, ids, mask, tmp_path).embedding, reference)
    text_cache.save_entry(entry, entry.stem, torch.full((7, reference.shape[1]), float("nan")))
    assert torch.equal(cached_class_texts(model, ids, mask, tmp_path).embedding, reference)
    assert encoder_calls == [7, 7, 7, 7]
    assert torch.equal(cached_class_texts(model, ids, mask, tmp_path).embedding, reference)
    assert encoder_calls == [7, 7, 7, 7]  # the repaired entry is served


# ---------------------------------------------------------------------- thousands of classes
def test_top_k_over_thousands_of_classes_equals_exact_on_the_candidates(tmp_path, monkeypatch):
    model = _random_model(3)
    n_classes, k, chunk = 2000, 4, 256
    ids, mask = _texts(n_classes, seed=4)
    prefix_sizes = []
    original = type(model.text_bert).text_prefix

    def recording(self, input_ids, attention_mask):
        prefix_sizes.append(input_ids.shape[0])
        return original(self, input_ids, attention_mask)

    monkeypatch.setattr(type(model.text_bert), "text_prefix", recording)
    classes = cached_class_texts(model, ids, mask, tmp_path, chunk_size=chunk)
    whole = encode_class_texts(model, ids, mask)  # all 2,000 texts at once, for reference
    torch.testing.assert_close(classes.embedding, whole.embedding, atol=1e-5, rtol=1e-5)
    assert classes.prefix is None and max(prefix_sizes[:-1]) == chunk  # encoded 256 texts at a time
    prefix_sizes.clear()

    generator = torch.Generator().manual_seed(5)
    cell_ids = torch.randint(2, 25426, (3, 12), generator=generator)
    cell_ids[:, 0] = 25426
    cell_mask = torch.ones_like(cell_ids)
    scorer = ZeroShotScorer(model, classes, top_k=k, class_chunk_size=2)
    assert scorer.prefix is None  # no [C, L, H] prefix of every class is held
    out = scorer(cell_ids, cell_mask)
    assert prefix_sizes and max(prefix_sizes) <= 3 * k  # only the batch's distinct candidates
    assert out.candidates.shape == (3, k)

    with torch.no_grad():  # exact: the official per-class loop on each cell's candidates
        hidden, embedding = model.encode_cells(cell_ids, cell_mask)
        for cell in range(3):
            chosen = out.candidates[cell]
            logits = per_class_match_logits(model, ids[chosen], mask[chosen], hidden[cell:cell + 1],
                                            cell_mask[cell:cell + 1])
            torch.testing.assert_close(out.match_prob[cell, chosen], ctm_match_probability(logits)[0],
                                       atol=1e-5, rtol=1e-5)
        ctc = (embedding @ whole.embedding.T / 0.05).softmax(-1)
    torch.testing.assert_close(out.ctc_probs, ctc, atol=1e-5, rtol=1e-4)
    assert torch.equal(out.candidates, ctc.topk(k, dim=-1).indices.sort(-1).values)
    assert int(torch.isnan(out.match_prob).sum(1).min()) == n_classes - k  # the rest never matched
    torch.testing.assert_close(out.final_probs.sum(1), torch.ones(3))


def test_annotate_with_a_preset_uses_the_cache(pbmc_h5ad, tiny_checkpoint, tmp_path, monkeypatch):
    from lightning_langcell.inference import annotate

    calls = []
    original = text_cache.encode_class_texts
    monkeypatch.setattr(text_cache, "encode_class_texts", lambda *a, **kw: calls.append(1) or original(*a, **kw))
    first = annotate(str(pbmc_h5ad), str(tiny_checkpoint), classes="preset:blood", top_k=3, batch_size=16,
                     text_cache=tmp_path / "cache", progress=False)
    second = annotate(str(pbmc_h5ad), str(tiny_checkpoint), classes="preset:blood", top_k=3, batch_size=16,
                      text_cache=tmp_path / "cache", progress=False)
    assert len(calls) == 1  # the second run read the 20 embeddings from disk
    predictions = first.obs["langcell_prediction"].dropna()
    assert set(predictions) <= set(candidate_classes("preset:blood").names) and len(predictions) == 48
    assert first.obs["langcell_prediction"].equals(second.obs["langcell_prediction"])


def test_benchmark_ontology_table_fits_the_official_cost_linearly(tmp_path):
    from benchmarks.zero_shot_benchmark import main

    result = main(["--quick", "--ontology-only", "--ontology-scaling", "4,10,40", "--official-max-classes", "10",
                   "--text-sample", "20", "--genes", "30", "--threads", "1", "--ontology-k", "3"])["ontology_scaling"]
    rows = {row["classes"]: row for row in result["rows"]}
    assert [row["official_measured"] for row in result["rows"]] == [True, True, False]
    assert [row["stand_in_embeddings"] for row in result["rows"]] == [0, 0, 20]
    assert sorted(result["official_measured_s_per_cell"]) == [1, 4, 10]  # 1 class always timed for the fit
    fitted = result["official_fit_fixed_s"] + 40 * result["official_fit_s_per_class"]
    assert rows[40]["official_s_per_cell"] == pytest.approx(fitted)
    assert rows[40]["speedup"] == pytest.approx(fitted / rows[40]["ours_s_per_cell"])
    assert rows[4]["text_measured"] and not rows[40]["text_measured"]
    assert rows[40]["text_one_off_s"] > rows[10]["text_one_off_s"] > 0
