"""compute_gene_medians: exact on a hand-computed example, histogram approximation, reuse."""

import json

import numpy as np
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tokenization import CellTokenizer, compute_gene_medians, write_gene_medians

from tokenization_helpers import counts_adata, expected_tokens

A, B, C = "ENSG00000075624", "ENSG00000198851", "ENSG00000111640"


def _corpus():
    # values = count / n_counts * 10000:
    # A: 1000 (c0), 5000 (c1), 1500 (c4)        -> median 1500
    # B: 3000 (c0), 2000 (c2), 1000 (c4), 6000 (c5) -> median (2000 + 3000) / 2 = 2500
    # c3 has filter_pass 0 (skipped); C is never detected (no median)
    x = np.array([[1, 3, 0], [2, 0, 0], [0, 1, 0], [4, 1, 0], [3, 2, 0], [0, 6, 0]])
    obs = {"n_counts": [10.0, 4.0, 5.0, 8.0, 20.0, 10.0], "filter_pass": [1, 1, 1, 0, 1, 1]}
    return counts_adata(x, [A, B, C], obs=obs)


def test_exact_medians_by_hand():
    assert compute_gene_medians(_corpus()) == {A: 1500.0, B: 2500.0}


def test_medians_stream_over_inputs_and_chunks(tmp_path):
    adata = _corpus()
    first, second = adata[:3].copy(), adata[3:].copy()
    second.write_h5ad(tmp_path / "second.h5ad")
    assert compute_gene_medians([first, tmp_path / "second.h5ad"], chunk_size=1) == {A: 1500.0, B: 2500.0}


def test_histogram_medians_are_within_one_percent():
    rng = np.random.default_rng(0)
    x = rng.poisson(3.0, size=(400, 3)).astype(float)
    adata = counts_adata(x, [A, B, C], obs={"n_counts": rng.integers(500, 5000, size=400).astype(float)})
    exact = compute_gene_medians(adata)
    approx = compute_gene_medians(adata, method="histogram")
    assert exact.keys() == approx.keys() == {A, B, C}
    for gene in exact:
        assert approx[gene] == pytest.approx(exact[gene], rel=0.015)


def test_user_medians_drive_the_tokenizer(tmp_path, vocabulary):
    medians = compute_gene_medians(_corpus())
    write_gene_medians(medians, tmp_path / "medians.json")
    assert json.loads((tmp_path / "medians.json").read_text()) == medians
    tokenizer = CellTokenizer(gene_median=tmp_path / "medians.json")
    x = np.array([[2, 5, 7]])
    tokens = tokenizer.tokenize(counts_adata(x, [A, B, C], obs={"n_counts": [100.0]}))[0]
    # C has no median -> not tokenised; A: 200 / 1500 = 0.133 < B: 500 / 2500 = 0.2 -> B first
    assert tokens.tolist() == [vocabulary.token_to_id[B], vocabulary.token_to_id[A]]
    assert tokenizer.vocabulary.checksum == vocabulary.checksum
    assert tokenizer.settings()["gene_median_checksum"] != vocabulary.median_checksum
    assert expected_tokens(tokenizer.vocabulary, [A, B], [2, 5], 100.0) == tokens.tolist()


def test_bad_median_arguments():
    with pytest.raises(LangCellInputError, match="method"):
        compute_gene_medians(_corpus(), method="tdigest")
    with pytest.raises(LangCellInputError, match="No inputs"):
        compute_gene_medians([])
