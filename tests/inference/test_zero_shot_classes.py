"""Candidate classes, class texts, ground-truth matching and the metrics."""

import json

import numpy as np
import pandas as pd
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.classes import candidate_classes, truth_indices
from lightning_langcell.inference.metrics import classification_scores, confusion_matrix, confusion_matrix_figure

B_CELL = "cell type: B cell. A lymphocyte of B lineage that is capable of B cell mediated immunity.; "


def test_classes_from_obs_use_their_ontology_ids():
    obs = pd.DataFrame({"cell_type": ["CD19+ B", "NK", "CD19+ B", None, "unknown"],
                        "cell_type_ontology_term_id": ["CL:0000236", "CL:0000623", "CL:0000236", None, None]})
    classes = candidate_classes(obs=obs)
    assert classes.names == ["CD19+ B", "NK"]
    assert classes.texts[0] == B_CELL
    assert classes.texts[1].startswith("cell type: natural killer cell. A lymphocyte that can spontaneously kill")
    assert classes.term_ids == ["CL:0000236", "CL:0000623"]


def test_classes_from_labels_ids_and_type2text(tmp_path):
    classes = candidate_classes(["B cell", "CL:0000623"])
    assert classes.texts[0] == B_CELL and classes.term_ids == ["CL:0000236", "CL:0000623"]
    path = tmp_path / "type2text.json"
    path.write_text(json.dumps({"Zorbo cell": "A made-up cell.", "B cell": "Makes antibodies."}))
    classes = candidate_classes(str(path))
    assert classes.names == ["Zorbo cell", "B cell"]
    assert classes.texts == ["cell type: Zorbo cell. A made-up cell.; ", "cell type: B cell. Makes antibodies.; "]
    overridden = candidate_classes(["B cell"], type2text={"CL:0000236": "Makes antibodies."})
    assert overridden.texts == ["cell type: B cell. Makes antibodies.; "]


def test_classes_without_definition_are_an_error_listing_them():
    with pytest.raises(LangCellInputError, match=r"1 class\(es\) have no text.*\['Flurbo cell'\]"):
        candidate_classes(["B cell", "Flurbo cell"])
    with pytest.warns(UserWarning, match="Flurbo cell"):
        classes = candidate_classes(["B cell", "Flurbo cell"], allow_missing_definitions=True)
    assert classes.texts[1] == "cell type: Flurbo cell; " and classes.term_ids[1] is None


@pytest.mark.parametrize("bad", [[], ["B cell", "B cell"], "B cell"])
def test_bad_class_lists_are_refused(bad):
    with pytest.raises(LangCellInputError):
        candidate_classes(bad)


def test_missing_label_column_is_refused():
    with pytest.raises(LangCellInputError, match="Label column 'cell_type' is not in obs"):
        candidate_classes(obs=pd.DataFrame({"louvain": ["0"]}))


def test_truth_matches_by_name_case_and_ontology():
    classes = candidate_classes(["B cell", "CL:0000623"])
    labels = ["B cell", "b-cell", "natural killer cell", "NK cell", "CL:0000623", "T cell", None]
    # "NK cell" is a CL synonym of natural killer cell; "T cell" is no candidate
    assert truth_indices(labels, classes).tolist() == [0, 0, 1, 1, 1, -1, -1]


def test_metrics_values_on_a_constructed_example():
    target = np.array([0, 0, 0, 1, 1, 2, -1, 2])  # -1: truth not among the candidates, not counted
    preds = np.array([0, 0, 1, 1, 3, 2, 0, 0])  # class 3 predicted but never true
    metrics = classification_scores(target, preds, 4)
    # per class (0, 1, 2, 3): precision 2/3, 1/2, 1, 0; recall 2/3, 1/2, 1/2, -; F1 2/3, 1/2, 2/3, 0
    assert metrics["accuracy"] == pytest.approx(4 / 7)
    assert metrics["balanced_accuracy"] == pytest.approx((2 / 3 + 1 / 2 + 1 / 2) / 3)
    assert metrics["macro_f1"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3 + 0) / 4)
    assert metrics["weighted_f1"] == pytest.approx((3 * 2 / 3 + 2 * 1 / 2 + 2 * 2 / 3) / 7)
    assert (metrics["n_evaluated"], metrics["n_not_evaluated"]) == (7, 1)
    matrix = confusion_matrix(target, preds, 4)
    assert matrix.tolist() == [[2, 1, 0, 0], [0, 1, 0, 1], [1, 0, 1, 0], [0, 0, 0, 0]]
    assert np.isnan(classification_scores(np.array([-1]), np.array([0]), 2)["accuracy"])


def test_confusion_matrix_figure():
    pytest.importorskip("matplotlib")
    figure = confusion_matrix_figure(np.array([[2, 1], [0, 3]]), ["a", "b"])
    axes = figure.axes[0]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["a", "b"]
    np.testing.assert_allclose(axes.images[0].get_array(), [[2 / 3, 1 / 3], [0, 1]])
    assert sorted(t.get_text() for t in axes.texts) == ["1", "2", "3"]
