"""Build the small labelled real-cell datasets bundled in ``data/cells/`` (not in the package).

Reads the MIT/BSD datasets of the shared data folder (default ``/work/shared/data``), keeps only
the genes that can enter the Geneformer-30M vocabulary, adds a library size computed before that
gene subset, curated Cell Ontology ids and a few metadata columns, and writes one gzip-compressed
h5ad per dataset plus ``cell_type_ontology.tsv``. Count values are copied unchanged.

    python scripts/prepare_bundled_data.py [SHARED_DATA_DIR] [--out data/cells]

Gene subset (what "can enter the vocabulary" means here), then genes with no count in any cell
are dropped too:
- human: the gene's Ensembl id is a key of ``gene_median_dictionary.json``. The id is the source's
  ``var.ensembl_id``; where that is blank (all of symbol-only pbmc68k; 5 pbmc3k and 45 garnett
  genes) it is filled with the id of ``gene_name_id_dict.json`` for the symbol.
- mouse: the mouse symbol has a human ortholog (celltypist Ensembl105 table) whose symbol maps,
  through GENCODE human genes or ``gene_name_id_dict.json``, to a key of the median dictionary
  (or the symbol itself is a vocabulary human symbol). Mouse genes keep their own (ENSMUSG) id,
  blank where the source had none: the tokenizer does the mouse -> human mapping itself.
"""

from __future__ import annotations

import argparse
import gzip
import json
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata.io import write_elem

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = Path("/work/shared/data")
CL_FILE = "cell_ontology/CL-ontology-v2026-03-26.json.gz"
NEVER_BUNDLE = frozenset({"actinn_mouse_blood"})  # GPL-3: read from the shared folder only
# gzip level 9 with the byte-shuffle filter (lossless, readable by any HDF5 build). X gets large
# chunks (its datasets are resizable, so a chunk may exceed the data): ~15% smaller than h5py's
# own guess.
H5AD_OPTIONS = {"compression": "gzip", "compression_opts": 9, "shuffle": True}
X_OPTIONS = {**H5AD_OPTIONS, "chunks": (1 << 18,)}


@dataclass(frozen=True)
class BundledDataset:
    """How one shared dataset becomes ``data/cells/<name>.h5ad``."""

    name: str
    folder: str
    organism: str  # "human" or "mouse"
    label_column: str
    library_size_column: str | None  # None: row sums of the full source matrix
    extra_columns: tuple[str, ...] = ()
    cell_ontology: dict[str, str] = field(default_factory=dict)  # author label -> CL id

    @property
    def source_file(self) -> str:
        return f"{self.folder}/{self.folder}.h5ad"


# Curated by hand from the CL labels and definitions (CL release 2026-03-26). Sub-states of one type
# share a term on purpose (Astrocyte1/2, the AEC2 injury states, quiescent/activated stellate).
DATASETS = (
    BundledDataset(
        name="pbmc3k",
        folder="pbmc3k_clustifyr",
        organism="human",
        label_column="cell_type",
        library_size_column="nCount_RNA",
        cell_ontology={
            "Naive CD4 T": "CL:0000895",  # naive thymus-derived CD4-positive, alpha-beta T cell
            "Memory CD4 T": "CL:0000897",  # CD4-positive, alpha-beta memory T cell
            "CD14+ Mono": "CL:0001054",  # CD14-positive monocyte
            "B": "CL:0000236",  # B cell
            "CD8 T": "CL:0000625",  # CD8-positive, alpha-beta T cell
            "FCGR3A+ Mono": "CL:0002396",  # CD14-low, CD16-positive monocyte
            "NK": "CL:0000623",  # natural killer cell
            "DC": "CL:0000451",  # dendritic cell
            "Platelet": "CL:0000233",  # platelet
        },
    ),
    BundledDataset(
        name="pbmc68k_reduced",
        folder="pbmc68k_reduced_counts",
        organism="human",
        label_column="bulk_labels",
        library_size_column="n_counts",
        extra_columns=("bulk_labels", "louvain"),
        cell_ontology={
            "Dendritic": "CL:0000451",  # dendritic cell
            "CD14+ Monocyte": "CL:0001054",  # CD14-positive monocyte
            "CD19+ B": "CL:0000236",  # B cell
            "CD4+/CD25 T Reg": "CL:0000792",  # CD4+, CD25+, alpha-beta regulatory T cell
            "CD8+ Cytotoxic T": "CL:0000794",  # CD8-positive, alpha-beta cytotoxic T cell
            "CD8+/CD45RA+ Naive Cytotoxic": "CL:0000900",  # naive thymus-derived CD8+ ab T cell
            "CD56+ NK": "CL:0000623",  # natural killer cell
            "CD4+/CD45RO+ Memory": "CL:0000897",  # CD4-positive, alpha-beta memory T cell
            "CD34+": "CL:0000837",  # hematopoietic multipotent progenitor cell (CD34+)
            "CD4+/CD45RA+/CD25- Naive T": "CL:0000895",  # naive thymus-derived CD4+ ab T cell
        },
    ),
    BundledDataset(
        name="garnett_pbmc_facs",
        folder="garnett_pbmc_facs",
        organism="human",
        label_column="cell_type",
        library_size_column=None,
        cell_ontology={
            "B cells": "CL:0000236",  # B cell
            "CD4 T cells": "CL:0000624",  # CD4-positive, alpha-beta T cell
            "CD8 T cells": "CL:0000625",  # CD8-positive, alpha-beta T cell
        },
    ),
    BundledDataset(
        name="baron_mouse_pancreas",
        folder="baron_mouse_pancreas",
        organism="mouse",
        label_column="cell_type",
        library_size_column=None,
        cell_ontology={
            "beta": "CL:0000169",  # type B pancreatic cell
            "ductal": "CL:0002079",  # pancreatic ductal cell
            "delta": "CL:0000173",  # pancreatic D cell
            "endothelial": "CL:0000115",  # endothelial cell
            "quiescent_stellate": "CL:0002410",  # pancreatic stellate cell
            "macrophage": "CL:0000235",  # macrophage
            "gamma": "CL:0002275",  # pancreatic PP cell
            "alpha": "CL:0000171",  # pancreatic A cell
            "activated_stellate": "CL:0002410",  # pancreatic stellate cell
            "immune_other": "CL:0000738",  # leukocyte
            "T_cell": "CL:0000084",  # T cell
            "schwann": "CL:0002573",  # Schwann cell
            "B_cell": "CL:0000236",  # B cell
        },
    ),
    BundledDataset(
        name="zeisel_mouse_brain",
        folder="zeisel_mouse_brain_gpsfish",
        organism="mouse",
        label_column="cell_type",
        library_size_column=None,
        extra_columns=("cell_class",),
        cell_ontology={
            "Astrocyte1": "CL:0012000",  # astrocyte of the forebrain (S1 cortex + CA1)
            "Astrocyte2": "CL:0012000",  # astrocyte of the forebrain
            "Endothelial2": "CL:2000044",  # brain microvascular endothelial cell
            "Hippocampus_Excitatory": "CL:1001571",  # hippocampal pyramidal neuron (CA1)
            "Interneuron": "CL:0011005",  # GABAergic interneuron
            "Oligo_MF": "CL:4072002",  # myelin-forming oligodendrocyte
            "Oligo_Mature": "CL:4072003",  # mature myelinating oligodendrocyte
            "Pvm": "CL:0000881",  # perivascular macrophage
            "S1_Excitatory_L23": "CL:4030059",  # L2/3 IT projecting glutamatergic neuron
            "S1_Excitatory_L45a": "CL:4030062",  # L4/5 IT projecting glutamatergic neuron
            "Vsmc": "CL:0000359",  # vascular associated smooth muscle cell
        },
    ),
    BundledDataset(
        name="mouse_lung_injury",
        folder="mouse_lung_injury_clustifyr",
        organism="mouse",
        label_column="cell_type",
        library_size_column="nUMI",
        extra_columns=("experiment", "sample_type"),
        cell_ontology={
            "Other Injured AEC2": "CL:0002063",  # pulmonary alveolar type 2 cell
            "Naive AEC2": "CL:0002063",
            "Injured AEC2: Transdifferentiating": "CL:0002063",
            "Injured AEC2: Cell Cycle Arrest": "CL:0002063",
            "Injured AEC2: Proliferating": "CL:4033080",  # cycling pulmonary alveolar type 2 cell
            "Basal": "CL:0002633",  # respiratory basal cell
            "Club": "CL:0000158",  # club cell
            "Macrophage": "CL:0000235",  # macrophage
            "Endothelial/Fibroblast": "CL:0000499",  # stromal cell (mixed label)
            "Naive AEC1": "CL:0002062",  # pulmonary alveolar type 1 cell
            "Ciliated": "CL:1000271",  # lung multiciliated epithelial cell
        },
    ),
)


class GeneVocabularyMap:
    """Which source genes can reach a Geneformer-30M Ensembl id (median dictionary keys)."""

    def __init__(self, source: Path) -> None:
        self.vocabulary = set(
            json.loads((source / "geneformer-30m/gene_median_dictionary.json").read_text())
        )
        self.symbol_to_id: dict[str, str] = json.loads(
            (source / "geneformer-30m/gene_name_id_dict.json").read_text()
        )
        human = pd.read_csv(
            source / "gene_maps/genes_homo_sapiens.csv.gz", header=None, usecols=[0, 1],
            names=["ensembl_id", "symbol"],
        )
        self.human_symbol_ids: dict[str, set[str]] = {}
        for ensembl_id, symbol in zip(human["ensembl_id"], human["symbol"]):
            self.human_symbol_ids.setdefault(symbol, set()).add(ensembl_id)
        for symbol, ensembl_id in self.symbol_to_id.items():
            self.human_symbol_ids.setdefault(symbol, set()).add(ensembl_id)
        orthologs = pd.read_csv(
            source / "gene_maps/celltypist_Ensembl105_Human2Mouse_Genes.csv.gz", header=None,
            names=["human", "mouse"], keep_default_na=False, dtype=str,
        )
        self.mouse_to_human: dict[str, set[str]] = {}
        for human_symbol, mouse_symbol in zip(orthologs["human"], orthologs["mouse"]):
            if mouse_symbol:
                self.mouse_to_human.setdefault(mouse_symbol, set()).add(human_symbol)

    def human_by_id(self, ensembl_ids: pd.Series) -> np.ndarray:
        """Mask [genes]: the human Ensembl id is in the vocabulary."""
        return ensembl_ids.isin(self.vocabulary).to_numpy()

    def human_symbol_ids_in_vocabulary(self, symbols: pd.Index) -> pd.Series:
        """Vocabulary Ensembl id per human symbol via ``gene_name_id_dict`` ('' when none)."""
        ids = [self.symbol_to_id.get(s, "") for s in symbols]
        return pd.Series([i if i in self.vocabulary else "" for i in ids], index=symbols)

    def mouse_by_ortholog(self, symbols: pd.Index) -> np.ndarray:
        """Mask [genes]: some human ortholog of the mouse symbol has a vocabulary id."""
        return np.array([
            any(
                ensembl_id in self.vocabulary
                for human in self.mouse_to_human.get(symbol, ())
                for ensembl_id in self.human_symbol_ids.get(human, ())
            )
            for symbol in symbols
        ])


def load_cell_ontology(source: Path) -> dict[str, dict]:
    """CL terms: id -> {"label", "description", "deprecated", ...}."""
    with gzip.open(source / CL_FILE, "rt") as handle:
        return json.load(handle)


def check_ontology_terms(dataset: BundledDataset, labels: pd.Series, cl: dict[str, dict]) -> None:
    """Every label has a curated term; every term exists and is not deprecated."""
    missing = sorted(set(labels) - set(dataset.cell_ontology))
    unused = sorted(set(dataset.cell_ontology) - set(labels))
    if missing or unused:
        raise SystemExit(f"{dataset.name}: labels without a CL id {missing}; unknown {unused}")
    for label, term in dataset.cell_ontology.items():
        if term not in cl:
            raise SystemExit(f"{dataset.name}: {label!r} -> {term} is not in the CL file")
        if cl[term]["deprecated"]:
            raise SystemExit(f"{dataset.name}: {label!r} -> {term} is deprecated")


def library_sizes(source_adata: ad.AnnData, dataset: BundledDataset) -> np.ndarray:
    """Counts per cell over ALL source genes (float64), from the named column or the row sums."""
    row_sums = np.asarray(source_adata.X.sum(axis=1), dtype=np.float64).ravel()
    if dataset.library_size_column is None:
        return row_sums
    sizes = source_adata.obs[dataset.library_size_column].to_numpy(dtype=np.float64)
    if np.any(sizes < row_sums) or np.any(sizes != np.rint(sizes)):
        raise SystemExit(f"{dataset.name}: {dataset.library_size_column} is not a total count")
    return sizes


def gene_table(source_adata: ad.AnnData, dataset: BundledDataset, genes: GeneVocabularyMap):
    """(mask of kept genes [n_genes], var DataFrame of the kept genes).

    Kept: the gene can reach the vocabulary (human: by its id, a blank id filled from Geneformer's
    ``gene_name_id_dict``; mouse: by ortholog or a vocabulary human symbol) AND has a non-zero
    count in some cell (a gene that is zero everywhere never becomes a token: dropping it only
    saves space).
    """
    symbols = source_adata.var_names
    symbol_ids = genes.human_symbol_ids_in_vocabulary(symbols)
    if "ensembl_id" in source_adata.var:
        ensembl_ids = source_adata.var["ensembl_id"].astype(object).fillna("").astype(str)
    else:  # symbol-only source (pbmc68k)
        ensembl_ids = pd.Series("", index=symbols)
    if dataset.organism == "human":  # a blank human id takes Geneformer's id for the symbol
        ensembl_ids = ensembl_ids.where(ensembl_ids != "", symbol_ids)
        keep = genes.human_by_id(ensembl_ids)
    else:  # ortholog, or a human-style symbol in the vocabulary (e.g. "PISD" beside "Pisd")
        keep = genes.mouse_by_ortholog(symbols) | (symbol_ids != "").to_numpy()
    detected = np.asarray((source_adata.X != 0).sum(axis=0)).ravel() > 0
    keep = keep & detected
    var = pd.DataFrame(  # the symbols are the var names (no copy: each string costs ~24 bytes of HDF5 heap)
        {"ensembl_id": np.asarray(ensembl_ids[keep], dtype=object)},
        index=pd.Index(np.asarray(symbols[keep], dtype=object)),
    )
    return keep, var


def build_dataset(
    source: Path, dataset: BundledDataset, genes: GeneVocabularyMap, cl: dict[str, dict]
) -> ad.AnnData:
    """One bundled AnnData: integer counts of the vocabulary genes, labels, CL ids, library size."""
    src = ad.read_h5ad(source / dataset.source_file)
    counts = sp.csr_matrix(src.X)
    if counts.data.size and (counts.data.min() < 0 or np.any(counts.data != np.rint(counts.data))):
        raise SystemExit(f"{dataset.name}: X is not raw integer counts")
    labels = src.obs[dataset.label_column].astype(str)
    check_ontology_terms(dataset, labels, cl)
    keep, var = gene_table(src, dataset, genes)

    obs = pd.DataFrame(index=pd.Index(np.asarray(src.obs_names, dtype=object)))
    obs["n_counts"] = library_sizes(src, dataset)
    obs["cell_type"] = pd.Categorical(labels.to_numpy())
    obs["cell_type_ontology_term_id"] = pd.Categorical(labels.map(dataset.cell_ontology).to_numpy())
    obs["dataset"] = pd.Categorical([dataset.name] * src.n_obs)
    obs["organism"] = pd.Categorical([dataset.organism] * src.n_obs)
    for column in dataset.extra_columns:
        obs[column] = pd.Categorical(src.obs[column].astype(str).to_numpy())

    x = sp.csr_matrix(counts[:, np.flatnonzero(keep)].astype(np.int32))
    x.sort_indices()
    return ad.AnnData(X=x, obs=obs, var=var)


def write_bundled_h5ad(adata: ad.AnnData, target: Path) -> None:
    """Write ``adata`` as a compressed h5ad (standard anndata encoding), read it back, compare.

    Most of a small h5ad is variable-length strings (gene and cell names), which HDF5 cannot
    compress; ``libver=("v110", "latest")`` (HDF5 >= 1.10 readers) trims the per-object overhead.
    """
    tmp = target.with_name(target.name + ".tmp")
    adata.strings_to_categoricals()  # what write_h5ad does anyway (non-unique string columns)
    with h5py.File(tmp, "w", libver=("v110", "latest")) as handle:
        shell = ad.AnnData(obs=adata.obs, var=adata.var)  # everything but X
        write_elem(handle, "/", shell, dataset_kwargs=H5AD_OPTIONS)
        write_elem(handle, "X", adata.X, dataset_kwargs=X_OPTIONS)
    back = ad.read_h5ad(tmp)
    same = (
        back.X.dtype == adata.X.dtype and (back.X != adata.X).nnz == 0
        and back.obs.equals(adata.obs) and back.var.equals(adata.var)
    )
    if not same:
        tmp.unlink()
        raise SystemExit(f"{target.name}: the written file does not read back identically")
    tmp.replace(target)


def ontology_table(cl: dict[str, dict]) -> pd.DataFrame:
    """One row per (dataset, author label): the curated CL id and its CL label."""
    rows = [
        (dataset.name, label, term, cl[term]["label"])
        for dataset in DATASETS
        for label, term in dataset.cell_ontology.items()
    ]
    columns = ["dataset", "label", "cell_type_ontology_term_id", "cl_label"]
    return pd.DataFrame(rows, columns=columns)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE,
                        help="shared data folder (holds the dataset folders, gene_maps, ...)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "data" / "cells")
    args = parser.parse_args(argv)

    if any(dataset.folder in NEVER_BUNDLE for dataset in DATASETS):
        raise SystemExit("a GPL dataset is listed for bundling; only MIT/BSD data may be copied")
    args.out.mkdir(parents=True, exist_ok=True)
    genes = GeneVocabularyMap(args.source)
    cl = load_cell_ontology(args.source)
    total = 0
    for dataset in DATASETS:
        adata = build_dataset(args.source, dataset, genes, cl)
        target = args.out / f"{dataset.name}.h5ad"
        write_bundled_h5ad(adata, target)
        size = target.stat().st_size
        total += size
        duplicated = int(adata.var["ensembl_id"][adata.var["ensembl_id"] != ""].duplicated().sum())
        print(f"{target.name:28s} {size / 1e6:6.2f} MB  {adata.n_obs:5d} cells x "
              f"{adata.n_vars:6d} genes"
              f"  nnz {adata.X.nnz:8d}  duplicated ids {duplicated}")
    ontology_table(cl).to_csv(args.out / "cell_type_ontology.tsv", sep="\t", index=False)
    print(f"total {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
