"""``annotate``: one candidate class is refused before any work, one ground-truth label with several
candidates still gives metrics and the annotations, a progress bar over the cells on request, and
the cell length defaults to the one the checkpoint was trained with."""

from __future__ import annotations

import importlib

import anndata
import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference import annotate

CLASSES = ["CL:0000236", "CL:0000623", "CL:0001054"]  # B cell, NK cell, CD14+ monocyte


def test_one_candidate_class_is_refused_before_any_work(pbmc_h5ad, tiny_checkpoint, monkeypatch, tmp_path):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded although the classes are unusable")

    module = importlib.import_module("lightning_langcell.inference.annotate")  # the package exports the function
    monkeypatch.setattr(module, "load_zero_shot_model", no_model)
    with pytest.raises(LangCellInputError, match=r"at least 2 candidate classes, got 1 \(\['CL:0000236'\]\)"):
        annotate(pbmc_h5ad, tiny_checkpoint, classes=["CL:0000236"], output=tmp_path / "out.h5ad")
    one_label = anndata.read_h5ad(pbmc_h5ad)
    one_label.obs["cell_type"] = "CD19+ B"  # the classes default to the labels: only one
    with pytest.raises(LangCellInputError, match="at least 2 candidate classes"):
        annotate(one_label, tiny_checkpoint)
    assert not (tmp_path / "out.h5ad").exists()


def test_one_label_with_several_candidates_gives_metrics_and_annotations(pbmc_h5ad, tiny_checkpoint, tmp_path):
    adata = anndata.read_h5ad(pbmc_h5ad)
    adata.obs["cell_type_ontology_term_id"] = "CL:0000236"  # every cell labelled B cell
    result = annotate(adata, tiny_checkpoint, classes=CLASSES, label_column="cell_type_ontology_term_id",
                      output=tmp_path / "one_label.h5ad")
    written = anndata.read_h5ad(tmp_path / "one_label.h5ad")
    predicted = written.obs["langcell_prediction"]
    scored = predicted.notna().to_numpy()
    assert scored.sum() == written.uns["langcell"]["n_cells_scored"] >= 48  # cell 3: filter_pass 0; 29: empty
    metrics = result.uns["langcell"]["metrics"]
    expected = float(np.mean(predicted[scored].astype(str).to_numpy() == "CL:0000236"))
    assert metrics["accuracy"] == pytest.approx(expected)
    assert metrics["balanced_accuracy"] == pytest.approx(expected)  # one class present: its recall
    assert written.uns["langcell"]["metrics"]["accuracy"] == pytest.approx(expected)


def test_progress_bar_over_cells_on_request(pbmc_h5ad, tiny_checkpoint, capsys):
    adata = anndata.read_h5ad(pbmc_h5ad)[:10].copy()
    annotate(adata, tiny_checkpoint, classes=CLASSES, progress=True, batch_size=4)
    bar = capsys.readouterr().err
    assert "annotate" in bar and "9/9" in bar and "cell" in bar  # 9 scored cells (cell 3: filter_pass 0)
    annotate(adata, tiny_checkpoint, classes=CLASSES, progress=False)
    annotate(adata, tiny_checkpoint, classes=CLASSES)  # stderr is not a terminal under pytest: no bar
    assert capsys.readouterr().err == ""


def test_cell_length_defaults_to_the_checkpoints(pbmc_h5ad, tiny_checkpoint, repo_root):
    adata = anndata.read_h5ad(pbmc_h5ad)[:6].copy()
    official = annotate(adata, tiny_checkpoint, classes=CLASSES)  # official layout: its 2,048 positions
    bundled = annotate(adata, repo_root / "checkpoints/langcell-tiny-bundled", classes=CLASSES)
    chosen = annotate(adata, repo_root / "checkpoints/langcell-tiny-bundled", classes=CLASSES, max_length=64)
    assert official.uns["langcell"]["max_length"] == 2048
    assert bundled.uns["langcell"]["max_length"] == 256  # recorded in its config.json: how it was trained
    assert chosen.uns["langcell"]["max_length"] == 64
    assert not np.allclose(bundled.obsm["X_langcell"][[0, 1]], chosen.obsm["X_langcell"][[0, 1]])
