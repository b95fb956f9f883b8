"""The benchmarks' offline subsets (``benchmarks.pair_scores`` + ``class_scaling_quality``) give
the predictions ``annotate`` gives on each subset of classes, exact and top-k."""

import anndata
import numpy as np
import pytest

from benchmarks.class_scaling_quality import subset_predictions
from benchmarks.pair_scores import pair_scores
from lightning_langcell.inference import annotate

CLASSES = ["CL:0000236", "CL:0000576", "CL:0000623", "CL:0000451", "CL:0000794", "CL:0000900", "CL:0000084"]


@pytest.mark.parametrize("count, k", [(7, None), (5, None), (5, 2), (7, 3), (7, 7)])
def test_subset_predictions_equal_annotate(pbmc_h5ad, tiny_checkpoint, tmp_path, count, k):
    cells = anndata.read_h5ad(pbmc_h5ad)
    scored = pair_scores(cells, CLASSES, model=str(tiny_checkpoint), batch_size=16, text_cache=tmp_path)
    predicted = subset_predictions(scored["ctc_probs"], scored["match_prob"], np.arange(count), k)
    result = annotate(cells, tiny_checkpoint, classes=CLASSES[:count], top_k=k, label_column=None,
                      text_cache=tmp_path)
    expected = result.obsm["langcell_probabilities"][scored["rows"]].argmax(axis=1)
    np.testing.assert_array_equal(predicted, expected)
    assert len(scored["rows"]) == 48 and len(set(predicted)) > 1  # cells 3 and 29 are not scored
