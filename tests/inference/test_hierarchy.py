"""The ontology's hierarchy over zero-shot predictions, on a hand-made hierarchy (values computed by hand).

    CL:0 cell (root)
    └── CL:1 leukocyte
        ├── CL:2 T cell
        │   ├── CL:3 CD4 T cell
        │   └── CL:4 CD8 T cell
        └── CL:5 B cell
    CL:6 platelet (child of CL:0)
"""

import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.hierarchy import ClassHierarchy, ancestor_set, hierarchical_scores
from lightning_langcell.text.ontology import Ontology, OntologyTerm


@pytest.fixture(scope="module")
def ontology():
    return Ontology({"CL": [
        OntologyTerm("CL:0", "cell"),
        OntologyTerm("CL:1", "leukocyte", parents=("CL:0",)),
        OntologyTerm("CL:2", "T cell", parents=("CL:1",)),
        OntologyTerm("CL:3", "CD4 T cell", parents=("CL:2",)),
        OntologyTerm("CL:4", "CD8 T cell", parents=("CL:2",)),
        OntologyTerm("CL:5", "B cell", parents=("CL:1",)),
        OntologyTerm("CL:6", "platelet", parents=("CL:0",)),
    ]})


@pytest.fixture(scope="module")
def hierarchy(ontology):
    # candidates: CD4 T, CD8 T, T cell (a parent among the candidates), B cell, platelet
    return ClassHierarchy(["CL:3", "CL:4", "CL:2", "CL:5", "CL:6"], ontology)


def test_nodes_and_distances(hierarchy):
    # candidates first, then their ancestors; the root "cell" is left out
    assert hierarchy.node_ids == ["CL:3", "CL:2", "CL:1", "CL:4", "CL:5", "CL:6"]
    assert hierarchy.node_labels[1] == "T cell"
    assert hierarchy.distance.tolist() == [
        [0, 1, 2, -1, -1, -1],   # CD4 T: itself, T cell, leukocyte
        [-1, 1, 2, 0, -1, -1],   # CD8 T
        [-1, 0, 1, -1, -1, -1],  # T cell
        [-1, -1, 1, -1, 0, -1],  # B cell
        [-1, -1, -1, -1, -1, 0],  # platelet
    ]


def test_aggregated_probabilities(hierarchy):
    probabilities = np.array([[0.30, 0.25, 0.05, 0.30, 0.10],
                              [0.00, 0.00, 0.00, 0.00, 1.00]])
    aggregated = hierarchy.aggregate(probabilities)
    # CD4 0.30; T cell = 0.30 + 0.25 + 0.05; leukocyte = T cell + B 0.30; CD8 0.25; B 0.30; platelet 0.10
    np.testing.assert_allclose(aggregated[0], [0.30, 0.60, 0.90, 0.25, 0.30, 0.10])
    np.testing.assert_allclose(aggregated[1], [0, 0, 0, 0, 0, 1])
    with pytest.raises(LangCellInputError, match="one column per candidate"):
        hierarchy.aggregate(probabilities[:, :4])


def test_back_off_picks_the_deepest_sure_ancestor(hierarchy):
    probabilities = np.array([
        [0.45, 0.40, 0.05, 0.05, 0.05],  # unsure CD4; T cell 0.90 sure -> T cell, level 1
        [0.40, 0.10, 0.05, 0.40, 0.05],  # unsure CD4; T cell 0.55 < 0.8, leukocyte 0.95 -> level 2
        [0.90, 0.05, 0.00, 0.05, 0.00],  # sure CD4 -> itself
        [0.30, 0.05, 0.00, 0.30, 0.35],  # unsure platelet, nothing above it -> itself
        [0.30, 0.30, 0.40, 0.00, 0.00],  # best T cell 0.40 unsure, but its own aggregate 1.0 -> T cell, level 0
    ])
    predicted = hierarchy.back_off(probabilities, threshold=0.5, ancestor_threshold=0.8)
    assert predicted.term_ids.tolist() == ["CL:2", "CL:1", "CL:3", "CL:6", "CL:2"]
    assert predicted.labels.tolist() == ["T cell", "leukocyte", "CD4 T cell", "platelet", "T cell"]
    assert predicted.levels.tolist() == [1, 2, 0, 0, 0]
    np.testing.assert_allclose(predicted.probabilities, [0.90, 0.95, 0.90, 0.35, 1.0])


def test_no_back_off_when_the_best_class_is_sure(hierarchy):
    probabilities = np.array([[0.45, 0.40, 0.05, 0.05, 0.05]])
    predicted = hierarchy.back_off(probabilities, threshold=0.45, ancestor_threshold=0.8)
    assert predicted.term_ids.tolist() == ["CL:3"] and predicted.levels.tolist() == [0]
    # threshold 0: never backs off; ancestor_threshold above every aggregate: nothing to back off to
    assert hierarchy.back_off(probabilities, threshold=0.0).levels.tolist() == [0]
    assert hierarchy.back_off(probabilities, 0.5, ancestor_threshold=1.0).term_ids.tolist() == ["CL:3"]
    with pytest.raises(LangCellInputError, match="ancestor_threshold"):
        hierarchy.back_off(probabilities, 0.5, ancestor_threshold=1.5)


def test_obs_columns_place_rows(hierarchy):
    predicted = hierarchy.back_off(np.array([[0.45, 0.40, 0.05, 0.05, 0.05]]), 0.5, 0.8)
    columns = predicted.obs_columns(3, np.array([1]))
    assert columns["langcell_term_id"].tolist()[1] == "CL:2"
    assert columns["langcell_backoff_level"].tolist() == [-1, 1, -1]
    assert columns["langcell_term_label"].isna().tolist() == [True, False, True]


def test_class_without_term_id_stays_outside(ontology):
    hierarchy = ClassHierarchy(["CL:3", None], ontology, class_names=["CD4 T cell", "my cluster 7"])
    predicted = hierarchy.back_off(np.array([[0.4, 0.6], [0.45, 0.55]]), threshold=0.9, ancestor_threshold=0.5)
    assert predicted.term_ids.tolist() == [None, None]
    assert predicted.labels.tolist() == ["my cluster 7", "my cluster 7"]
    assert predicted.levels.tolist() == [0, 0]
    with pytest.raises(LangCellInputError, match="not in the ontology"):
        ClassHierarchy(["CL:3", "CL:999"], ontology)


def test_ancestor_sets_exclude_the_root(ontology):
    assert ancestor_set("CL:4", ontology) == {"CL:4", "CL:2", "CL:1"}
    assert ancestor_set("CL:0", ontology) == frozenset()
    assert ancestor_set(None, ontology) == frozenset()


def test_hierarchical_scores_by_hand(ontology):
    true = ["CL:4", "CL:4", "CL:4", "CL:5", "CL:6", None]
    pred = ["CL:4", "CL:2", "CL:3", "CL:4", None, "CL:5"]
    scores = hierarchical_scores(true, pred, ontology)
    # (T = truth set, P = prediction set, root excluded); the last cell has no truth: not counted
    # CD8 vs CD8: T {4,2,1} P {4,2,1}   -> |P∩T| 3, |P| 3, |T| 3
    # CD8 vs T:   T {4,2,1} P {2,1}     -> 2, 2, 3
    # CD8 vs CD4: T {4,2,1} P {3,2,1}   -> 2, 3, 3
    # B vs CD8:   T {5,1}   P {4,2,1}   -> 1, 3, 2
    # plt vs None: T {6}    P {}        -> 0, 0, 1
    # sums: |P∩T| 8, |P| 11, |T| 12
    assert scores["n_evaluated"] == 5
    assert scores["accuracy"] == pytest.approx(1 / 5)
    assert scores["hierarchical_precision"] == pytest.approx(8 / 11)
    assert scores["hierarchical_recall"] == pytest.approx(8 / 12)
    assert scores["hierarchical_f1"] == pytest.approx(2 * (8 / 11) * (8 / 12) / (8 / 11 + 8 / 12))
    # correct or an ancestor of the truth: CD8 (exact) and T cell (ancestor of CD8)
    assert scores["correct_or_ancestor"] == pytest.approx(2 / 5)


def test_hierarchical_scores_accept_underscore_ids_and_empty_input(ontology):
    scores = hierarchical_scores(["CL_2", "CL:2"], ["CL:2", "CL_1"], ontology)
    assert scores["accuracy"] == 0.5 and scores["correct_or_ancestor"] == 1.0
    assert scores["hierarchical_precision"] == 1.0 and scores["hierarchical_recall"] == pytest.approx(3 / 4)
    assert hierarchical_scores([None], ["CL:2"], ontology)["n_evaluated"] == 0


def test_annotate_hierarchy_columns_are_consistent(pbmc_h5ad, tiny_checkpoint, tmp_path):
    import anndata

    from lightning_langcell.inference import annotate

    adata = anndata.read_h5ad(pbmc_h5ad)
    plain = annotate(adata, tiny_checkpoint, batch_size=8)
    assert "langcell_term_id" not in plain.obs  # hierarchy is opt-in
    threshold = float(np.nanmedian(plain.obs["langcell_confidence"]))  # the tiny model is unsure: half backs off
    result = annotate(adata, tiny_checkpoint, batch_size=8, hierarchy=True, backoff_threshold=threshold,
                      ancestor_threshold=0.5, output=tmp_path / "annotated.h5ad")
    written = anndata.read_h5ad(tmp_path / "annotated.h5ad")
    for key in ("langcell_term_id", "langcell_term_label", "langcell_backoff_level"):
        assert written.obs[key].astype(object).equals(result.obs[key].astype(object))
    assert result.obs["langcell_prediction"].equals(plain.obs["langcell_prediction"])
    ontology = Ontology.bundled()
    obs = result.obs
    classes = list(result.uns["langcell_classes"])
    exact_ids = {name: ontology.match_label(name) or adata.obs.loc[adata.obs["cell_type"] == name,
                                                                     "cell_type_ontology_term_id"].iloc[0]
                 for name in classes}
    scored = obs["langcell_prediction"].notna().to_numpy()
    assert scored.sum() == 48
    assert (obs["langcell_backoff_level"].to_numpy()[~scored] == -1).all()
    assert obs["langcell_term_id"][~scored].isna().all()
    levels = obs["langcell_backoff_level"].to_numpy()[scored]
    sure = obs["langcell_confidence"].to_numpy()[scored] >= threshold
    assert (levels[sure] == 0).all() and (levels[~sure] > 0).sum() >= 10
    for prediction, term_id, label, level in zip(obs["langcell_prediction"][scored], obs["langcell_term_id"][scored],
                                                 obs["langcell_term_label"][scored], levels):
        exact = exact_ids[prediction]
        if level == 0:
            assert term_id == exact
        else:  # an ancestor of the exact prediction, `level` edges above it
            assert ontology.ancestors(exact)[term_id] == level
        assert label == ontology.term(term_id).label
    info = result.uns["langcell"]["hierarchy"]
    assert info["backoff_fraction"] == pytest.approx((levels > 0).mean())
    # the exact predictions' ontology accuracy is the classification accuracy
    assert info["metrics_exact"]["accuracy"] == pytest.approx(result.uns["langcell"]["metrics"]["accuracy"])
    assert info["metrics_backoff"]["correct_or_ancestor"] >= info["metrics_exact"]["correct_or_ancestor"]


def test_cli_predict_hierarchy_equals_the_python_api(pbmc_h5ad, tiny_checkpoint, repo_root, tmp_path):
    import anndata

    from lightning_langcell.cli import main
    from lightning_langcell.inference import annotate

    runs, output = tmp_path / "runs", tmp_path / "annotated.h5ad"
    main([
        "predict", "--config", str(repo_root / "recipes" / "zero_shot.yaml"),
        "--data.data", str(pbmc_h5ad), "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "16",
        "--model.init_args.init_from", str(tiny_checkpoint), "--model.init_args.output", str(output),
        "--model.init_args.hierarchy", "true", "--model.init_args.backoff_threshold", "0.13",
        "--model.init_args.ancestor_threshold", "0.5",
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(runs), "--trainer.logger", "false",
    ])
    written = anndata.read_h5ad(output)
    expected = annotate(pbmc_h5ad, tiny_checkpoint, hierarchy=True, backoff_threshold=0.13, ancestor_threshold=0.5)
    for key in ("langcell_term_id", "langcell_term_label", "langcell_backoff_level"):
        assert written.obs[key].astype(object).equals(expected.obs[key].astype(object))
    levels = written.obs["langcell_backoff_level"]
    assert (levels == 0).sum() > 0 and (levels > 0).sum() > 0
    assert written.uns["langcell"]["hierarchy"]["metrics_backoff"]["hierarchical_f1"] == pytest.approx(
        expected.uns["langcell"]["hierarchy"]["metrics_backoff"]["hierarchical_f1"])
