"""Open-set scores: the per-cell unknown score and the AUROC of a left-out type (values by hand)."""

import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.open_set import left_out_auroc, unknown_score


def test_unknown_score_values():
    probabilities = np.array([[0.7, 0.2, 0.1],
                              [0.4, 0.35, 0.25],
                              [np.nan, np.nan, np.nan]])
    np.testing.assert_allclose(unknown_score(probabilities), [1 - 0.5, 1 - 0.05, np.nan])
    np.testing.assert_allclose(unknown_score(probabilities, "max_probability"), [0.3, 0.6, np.nan])
    with pytest.raises(LangCellInputError, match="kind"):
        unknown_score(probabilities, "entropy")
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
    probabilities = np.sort(result.obsm["langcell_probabilities"], axis=1)
    expected = 1 - (probabilities[:, -1] - probabilities[:, -2])
    np.testing.assert_allclose(result.obs["langcell_unknown_score"], expected, rtol=1e-6)  # NaN rows included
    assert result.obs["langcell_unknown_score"].isna().sum() == 2
