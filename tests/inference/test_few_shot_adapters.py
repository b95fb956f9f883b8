"""Few-shot adapters: prototype blend with leave-one-out weight, linear probe pulled toward the class texts, API."""

import anndata
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.adapters import (
    fit_adapter,
    fit_probe_adapter,
    fit_prototype_adapter,
    standardize_rows,
)
from lightning_langcell.inference.annotate import annotate
from lightning_langcell.inference.few_shot_annotate import few_shot_annotate

N_CLASSES, DIM = 4, 16
CENTRES = torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(123))
WRONG_TEXTS = CENTRES.roll(1, dims=0) + 0.5 * torch.randn(N_CLASSES, DIM, generator=torch.Generator().manual_seed(7))


def clustered_cells(per_class: int, seed: int, spread: float = 0.3):
    """Cells around 4 fixed random class centres (embeddings [n, DIM], labels [n])."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(N_CLASSES).repeat_interleave(per_class)
    return CENTRES[labels] + spread * torch.randn(len(labels), DIM, generator=generator), labels


def accuracy(predicted, labels) -> float:
    return float((predicted == labels).double().mean())


def test_informative_prototypes_get_weight_and_beat_text_only():
    texts = WRONG_TEXTS  # each text sits near another class's cells
    cells, labels = clustered_cells(5, seed=0)
    adapter = fit_prototype_adapter(cells, labels, texts)
    test_cells, test_labels = clustered_cells(50, seed=1)
    text_only = accuracy(adapter.scores(test_cells, weight=0.0).argmax(-1), test_labels)
    assert adapter.weight > 0
    assert adapter.loo_accuracy[adapter.weight] == 1.0 > adapter.loo_accuracy[0.0]
    assert accuracy(adapter.predict(test_cells), test_labels) == 1.0
    assert text_only < 0.3


def test_noise_prototypes_keep_zero_shot():
    cells = torch.randn(20, DIM, generator=torch.Generator().manual_seed(3))  # embeddings say nothing
    labels = torch.arange(N_CLASSES).repeat_interleave(5)
    texts = torch.randn(N_CLASSES, DIM)
    zero_shot = F.one_hot(labels, N_CLASSES).double() * 2.0 + 0.1 * torch.rand(20, N_CLASSES)  # right on every cell
    adapter = fit_prototype_adapter(cells, labels, texts, text_scores=zero_shot)
    assert adapter.weight == 0.0 and adapter.loo_accuracy[0.0] == 1.0
    new_cells = torch.randn(30, DIM, generator=torch.Generator().manual_seed(4))
    new_scores = torch.randn(30, N_CLASSES, generator=torch.Generator().manual_seed(5))
    assert torch.equal(adapter.predict(new_cells, new_scores), new_scores.argmax(-1))
    torch.testing.assert_close(adapter.scores(new_cells, new_scores), standardize_rows(new_scores.double()))


def test_leave_one_out_by_hand():
    """Two classes, 2 cells each: LOO at w = 1 scores each cell against the other cell of its class."""
    cells = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [0.1, 1.0]])
    labels = torch.tensor([0, 0, 1, 1])  # cell 0's classmate is closest to class 1's cells: LOO fails on all
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    adapter = fit_prototype_adapter(cells, labels, texts, grid=(0.0, 1.0))
    # w = 0: cos to the texts -> cells 0, 3 right (cell 1 -> class 1, cell 2 -> class 0)
    assert adapter.loo_accuracy == {0.0: 0.5, 1.0: 0.0}
    assert adapter.weight == 0.0


def test_one_cell_per_class_at_weight_one_predicts_itself():
    cells, labels = clustered_cells(1, seed=2, spread=1.0)
    adapter = fit_prototype_adapter(cells, labels, torch.randn(N_CLASSES, DIM))
    assert torch.equal(adapter.scores(cells, weight=1.0).argmax(-1), labels)
    assert set(adapter.loo_accuracy) == {round(0.1 * i, 1) for i in range(11)}


def test_probe_prior_is_the_text_classifier_and_labels_move_it():
    cells, labels = clustered_cells(5, seed=0)
    cells = F.normalize(cells, dim=-1)  # one norm: the prior is the CTC classifier up to a constant per class
    test_cells, test_labels = clustered_cells(50, seed=1)
    test_cells = F.normalize(test_cells, dim=-1)
    pinned = fit_probe_adapter(cells, labels, WRONG_TEXTS, prior_scale=1.0, ridge=1e9)
    ctc = test_cells.double() @ F.normalize(WRONG_TEXTS.double(), dim=-1).T / 0.05
    offset = pinned.scores(test_cells) - ctc
    assert (offset - offset[0]).abs().max() < 1e-3
    torch.testing.assert_close(pinned.weight, pinned.prior_weight, rtol=1e-6, atol=1e-6)
    assert accuracy(pinned.predict(test_cells), test_labels) < 0.3  # each text sits near another class
    trained = fit_probe_adapter(cells, labels, WRONG_TEXTS)
    assert accuracy(trained.predict(test_cells), test_labels) >= 0.95
    assert (trained.weight - trained.prior_weight).abs().max() > 0.1


def test_probe_is_the_minimum_of_its_objective():
    cells, labels = clustered_cells(3, seed=4, spread=1.5)
    reference, _ = clustered_cells(20, seed=5, spread=1.5)
    fitted = fit_probe_adapter(cells, labels, WRONG_TEXTS, reference=reference, prior_scale=0.5, ridge=1.0)
    torch.testing.assert_close(fitted.mean, reference.double().mean(0))
    torch.testing.assert_close(fitted.scale, reference.double().std(0))
    weight = fitted.weight.clone().requires_grad_(True)
    bias = fitted.bias.clone().requires_grad_(True)
    features = (cells.double() - fitted.mean) / fitted.scale
    loss = (F.cross_entropy(features @ weight.T + bias, labels, reduction="sum")
            + 0.5 * (weight - fitted.prior_weight).pow(2).sum())
    loss.backward()
    assert weight.grad.abs().max() < 1e-4 and bias.grad.abs().max() < 1e-4


def test_a_class_without_labelled_cells_keeps_its_text_prior():
    cells, labels = clustered_cells(4, seed=0)
    seen = labels < N_CLASSES - 1
    fitted = fit_probe_adapter(cells[seen], labels[seen], WRONG_TEXTS, reference=cells)
    assert torch.equal(fitted.weight[-1], fitted.prior_weight[-1])
    assert float(fitted.bias[-1]) == pytest.approx(float(fitted.bias[:-1].mean()))
    halved = fit_probe_adapter(cells[seen], labels[seen], WRONG_TEXTS, reference=cells, prior_scale=0.25)
    torch.testing.assert_close(halved.prior_weight * 2, fitted.prior_weight)
    decayed = fit_probe_adapter(cells, labels, WRONG_TEXTS, prior_decay=1.0)
    torch.testing.assert_close(decayed.prior_weight * 4, fit_probe_adapter(cells, labels, WRONG_TEXTS).prior_weight)


def test_fits_are_deterministic():
    cells, labels = clustered_cells(3, seed=0)
    texts = torch.randn(N_CLASSES, DIM)
    first, second = (fit_probe_adapter(cells, labels, texts) for _ in range(2))
    assert torch.equal(first.weight, second.weight) and torch.equal(first.bias, second.bias)
    a, b = (fit_prototype_adapter(cells, labels, texts) for _ in range(2))
    assert torch.equal(a.prototypes, b.prototypes) and a.weight == b.weight and a.loo_accuracy == b.loo_accuracy


def test_bad_inputs_are_refused():
    with pytest.raises(LangCellInputError, match="class indices"):
        fit_prototype_adapter(torch.randn(3, DIM), torch.tensor([0, 1, 9]), torch.randn(N_CLASSES, DIM))
    with pytest.raises(LangCellInputError, match="same E"):
        fit_probe_adapter(torch.randn(3, DIM), torch.tensor([0, 1, 2]), torch.randn(N_CLASSES, DIM + 1))
    with pytest.raises(LangCellInputError, match="Unknown adapter"):
        fit_adapter("knn", torch.randn(3, DIM), torch.tensor([0, 1, 2]), torch.randn(N_CLASSES, DIM))
    with pytest.raises(LangCellInputError, match="Reference cells"):
        fit_probe_adapter(torch.randn(3, DIM), torch.tensor([0, 1, 2]), torch.randn(N_CLASSES, DIM),
                          reference=torch.randn(5, DIM + 1))


# ------------------------------------------------------------------ public API, tiny checkpoint
@pytest.fixture(scope="module")
def reference_and_query(pbmc_h5ad, tmp_path_factory):
    """Reference: the first scored cell of each of the 50 cells' labels; query: all 50 cells."""
    cells = anndata.read_h5ad(pbmc_h5ad)
    usable = (cells.obs["filter_pass"].astype(int) == 1) & (np.asarray(cells.X.sum(axis=1)).ravel() > 0)
    first = cells.obs[usable.to_numpy()].reset_index().groupby("cell_type", observed=True).first()
    positions = [cells.obs_names.get_loc(name) for name in first[cells.obs.index.name or "index"]]
    return cells[sorted(positions)].copy(), cells


@pytest.mark.parametrize("adapter", ["prototype", "probe"])
def test_few_shot_annotate_on_tiny_checkpoint(reference_and_query, tiny_checkpoint, adapter):
    reference, query = reference_and_query
    result = few_shot_annotate(query, tiny_checkpoint, reference, adapter=adapter, batch_size=8)
    info = result.uns["langcell"]["few_shot"]
    classes = list(result.uns["langcell_classes"])
    assert classes == sorted(reference.obs["cell_type"].unique()) and info["n_reference_cells"] == len(classes)
    scores = result.obsm["langcell_few_shot_scores"]
    assert scores.shape == (50, len(classes))
    scored = ~np.isnan(scores).any(axis=1)
    assert scored.sum() == 48  # cell 3 filtered, cell 29 empty
    predicted = result.obs["langcell_few_shot_prediction"].astype(object).to_numpy()
    assert list(predicted[scored]) == [classes[i] for i in scores[scored].argmax(axis=1)]
    assert "accuracy" in info["metrics"] and info["metrics"]["n_evaluated"] == 48
    embeddings = torch.from_numpy(result.obsm["X_langcell"][scored])
    if adapter == "prototype":
        zero_shot = result.obs["langcell_prediction"].astype(object).to_numpy()
        if info["blend_weight"] == 0.0:
            assert list(predicted[scored]) == list(zero_shot[scored])
        # refitted on the reference's own embeddings: at w = 1 each reference cell is its own prototype
        in_query = [query.obs_names.get_loc(name) for name in reference.obs_names]
        labels = torch.tensor([classes.index(c) for c in reference.obs["cell_type"]])
        ref_embeddings = torch.from_numpy(result.obsm["X_langcell"][in_query])
        refit = fit_prototype_adapter(ref_embeddings, labels, torch.randn(len(classes), embeddings.shape[1]))
        assert torch.equal(refit.scores(ref_embeddings, weight=1.0).argmax(-1), labels)
        log_probs = torch.from_numpy(result.obsm["langcell_probabilities"][in_query]).clamp_min(1e-12).log()
        unused_texts = torch.ones(len(classes), embeddings.shape[1])  # the text term is the zero-shot score
        refit = fit_prototype_adapter(ref_embeddings, labels, unused_texts, text_scores=log_probs)
        assert refit.weight == info["blend_weight"]


def test_few_shot_annotate_refuses_reference_labels_outside_classes(reference_and_query, tiny_checkpoint):
    reference, query = reference_and_query
    with pytest.raises(LangCellInputError, match="not among the candidate classes"):
        few_shot_annotate(query, tiny_checkpoint, reference, classes=["CL:0000236", "CL:0000623"])
    with pytest.raises(LangCellInputError, match="Unknown adapter"):
        few_shot_annotate(query, tiny_checkpoint, reference, adapter="knn")


def test_class_without_labelled_cells_keeps_its_text_score():
    cells, labels = clustered_cells(3, seed=0)
    keep = labels < 3  # class 3 has no labelled cell
    adapter = fit_prototype_adapter(cells[keep], labels[keep], WRONG_TEXTS)
    assert adapter.has_prototype.tolist() == [True, True, True, False]
    test_cells, _ = clustered_cells(5, seed=1)
    text = standardize_rows(F.normalize(test_cells.double(), dim=-1) @ F.normalize(WRONG_TEXTS.double(), dim=-1).T)
    at_one = adapter.scores(test_cells, weight=1.0)
    torch.testing.assert_close(at_one[:, 3], text[:, 3])
    # the prototype part is standardised over the 3 classes with a prototype only
    torch.testing.assert_close(at_one[:, :3].mean(dim=1), torch.zeros(len(test_cells), dtype=torch.float64))
    torch.testing.assert_close(at_one[:, :3].std(dim=1, unbiased=False), torch.ones(len(test_cells), dtype=torch.float64))


# ------------------------------------------------- labelled cells inside the data: annotate and CLI
@pytest.fixture(scope="module")
def partly_labelled(reference_and_query, tmp_path_factory):
    """The 50 cells with obs["my_labels"]: the reference cells' labels, "" elsewhere; obs["wrong_labels"]:
    one label that is no class (written once)."""
    reference, query = reference_and_query
    cells = query.copy()
    cells.obs["my_labels"] = ""
    cells.obs.loc[reference.obs_names, "my_labels"] = reference.obs["cell_type"].astype(str)
    cells.obs["wrong_labels"] = ""
    cells.obs.iloc[0, cells.obs.columns.get_loc("wrong_labels")] = "astronaut"
    path = tmp_path_factory.mktemp("labelled") / "partly_labelled.h5ad"
    cells.write_h5ad(path)
    return path, reference


def predict_cli(repo_root, tmp_path, data, checkpoint, *extra):
    from lightning_langcell.cli import main

    runs = tmp_path / "runs"
    return main([
        "predict", "--config", str(repo_root / "recipes" / "zero_shot.yaml"), "--data.data", str(data),
        "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "16",
        "--model.init_args.init_from", str(checkpoint), "--trainer.accelerator", "cpu",
        "--trainer.default_root_dir", str(runs), "--trainer.logger.init_args.save_dir", str(runs), *extra])


def test_cli_few_shot_labels_write_the_python_api_predictions(partly_labelled, tiny_checkpoint, repo_root, tmp_path):
    path, reference = partly_labelled
    output = tmp_path / "annotated.h5ad"
    predict_cli(repo_root, tmp_path, path, tiny_checkpoint, "--model.init_args.few_shot_labels", "my_labels",
                "--model.init_args.output", str(output))
    written = anndata.read_h5ad(output)
    expected = annotate(path, tiny_checkpoint, few_shot_labels="my_labels")
    info, expected_info = written.uns["langcell"]["few_shot"], expected.uns["langcell"]["few_shot"]
    assert info["adapter"] == expected_info["adapter"] == "probe" and info["label_column"] == "my_labels"
    assert info["n_labelled_cells"] == expected_info["n_labelled_cells"] == reference.n_obs
    assert (info["prior_scale"], info["prior_decay"]) == (0.5, 0.0)  # the probe records its text prior
    scores = written.obsm["langcell_few_shot_scores"]
    np.testing.assert_allclose(scores, expected.obsm["langcell_few_shot_scores"], atol=1e-3)  # NaN rows included
    assert np.isnan(scores).any(axis=1).sum() == 2  # cell 3 filtered, cell 29 without genes
    predicted = written.obs["langcell_few_shot_prediction"].astype(object).to_numpy()
    assert list(predicted) == list(expected.obs["langcell_few_shot_prediction"].astype(object))
    classes = list(written.uns["langcell_classes"])
    scored = ~np.isnan(scores).any(axis=1)
    assert list(predicted[scored]) == [classes[i] for i in scores[scored].argmax(axis=1)]
    assert info["metrics"]["accuracy"] == pytest.approx(expected_info["metrics"]["accuracy"])
    # the labelled cells are fitted on: the probe scores each one's own class above the zero-shot blend's rank
    labelled = written.obs_names.isin(reference.obs_names)
    own = [classes.index(c) for c in reference.obs.loc[written.obs_names[labelled], "cell_type"].astype(str)]
    assert (scores[labelled].argmax(axis=1) == own).mean() >= 0.5


def test_api_few_shot_annotate_loads_the_checkpoint_once(reference_and_query, tiny_checkpoint, monkeypatch):
    import lightning_langcell.hub.loading as loading

    calls = []
    original = loading.load_model
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: calls.append(a) or original(*a, **k))
    reference, query = reference_and_query
    few_shot_annotate(query, tiny_checkpoint, reference, batch_size=8)
    assert len(calls) == 1


def test_cli_refuses_bad_few_shot_labels_before_scoring(partly_labelled, tiny_checkpoint, repo_root, tmp_path, capsys):
    path, _ = partly_labelled
    for column, message in (("no_such_column", "Few-shot label column 'no_such_column' is not in obs"),
                            ("wrong_labels", "Labels ['astronaut'] of obs['wrong_labels'] are not among")):
        with pytest.raises(SystemExit) as stopped:
            predict_cli(repo_root, tmp_path, path, tiny_checkpoint, "--model.init_args.few_shot_labels", column)
        assert stopped.value.code == 2
        err = capsys.readouterr().err
        assert f"error: {message}" in err and "fix: " in err and "Traceback" not in err
    with pytest.raises(LangCellInputError, match="Unknown adapter"):
        annotate(path, tiny_checkpoint, few_shot_labels="my_labels", adapter="knn")


def test_few_shot_with_a_prompt_ensemble_fits_on_the_scorers_class_embeddings(partly_labelled, reference_and_query,
                                                                             tiny_checkpoint, monkeypatch):
    """With several texts per class the adapter gets one embedding per class (the scorer's
    combined ones), in annotate and in few_shot_annotate alike."""
    import lightning_langcell.inference.few_shot_cells as few_shot_cells
    from lightning_langcell.inference.annotate import build_scorer, load_checkpoint
    from lightning_langcell.inference.classes import candidate_classes

    path, reference = partly_labelled
    seen = []
    original = few_shot_cells.fit_adapter
    monkeypatch.setattr(few_shot_cells, "fit_adapter", lambda name, emb, labels, texts, *rest, **options:
                        seen.append(texts) or original(name, emb, labels, texts, *rest, **options))
    annotated = annotate(path, tiny_checkpoint, few_shot_labels="my_labels", prompts="ensemble")
    classes = list(annotated.uns["langcell_classes"])
    assert annotated.uns["langcell"]["n_prompt_texts"] > len(classes)  # several texts per class
    loaded = load_checkpoint(tiny_checkpoint)
    candidates = candidate_classes(None, anndata.read_h5ad(path).obs, "cell_type", None, False)
    assert list(candidates.names) == classes
    expected = build_scorer(loaded.model, candidates, loaded.text_tokenizer, torch.device("cpu"),
                            prompts="ensemble", alpha=1.0).class_embedding.float()
    assert seen[0].shape == (len(classes), expected.shape[1])
    torch.testing.assert_close(seen[0], expected, atol=1e-5, rtol=1e-5)
    query, _ = reference_and_query
    few_shot_annotate(query, loaded, reference, prompts="ensemble")
    torch.testing.assert_close(seen[1], expected, atol=1e-5, rtol=1e-5)
