"""The labelled real-cell datasets bundled in ``data/cells/`` (see data/cells/SOURCE.md)."""

from __future__ import annotations

import importlib.util
import os
import re
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

# name -> (organism, shape, label counts (SOURCE.md figures), total of X, total of n_counts)
EXPECTED = {
    "pbmc3k": ("human", (2638, 1778), {
        "Naive CD4 T": 697, "Memory CD4 T": 483, "CD14+ Mono": 480, "B": 344, "CD8 T": 271,
        "FCGR3A+ Mono": 162, "NK": 155, "DC": 32, "Platelet": 14,
    }, 1_379_193, 6_254_880),
    "pbmc68k_reduced": ("human", (700, 690), {
        "Dendritic": 240, "CD14+ Monocyte": 129, "CD19+ B": 95, "CD4+/CD25 T Reg": 68,
        "CD8+ Cytotoxic T": 54, "CD8+/CD45RA+ Naive Cytotoxic": 43, "CD56+ NK": 31,
        "CD4+/CD45RO+ Memory": 19, "CD34+": 13, "CD4+/CD45RA+/CD25- Naive T": 8,
    }, 462_216, 2_454_509),
    "garnett_pbmc_facs": ("human", (800, 10123), {
        "B cells": 400, "CD4 T cells": 264, "CD8 T cells": 136,
    }, 1_058_157, 1_134_300),
    "baron_mouse_pancreas": ("mouse", (822, 12412), {
        "beta": 343, "ductal": 236, "delta": 85, "endothelial": 72, "quiescent_stellate": 29,
        "macrophage": 17, "gamma": 14, "alpha": 9, "activated_stellate": 4, "immune_other": 4,
        "T_cell": 4, "schwann": 3, "B_cell": 2,
    }, 2_839_399, 3_075_159),
    "zeisel_mouse_brain": ("mouse", (550, 14305), {
        label: 50 for label in (
            "Astrocyte1", "Astrocyte2", "Endothelial2", "Hippocampus_Excitatory", "Interneuron",
            "Oligo_MF", "Oligo_Mature", "Pvm", "S1_Excitatory_L23", "S1_Excitatory_L45a", "Vsmc",
        )
    }, 5_239_418, 6_193_121),
    "mouse_lung_injury": ("mouse", (549, 1738), {
        "Other Injured AEC2": 436, "Naive AEC2": 31, "Basal": 17,
        "Injured AEC2: Transdifferentiating": 17, "Club": 15, "Injured AEC2: Cell Cycle Arrest": 15,
        "Injured AEC2: Proliferating": 6, "Macrophage": 5, "Endothelial/Fibroblast": 4,
        "Naive AEC1": 2, "Ciliated": 1,
    }, 754_929, 4_295_121),
}
EXTRA_COLUMNS = {
    "pbmc68k_reduced": {"bulk_labels", "louvain"},
    "zeisel_mouse_brain": {"cell_class"},
    "mouse_lung_injury": {"experiment", "sample_type"},
}
CL_ID = re.compile(r"^CL:\d{7}$")
MAX_TOTAL_BYTES = 9_000_000  # all h5ad files together (8.75 MB when made)


@pytest.fixture(scope="module")
def cells_dir(repo_root: Path) -> Path:
    return repo_root / "data" / "cells"


@pytest.fixture(scope="module")
def bundled(cells_dir: Path) -> dict[str, ad.AnnData]:
    return {name: ad.read_h5ad(cells_dir / f"{name}.h5ad") for name in EXPECTED}


@pytest.fixture(scope="module")
def ontology_table(cells_dir: Path) -> pd.DataFrame:
    return pd.read_csv(cells_dir / "cell_type_ontology.tsv", sep="\t", dtype=str)


def test_folder_contents_and_size_budget(cells_dir: Path):
    h5ads = sorted(p.name for p in cells_dir.glob("*.h5ad"))
    assert h5ads == sorted(f"{name}.h5ad" for name in EXPECTED)
    assert not list(cells_dir.glob("*actinn*"))  # GPL-3: never bundled
    for note in ("SOURCE.md", "LICENSES.md", "cell_type_ontology.tsv"):
        assert (cells_dir / note).is_file()
    assert sum((cells_dir / name).stat().st_size for name in h5ads) <= MAX_TOTAL_BYTES


@pytest.mark.parametrize("name", list(EXPECTED))
def test_counts_shape_and_labels(bundled, name):
    organism, shape, label_counts, x_total, n_counts_total = EXPECTED[name]
    adata = bundled[name]
    assert adata.shape == shape
    assert isinstance(adata.X, sp.csr_matrix) and adata.X.dtype == np.int32
    assert adata.X.data.min() > 0  # raw counts, explicit zeros absent
    assert int(adata.X.sum()) == x_total
    assert adata.obs["cell_type"].value_counts().to_dict() == label_counts
    assert set(adata.obs["dataset"]) == {name}
    assert set(adata.obs["organism"]) == {organism}
    assert EXTRA_COLUMNS.get(name, set()) <= set(adata.obs.columns)
    if name == "pbmc68k_reduced":
        assert (adata.obs["bulk_labels"].astype(str) == adata.obs["cell_type"].astype(str)).all()


@pytest.mark.parametrize("name", list(EXPECTED))
def test_library_size_covers_all_source_genes(bundled, name):
    adata = bundled[name]
    n_counts = adata.obs["n_counts"]
    assert n_counts.dtype == np.float64
    assert float(n_counts.sum()) == EXPECTED[name][4]
    assert np.array_equal(n_counts, np.rint(n_counts))
    row_sums = np.asarray(adata.X.sum(axis=1)).ravel()
    assert (row_sums > 0).all()
    assert (n_counts.to_numpy() >= row_sums).all()


def test_library_size_values(bundled):
    """First cells: library size over all genes vs. counts kept (values from the sources)."""
    first = {name: (bundled[name].obs_names[0], bundled[name].obs["n_counts"].iloc[0],
                    int(bundled[name].X[0].sum())) for name in EXPECTED}
    assert first["pbmc3k"] == ("AAACATACAACCAC", 2419.0, 399)  # nCount_RNA; 2,000 HVGs only
    assert first["pbmc68k_reduced"] == ("AAAGCCTGGCTAAC-1", 2557.0, 599)
    assert first["mouse_lung_injury"] == ("ATIIinjured2expt2_GTGCAGCCAAGGTTCT", 5187.0, 2773)
    assert first["garnett_pbmc_facs"] == ("AAGCACTGCACACA-1", 737.0, 672)
    assert first["zeisel_mouse_brain"] == ("1772071035_H02", 24621.0, 21131)


@pytest.mark.parametrize("name", list(EXPECTED))
def test_gene_identifiers(bundled, name):
    organism = EXPECTED[name][0]
    var = bundled[name].var
    assert list(var.columns) == ["ensembl_id"]  # var names are the source gene symbols
    assert var.index.is_unique
    ids = var["ensembl_id"].astype(str)
    if organism == "human":  # every kept human gene has its vocabulary id, once
        assert ids.str.match(r"^ENSG\d{11}$").all() and ids.is_unique
    else:  # species-native ids, blank where the source had none; never pre-mapped to human
        assert (ids.str.match(r"^ENSMUSG\d{11}$") | (ids == "")).all()
        assert (ids != "").mean() > 0.98


@pytest.mark.parametrize("name", list(EXPECTED))
def test_cell_ontology_ids(bundled, ontology_table, name):
    obs = bundled[name].obs
    assert obs["cell_type_ontology_term_id"].astype(str).str.match(CL_ID.pattern).all()
    table = ontology_table[ontology_table["dataset"] == name]
    assert set(table["label"]) == set(EXPECTED[name][2])
    curated = dict(zip(table["label"], table["cell_type_ontology_term_id"]))
    pairs = obs[["cell_type", "cell_type_ontology_term_id"]].astype(str).drop_duplicates()
    assert dict(zip(pairs["cell_type"], pairs["cell_type_ontology_term_id"])) == curated


def test_ontology_table_choices(ontology_table):
    assert ontology_table["cell_type_ontology_term_id"].str.match(CL_ID.pattern).all()
    assert not ontology_table[["dataset", "label"]].duplicated().any()
    assert (ontology_table["cl_label"].str.len() > 0).all()
    chosen = {(d, l): t for d, l, t in ontology_table.iloc[:, :3].itertuples(index=False)}
    assert chosen[("pbmc3k", "Naive CD4 T")] == "CL:0000895"
    assert chosen[("pbmc3k", "FCGR3A+ Mono")] == "CL:0002396"
    assert chosen[("garnett_pbmc_facs", "CD8 T cells")] == "CL:0000625"
    assert chosen[("baron_mouse_pancreas", "beta")] == "CL:0000169"
    # sub-states of one type share its term
    astrocytes = {chosen[("zeisel_mouse_brain", f"Astrocyte{i}")] for i in (1, 2)}
    assert astrocytes == {"CL:0012000"}
    assert chosen[("mouse_lung_injury", "Naive AEC2")] == "CL:0002063"
    assert chosen[("mouse_lung_injury", "Other Injured AEC2")] == "CL:0002063"


def _load_script(repo_root: Path):
    path = repo_root / "scripts" / "prepare_bundled_data.py"
    spec = importlib.util.spec_from_file_location("prepare_bundled_data", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def test_script_table_matches_bundled_tsv(repo_root, ontology_table):
    script = _load_script(repo_root)
    from_script = {
        (dataset.name, label): term
        for dataset in script.DATASETS
        for label, term in dataset.cell_ontology.items()
    }
    from_tsv = {(d, l): t for d, l, t in ontology_table.iloc[:, :3].itertuples(index=False)}
    assert from_script == from_tsv


SHARED_DATA = Path(os.environ.get("LANGCELL_SHARED_DATA", "/work/shared/data"))


@pytest.mark.skipif(not (SHARED_DATA / "geneformer-30m").is_dir(),
                    reason="the shared source data (LANGCELL_SHARED_DATA) is not available")
def test_rebuild_from_sources_is_identical(repo_root, bundled):
    """Rebuilding from the shared sources gives the bundled files' exact contents."""
    script = _load_script(repo_root)
    genes = script.GeneVocabularyMap(SHARED_DATA)
    cl = script.load_cell_ontology(SHARED_DATA)
    for dataset in script.DATASETS:
        rebuilt = script.build_dataset(SHARED_DATA, dataset, genes, cl)
        rebuilt.strings_to_categoricals()
        stored = bundled[dataset.name]
        assert (rebuilt.X != stored.X).nnz == 0, dataset.name
        assert rebuilt.obs.equals(stored.obs), dataset.name
        assert rebuilt.var.equals(stored.var), dataset.name


@pytest.mark.skipif(not (SHARED_DATA / "geneformer-30m").is_dir(),
                    reason="the shared source data (LANGCELL_SHARED_DATA) is not available")
def test_tokens_equal_those_of_the_full_source(repo_root, bundled):
    """Dropping genes loses nothing: the library's tokens of every cell equal the full source's."""
    from lightning_langcell.tokenization import CellTokenizer

    script = _load_script(repo_root)
    tokenizer = CellTokenizer()
    for dataset in script.DATASETS:
        source = ad.read_h5ad(SHARED_DATA / dataset.source_file)
        stored = bundled[dataset.name]
        source.obs["n_counts"] = stored.obs["n_counts"].to_numpy()  # some sources are subsets
        if "ensembl_id" not in source.var:  # symbol-only pbmc68k: ids as bundled
            ids = stored.var["ensembl_id"].astype(str).reindex(source.var_names)
            source.var["ensembl_id"] = ids.fillna("").to_numpy()
        from_source = tokenizer.tokenize(source)
        from_bundled = tokenizer.tokenize(stored)
        assert len(from_bundled) == stored.n_obs
        assert all(np.array_equal(a, b) for a, b in zip(from_source, from_bundled)), dataset.name
