"""Builds ``pbmc_50cells.h5ad``, the corpus tests' input, from the tokenizer parity fixture.

Source: ``langcell-official-tokenizer/real_pbmc68k_50cells.h5ad`` — 50 real PBMC cells of
scanpy's pbmc68k_reduced (BSD-3) with integer counts rebuilt exactly. Changes made here:
obs columns for the corpus metadata (cell_type from bulk_labels, tissue, donor_id, batch),
cell 3 gets ``filter_pass = 0`` (skipped) and cell 29 all-zero counts (an empty cell).
Run from the repo root:

    python tests/data/corpus_pbmc68k/make_data.py /path/to/real_pbmc68k_50cells.h5ad
"""

import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

HERE = Path(__file__).parent


def main(source: str) -> None:
    cells = ad.read_h5ad(source)
    n = cells.n_obs
    obs = pd.DataFrame(index=cells.obs_names)
    obs["n_counts"] = cells.obs["n_counts"].to_numpy()
    obs["filter_pass"] = cells.obs["filter_pass"].to_numpy()
    obs.loc[obs.index[3], "filter_pass"] = 0
    obs["cell_type"] = cells.obs["bulk_labels"].astype(str).astype("category")
    obs["tissue"] = pd.Categorical(["blood"] * n)
    obs["tissue_ontology_term_id"] = pd.Categorical(["UBERON:0000178"] * n)
    obs["donor_id"] = pd.Categorical(["donor_1", "donor_2"] * (n // 2))
    obs["batch"] = pd.Categorical(["b1"] * (n // 2) + ["b2"] * (n - n // 2))
    counts = cells.X.tolil()
    counts[29, :] = 0
    counts = counts.tocsr().astype(np.float32)
    counts.eliminate_zeros()
    var = pd.DataFrame({"ensembl_id": cells.var["ensembl_id"].to_numpy()}, index=cells.var_names)
    ad.AnnData(X=counts, obs=obs, var=var).write_h5ad(HERE / "pbmc_50cells.h5ad", compression="gzip")


if __name__ == "__main__":
    main(sys.argv[1])
