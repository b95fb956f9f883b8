"""``python -m lightning_langcell predict --config recipes/embed.yaml`` on real cells of two
files: the written embeddings equal the model's, the scores equal the library functions on the
written embeddings (and TensorBoard's), bad batch columns / label-less data behave as documented."""

from __future__ import annotations

import hashlib

import anndata
import numpy as np
import pandas as pd
import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.classes import candidate_classes
from lightning_langcell.inference.embedding_metrics import embedding_scores
from lightning_langcell.inference.retrieval import embed_texts, retrieval_metrics

CHECKPOINT = "checkpoints/langcell-tiny-bundled"


@pytest.fixture(scope="module")
def inputs(repo_root, tmp_path_factory):
    """60 pbmc68k cells and 40 FACS-sorted garnett PBMCs (labels named differently, same CL ids)."""
    folder = tmp_path_factory.mktemp("embed_inputs")
    first = anndata.read_h5ad(repo_root / "data/cells/pbmc68k_reduced.h5ad")[:60].copy()
    second = anndata.read_h5ad(repo_root / "data/cells/garnett_pbmc_facs.h5ad")[::20].copy()
    first.write_h5ad(folder / "pbmc68k_60.h5ad")
    second.write_h5ad(folder / "garnett_40.h5ad")
    return [folder / "pbmc68k_60.h5ad", folder / "garnett_40.h5ad"]


@pytest.fixture()
def embed(repo_root, tmp_path, tmp_path_factory, monkeypatch):
    """``embed(data, *extra)``: the recipe in-process on CPU; returns the LightningCLI."""
    from lightning_langcell.cli import main

    monkeypatch.setattr("sys.argv", ["lightning_langcell"])
    monkeypatch.setenv("LANGCELL_DEBUG", "1")  # library errors propagate instead of a message + exit 2
    cache = tmp_path_factory.getbasetemp() / "embed_corpora"

    def run(data, *extra):
        data = "[" + ", ".join(str(path) for path in data) + "]"
        return main([
            "predict", "--config", str(repo_root / "recipes" / "embed.yaml"), "--data.data", data,
            "--data.cache_dir", str(cache), "--data.max_length", "128",
            "--model.init_args.init_from", str(repo_root / CHECKPOINT),
            "--model.init_args.output", str(tmp_path / "out"),
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.enable_progress_bar", "false", *extra,
        ])

    return run


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_embeddings_and_scores_of_two_datasets(embed, inputs, tmp_path):
    from lightning_langcell.data.collate import pad_token_lists
    from lightning_langcell.hub.loading import load_model, load_text_tokenizer_for
    from lightning_langcell.tokenization import CLS_ID

    before = [_digest(path) for path in inputs]
    cli = embed(inputs, "--model.init_args.batch_column", "source_file")
    assert [_digest(path) for path in inputs] == before  # inputs never modified
    written = [anndata.read_h5ad(tmp_path / "out" / f"{path.stem}.langcell.h5ad") for path in inputs]
    assert [w.obsm["X_langcell"].shape for w in written] == [(60, 256), (40, 256)]
    for w, path in zip(written, inputs):
        assert list(w.obs_names) == list(anndata.read_h5ad(path).obs_names)
        np.testing.assert_allclose(np.linalg.norm(w.obsm["X_langcell"], axis=1), 1.0, atol=1e-5)

    # the embeddings are the model's: a few corpus cells encoded directly
    model = load_model(CHECKPOINT).eval()
    corpus = cli.datamodule.corpus
    rows = [0, 17, 59, 60, 99]
    input_ids, mask = pad_token_lists([corpus[i].input_ids for i in rows], CLS_ID, 128)
    with torch.no_grad():
        _, direct = model.encode_cells(input_ids, mask)
    stacked = np.concatenate([w.obsm["X_langcell"] for w in written])  # corpus order = file order here
    assert list(corpus.obs["source_index"]) == list(range(60)) + list(range(40))
    np.testing.assert_allclose(stacked[rows], direct.numpy(), atol=1e-5)

    # the scores are the library functions on the written embeddings
    info = written[0].uns["langcell"]
    metrics = {key: float(value) for key, value in info["embedding_metrics"].items()}
    assert metrics == pytest.approx(cli.model.results["embedding_metrics"], nan_ok=True)
    obs = pd.concat([anndata.read_h5ad(path).obs for path in inputs])
    labels = obs["cell_type"].astype(str).to_numpy()
    batches = np.repeat(["pbmc68k_60", "garnett_40"], [60, 40])
    expected = embedding_scores(stacked, labels=labels, batches=batches, k=15)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9, nan_ok=True), key
    assert metrics["knn_batch_mixing"] < 0.2  # two studies barely mix
    # scib's silhouette_batch is taken within each label: no label name occurs in both studies
    assert np.isnan(metrics["silhouette_batch"])

    # retrieval: texts = the labels' class texts; 'B cells' (garnett) and 'CD19+ B' share CL:0000236
    classes = candidate_classes(None, obs, "cell_type", allow_missing_definitions=True)
    texts = list(info["retrieval_texts"])
    assert texts == list(dict.fromkeys(classes.texts)) and len(texts) == len(classes.names) - 1
    by_label = dict(zip(classes.names, classes.texts))
    text_of_cell = np.array([texts.index(by_label[label]) for label in labels])
    text_embeddings = embed_texts(model, texts, load_text_tokenizer_for(CHECKPOINT))
    expected = retrieval_metrics(stacked, text_embeddings, text_of_cell)
    for key, value in expected.items():
        assert metrics[key] == pytest.approx(value, abs=1e-9), key
        assert 0.0 <= value <= (1.0 if "recall" in key or "precision" in key else len(labels))
    assert metrics["retrieval_n_cells"] == 100 and metrics["retrieval_n_texts"] == len(texts)

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (tmp_path / "runs" / "tensorboard").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    for key in ("silhouette_label", "knn_purity", "knn_batch_mixing", "cell_to_text_recall_at_5"):
        (scalar,) = events.Scalars(f"embed/{key}")
        assert scalar.value == pytest.approx(metrics[key], rel=1e-6)


def test_batch_column_read_from_the_inputs_without_labels(embed, inputs, tmp_path):
    """obs['dataset'] is not kept in the corpus: it is read from the input files."""
    cli = embed(inputs, "--model.init_args.batch_column", "dataset", "--data.label_column", "null")
    written = anndata.read_h5ad(tmp_path / "out" / f"{inputs[1].stem}.langcell.h5ad")
    metrics = written.uns["langcell"]["embedding_metrics"]
    assert set(metrics) == {"silhouette_batch", "knn_batch_mixing"}
    stacked = np.concatenate([anndata.read_h5ad(tmp_path / "out" / f"{p.stem}.langcell.h5ad").obsm["X_langcell"]
                              for p in inputs])
    dataset = pd.concat([anndata.read_h5ad(path).obs for path in inputs])["dataset"].astype(str).to_numpy()
    expected = embedding_scores(stacked, batches=dataset)
    assert cli.model.results["embedding_metrics"] == pytest.approx(expected, abs=1e-9)


def test_missing_batch_column_is_one_clear_error(embed, inputs, tmp_path):
    expected = r"Batch column 'donor_x' .*available columns: .*'dataset'.*'source_file'"
    with pytest.raises(LangCellInputError, match=expected):
        embed(inputs, "--model.init_args.batch_column", "donor_x")
    assert not (tmp_path / "out").exists()


def test_labels_without_any_value_skip_label_scores_with_a_warning(embed, inputs, tmp_path):
    adata = anndata.read_h5ad(inputs[0])
    adata.obs["cell_type"] = "unknown"
    path = tmp_path / "unlabelled.h5ad"
    adata.write_h5ad(path)
    with pytest.warns(UserWarning, match="holds no label: silhouette_label, knn_purity and retrieval are skipped"):
        cli = embed([path])
    written = anndata.read_h5ad(tmp_path / "out" / "unlabelled.langcell.h5ad")
    assert written.obsm["X_langcell"].shape == (60, 256)
    assert "embedding_metrics" in written.uns["langcell"] and cli.model.results["embedding_metrics"] == {}
