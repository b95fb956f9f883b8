"""Open-set scores: the per-cell unknown score and the AUROC of a left-out type (values by hand)."""

import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.open_set import (DEFAULT_UNKNOWN_SCORE, DEFAULT_UNKNOWN_THRESHOLD,
                                                   abstention_threshold, disagreement_score, left_out_auroc,
                                                   unknown_score)


def test_unknown_score_values():
    probabilities = np.array([[0.7, 0.2, 0.1],
                              [0.4, 0.35, 0.25],
                              [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(unknown_score(probabilities, "margin"), [1 - 0.5, 1 - 0.05, np.nan])
    np.testing.assert_allclose(unknown_score(probabilities, "max_probability"), [0.3, 0.6, np.nan])
    entropy = -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1)) / np.log(3)  # 0.7298
    np.testing.assert_allclose(unknown_score(probabilities, "entropy")[0], entropy)
    np.testing.assert_allclose(unknown_score(np.array([[1 / 3] * 3, [1.0, 0.0, 0.0]]), "entropy"), [1.0, 0.0],
                               atol=1e-12)
    assert DEFAULT_UNKNOWN_SCORE == "entropy"
    np.testing.assert_allclose(unknown_score(probabilities), unknown_score(probabilities, "entropy"))
    with pytest.raises(LangCellInputError, match="kind"):
        unknown_score(probabilities, "variance")
    with pytest.raises(LangCellInputError, match="classes >= 2"):
        unknown_score(probabilities[:, :1])


def test_left_out_auroc_by_hand():
    # left-out cells score 0.9, 0.4; the others 0.8, 0.3, 0.1, NaN (skipped)
    # pairs (left-out > other): 0.9 beats all 3, 0.4 beats 0.3 and 0.1 -> 5 of 6
    scores = np.array([0.9, 0.8, 0.4, 0.3, 0.1, np.nan])
    left_out = np.array([True, False, True, False, False, True])
    assert left_out_auroc(scores, left_out) == pytest.approx(5 / 6)
    assert left_out_auroc(-scores, left_out) == pytest.approx(1 / 6)
    assert np.isnan(left_out_auroc(scores[:2], np.array([True, True])))
    sklearn = pytest.importorskip("sklearn.metrics")
    kept = ~np.isnan(scores)
    assert left_out_auroc(scores, left_out) == pytest.approx(sklearn.roc_auc_score(left_out[kept], scores[kept]))


def test_annotate_writes_the_unknown_score(pbmc_h5ad, tiny_checkpoint):
    import anndata

    from lightning_langcell.inference import annotate

    result = annotate(anndata.read_h5ad(pbmc_h5ad), tiny_checkpoint, batch_size=8)
    probabilities = result.obsm["langcell_probabilities"].astype(np.float64)
    expected = -(probabilities * np.log(probabilities)).sum(axis=1) / np.log(probabilities.shape[1])
    np.testing.assert_allclose(result.obs["langcell_unknown_score"], expected, rtol=1e-6)  # NaN rows included
    assert result.obs["langcell_unknown_score"].isna().sum() == 2


def test_disagreement_is_total_variation():
    ctc = np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    ctm = np.array([[0.0, 0.5, 0.5], [0.2, 0.3, 0.5]])
    np.testing.assert_allclose(disagreement_score(ctc, ctm), [0.5, 0.0])
    with pytest.raises(LangCellInputError, match="shape"):
        disagreement_score(ctc, ctm[:, :2])


def test_abstention_threshold_marks_the_target_fraction_of_known_cells():
    known = np.arange(1, 101) / 100.0  # 0.01 ... 1.00
    threshold = abstention_threshold(known, 0.05)
    assert threshold == pytest.approx(0.9505)  # 95th percentile, linear interpolation
    assert (known > threshold).sum() == 5
    assert abstention_threshold(np.array([0.2, np.nan, 0.4]), 0.5) == pytest.approx(0.3)
    with pytest.raises(LangCellInputError, match="false_abstention"):
        abstention_threshold(known, 0.0)
    with pytest.raises(LangCellInputError, match="No known-type"):
        abstention_threshold(np.array([np.nan]), 0.05)


def test_annotate_marks_unknown_cells_above_the_threshold(pbmc_h5ad, tiny_checkpoint):
    import anndata

    from lightning_langcell.inference import annotate

    cells = anndata.read_h5ad(pbmc_h5ad)
    default = annotate(cells, tiny_checkpoint, batch_size=8)
    scores = default.obs["langcell_unknown_score"].to_numpy()
    np.testing.assert_array_equal(default.obs["langcell_unknown"].to_numpy(), scores > DEFAULT_UNKNOWN_THRESHOLD)
    assert default.uns["langcell"]["unknown_threshold"] == DEFAULT_UNKNOWN_THRESHOLD
    middle = float(np.nanmedian(scores))
    flagged = annotate(cells, tiny_checkpoint, batch_size=8, unknown_threshold=middle).obs["langcell_unknown"]
    assert flagged.sum() == (scores > middle).sum() and 0 < flagged.sum() < np.isfinite(scores).sum()
    assert not flagged[np.isnan(scores)].any()  # cells not scored are never marked
    assert "langcell_unknown" not in annotate(cells, tiny_checkpoint, batch_size=8, unknown_threshold=None).obs
    with pytest.raises(LangCellInputError, match="unknown_threshold"):
        annotate(cells, tiny_checkpoint, unknown_threshold=1.5)
