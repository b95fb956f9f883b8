"""Helpers shared by the tokenization tests: small AnnData and a slow reference ranking."""

import anndata
import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightning_langcell.tokenization import GeneVocabulary

FIXTURE_FILES = ("real_pbmc68k_50cells", "synthetic_nb_40cells")


def genes_with_medians(vocabulary: GeneVocabulary, n: int) -> list[str]:
    """``n`` vocabulary genes with distinct medians (no accidental ties)."""
    _, first = np.unique(vocabulary.gene_medians, return_index=True)
    return [str(vocabulary.gene_ids[i]) for i in np.sort(first)[:n]]


def counts_adata(x, var_names, obs: dict | None = None, var: dict | None = None, obs_names=None) -> anndata.AnnData:
    """AnnData with float32 CSR counts ``x`` (cells x genes)."""
    x = sp.csr_matrix(np.asarray(x, dtype=np.float32))
    obs_names = obs_names if obs_names is not None else [f"cell_{i}" for i in range(x.shape[0])]
    return anndata.AnnData(
        X=x,
        obs=pd.DataFrame(obs or {}, index=pd.Index(obs_names, dtype=object)),
        var=pd.DataFrame(var or {}, index=pd.Index(list(var_names), dtype=object)),
    )


def expected_tokens(vocabulary: GeneVocabulary, genes, counts, n_counts: float) -> list[int]:
    """Reference ranking of one cell, written the slow obvious way (value desc, token asc)."""
    rows = []
    for gene, count in zip(genes, counts):
        if count > 0 and gene in vocabulary.gene_median:
            value = count / n_counts * 10000 / vocabulary.gene_median[gene]
            rows.append((-value, vocabulary.token_to_id[gene]))
    return [token for _, token in sorted(rows)]
