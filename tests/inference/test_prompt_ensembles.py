"""Prompt ensembles: the templates' exact texts, the engine's per-class means (embeddings and match
probabilities) against a hand computation, top-k over grouped texts, the single-template path equal
to the official one, the API / CLI option and its errors."""

from __future__ import annotations

import warnings

import anndata
import numpy as np
import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference import annotate
from lightning_langcell.inference.classes import candidate_classes
from lightning_langcell.inference.prompts import PROMPT_TEMPLATES, class_prompts, prompt_templates
from lightning_langcell.inference.zero_shot import ClassTexts, TextGroups, ZeroShotScorer

B_DEFINITION = "A lymphocyte of B lineage that is capable of B cell mediated immunity."


def test_templates_write_the_expected_texts_for_b_cell_and_monocyte():
    classes = candidate_classes(["CL:0000236", "CL:0000576"])
    written = class_prompts(classes, "ensemble")
    b_cell = [text for text, owner in zip(written.texts, written.owner) if owner == 0]
    assert b_cell == [
        f"cell type: B cell. {B_DEFINITION}; ",                      # official
        f"cell type: B lymphocyte. {B_DEFINITION}; ",                # synonyms ("B-cell" is the label re-spelt:
        f"cell type: B-lymphocyte. {B_DEFINITION}; ",                # skipped)
        "cell type: B cell; ",                                       # label alone
        f"cell type: B cell, a kind of lymphocyte of B lineage. {B_DEFINITION}; ",  # parent CL:0000945
    ]
    monocyte = [text for text, owner in zip(written.texts, written.owner) if owner == 1]
    assert [text.split(". ")[0] for text in monocyte] == [
        "cell type: monocyte", "cell type: monocyte; ", "cell type: monocyte, a kind of mononuclear phagocyte",
        "cell type: monocyte, a kind of myeloid leukocyte", "cell type: monocyte, a kind of progenitor cell"]
    assert written.templates == PROMPT_TEMPLATES and not written.one_per_class
    # a template that writes nothing for a class (monocyte has no synonym) leaves it its official text
    synonyms = class_prompts(classes, ["synonyms"])
    assert synonyms.owner == [0, 0, 1] and synonyms.texts[2] == classes.texts[1]
    official = class_prompts(classes, "official")
    assert official.texts == classes.texts and official.one_per_class


def test_type2text_definitions_reach_every_template():
    classes = candidate_classes(["B cell"], type2text={"B cell": "My own definition."})
    assert class_prompts(classes, ["synonyms", "parent"]).texts == [
        "cell type: B lymphocyte. My own definition.; ", "cell type: B-lymphocyte. My own definition.; ",
        "cell type: B cell, a kind of lymphocyte of B lineage. My own definition.; "]


@pytest.mark.parametrize("prompts", ["bogus", [], ["official", "synonym"], 3, [None]])
def test_unknown_prompt_templates_are_one_clear_error(prompts):
    with pytest.raises(LangCellInputError, match="prompt") as error:
        prompt_templates(prompts)
    assert "official" in error.value.fix and "ensemble" in error.value.fix


def test_prompt_specs_resolve_to_templates():
    assert prompt_templates("official") == ("official",)
    assert prompt_templates("ensemble") == PROMPT_TEMPLATES
    assert prompt_templates("parent") == ("parent",)
    assert prompt_templates(["label", "official", "label"]) == ("label", "official")


# ----------------------------------------------------------------------------------- engine
def _subset(classes: ClassTexts, rows: list[int]) -> ClassTexts:
    return ClassTexts(classes.input_ids[rows], classes.attention_mask[rows], classes.embedding[rows])


def test_grouped_scores_equal_a_hand_computation(official):
    """4 texts, 2 classes (texts 0+2 and 1+3): class embedding = renormalised mean of the
    normalised text embeddings; class match = mean match probability; then the official blend."""
    model, inputs, _, classes = official
    cells = inputs["cell_input_ids"], inputs["cell_attention_mask"]
    per_text = ZeroShotScorer(model, classes)(*cells)  # every text its own class
    out = ZeroShotScorer(model, classes, groups=TextGroups(torch.tensor([0, 1, 0, 1]), 2))(*cells)

    text = torch.nn.functional.normalize(classes.embedding, dim=-1)
    class_embedding = torch.stack([(text[0] + text[2]) / 2, (text[1] + text[3]) / 2])
    class_embedding = class_embedding / class_embedding.norm(dim=-1, keepdim=True)
    ctc = (per_text.cell_embedding @ class_embedding.T / 0.05).softmax(-1)
    match = torch.stack([(per_text.match_prob[:, 0] + per_text.match_prob[:, 2]) / 2,
                         (per_text.match_prob[:, 1] + per_text.match_prob[:, 3]) / 2], dim=1)
    final = 0.1 * ctc + 0.9 * match.softmax(-1)
    torch.testing.assert_close(out.ctc_probs, ctc, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.match_prob, match, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.final_probs, final, atol=1e-6, rtol=1e-6)
    assert out.pred.tolist() == final.argmax(-1).tolist()
    assert out.final_probs.shape == (6, 2)


def test_a_class_whose_texts_are_copies_scores_as_its_single_text(official):
    model, inputs, _, classes = official
    cells = inputs["cell_input_ids"], inputs["cell_attention_mask"]
    single = ZeroShotScorer(model, classes)(*cells)
    doubled = ZeroShotScorer(model, _subset(classes, [0, 0, 1, 2, 2, 3]),
                             groups=TextGroups(torch.tensor([0, 0, 1, 2, 2, 3]), 4))(*cells)
    torch.testing.assert_close(doubled.final_probs, single.final_probs, atol=1e-6, rtol=1e-6)
    assert torch.equal(doubled.pred, single.pred)


def test_top_k_over_grouped_texts(official):
    """3 classes from 4 texts (class 0 has texts 0 and 3): top-k = C is the exact grouped result;
    top-2's candidate match probabilities are the exact ones of those classes."""
    model, inputs, _, classes = official
    cells = inputs["cell_input_ids"], inputs["cell_attention_mask"]
    groups = TextGroups(torch.tensor([0, 1, 2, 0]), 3)
    exact = ZeroShotScorer(model, classes, groups=groups)(*cells)
    every = ZeroShotScorer(model, classes, groups=groups, top_k=3)(*cells)
    torch.testing.assert_close(every.final_probs, exact.final_probs, atol=1e-6, rtol=1e-6)
    top2 = ZeroShotScorer(model, classes, groups=groups, top_k=2)(*cells)
    assert torch.equal(top2.candidates, exact.ctc_probs.topk(2, dim=-1).indices.sort(dim=-1).values)
    torch.testing.assert_close(top2.match_prob.gather(1, top2.candidates),
                               exact.match_prob.gather(1, top2.candidates), atol=1e-6, rtol=1e-6)
    assert torch.isnan(top2.match_prob).sum() == 6  # one class per cell not scored


def test_text_groups_refuse_a_class_without_text():
    with pytest.raises(LangCellInputError, match="at least one text"):
        TextGroups(torch.tensor([0, 0, 2]), 3)


# -------------------------------------------------------------------------------- API / CLI
def test_a_single_template_is_the_official_path_exactly(pbmc_h5ad, tiny_checkpoint):
    official = annotate(pbmc_h5ad, tiny_checkpoint, text_cache=False)
    listed = annotate(pbmc_h5ad, tiny_checkpoint, prompts=["official"], text_cache=False)
    np.testing.assert_array_equal(listed.obsm["langcell_probabilities"], official.obsm["langcell_probabilities"])
    assert official.uns["langcell"]["prompts"] == ["official"]
    assert official.uns["langcell"]["n_prompt_texts"] == len(official.uns["langcell_classes"])


def test_annotate_with_the_ensemble(pbmc_h5ad, tiny_checkpoint):
    official = annotate(pbmc_h5ad, tiny_checkpoint, text_cache=False)
    ensemble = annotate(pbmc_h5ad, tiny_checkpoint, prompts="ensemble", text_cache=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        classes = candidate_classes(None, anndata.read_h5ad(pbmc_h5ad).obs, "cell_type")
    info = ensemble.uns["langcell"]
    assert list(info["prompts"]) == list(PROMPT_TEMPLATES)
    assert info["n_prompt_texts"] == len(class_prompts(classes, "ensemble").texts) > len(classes)
    probabilities = ensemble.obsm["langcell_probabilities"]
    scored = ~np.isnan(probabilities).any(axis=1)
    np.testing.assert_allclose(probabilities[scored].sum(axis=1), 1.0, atol=1e-5)
    assert np.abs(probabilities[scored] - official.obsm["langcell_probabilities"][scored]).max() > 1e-4


def test_annotate_refuses_an_unknown_template_before_reading(tiny_checkpoint, tmp_path):
    with pytest.raises(LangCellInputError, match="Unknown prompt template"):
        annotate(tmp_path / "missing.h5ad", tiny_checkpoint, prompts=["official", "nickname"])


def _cli_args(repo_root, data, checkpoint, tmp_path, *extra):
    return ["predict", "--config", str(repo_root / "recipes" / "zero_shot.yaml"), "--data.data", str(data),
            "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "16",
            "--model.init_args.init_from", str(checkpoint), "--trainer.accelerator", "cpu",
            "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", *extra]


def test_cli_prompts_option_writes_the_ensemble_predictions(pbmc_h5ad, tiny_checkpoint, repo_root, tmp_path,
                                                             monkeypatch):
    from lightning_langcell.cli import main

    monkeypatch.setattr("sys.argv", ["lightning_langcell"])
    output = tmp_path / "annotated.h5ad"
    main(_cli_args(repo_root, pbmc_h5ad, tiny_checkpoint, tmp_path, "--model.init_args.prompts", "ensemble",
                   "--model.init_args.output", str(output)))
    written = anndata.read_h5ad(output)
    expected = annotate(pbmc_h5ad, tiny_checkpoint, prompts="ensemble", text_cache=False)
    np.testing.assert_allclose(written.obsm["langcell_probabilities"], expected.obsm["langcell_probabilities"],
                               atol=1e-6)
    assert (written.obs["langcell_prediction"].astype(str) == expected.obs["langcell_prediction"].astype(str)).all()
    assert list(written.uns["langcell"]["prompts"]) == list(PROMPT_TEMPLATES)


def test_cli_unknown_template_is_an_error_line_and_exit_2(pbmc_h5ad, tiny_checkpoint, repo_root, tmp_path,
                                                          monkeypatch, capsys):
    from lightning_langcell.cli import main

    monkeypatch.setattr("sys.argv", ["lightning_langcell"])
    monkeypatch.delenv("LANGCELL_DEBUG", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(_cli_args(repo_root, pbmc_h5ad, tiny_checkpoint, tmp_path, "--model.init_args.prompts", "nickname"))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "error: Unknown prompt template(s) ['nickname']." in err and "fix: " in err


def test_the_benchmark_combines_texts_as_the_engine_does(official):
    """benchmarks.prompt_ensembles scores each prompt set from one pass over all texts: its
    probabilities must be the engine's for those texts."""
    from benchmarks.prompt_ensembles import prompt_set_probabilities

    model, inputs, _, classes = official
    cells = inputs["cell_input_ids"], inputs["cell_attention_mask"]
    per_text = ZeroShotScorer(model, classes)(*cells)
    for owner in ([0, 1, 0, 1], [0, 1, 2, 3], [0, 1, 2, 0]):
        engine = ZeroShotScorer(model, classes, groups=TextGroups(torch.tensor(owner), max(owner) + 1))(*cells)
        mine = prompt_set_probabilities(per_text.cell_embedding, classes.embedding, per_text.match_prob, owner,
                                        max(owner) + 1)
        torch.testing.assert_close(mine, engine.final_probs, atol=1e-6, rtol=1e-6)
