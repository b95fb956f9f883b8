"""Child-process jobs of the memory tests; each prints one JSON line of figures (memory in MiB).

``python reliability_memory_harness.py JOB ARGS...``:

- ``make-h5ad PATH CELLS GENES NNZ_PER_CELL``: a raw-counts .h5ad with CSR ``X`` written row block by
  row block (never whole in memory); genes are vocabulary Ensembl ids.
- ``tokenize PATH OUTPUT ALLOWANCE_MIB``: after the imports, cap the address space
  (``RLIMIT_AS``) at the current size + allowance, then ``tokenize_to_corpus``.
- ``load PATH ALLOWANCE_MIB``: same cap, then ``anndata.read_h5ad`` (the in-memory route).
- ``open CORPUS ALLOWANCE_MIB``: same cap, then open the corpus (memory-maps its arrays).
- ``make-corpus OUTPUT CELLS``: a corpus of random cells written with the corpus writer.
- ``serve CORPUS CACHE BATCHES``: ``LangCellDataModule`` over the corpus; RSS before/after serving.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time

import numpy as np

MIB = 1 << 20
ROW_BLOCK = 2000


def _status(field: str) -> float:
    """A /proc/self/status memory field (VmSize, VmRSS, RssAnon, VmHWM) in MiB."""
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise KeyError(field)


def _peak_rss() -> float:
    """Peak RSS of this process image (VmHWM; ru_maxrss would include the parent's before exec)."""
    return _status("VmHWM")


def _cap_address_space(allowance_mib: float) -> float:
    limit = int((_status("VmSize") + allowance_mib) * MIB)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return limit / MIB


def make_h5ad(path: str, cells: int, genes: int, nnz_per_cell: int) -> dict:
    import anndata as ad
    import h5py
    import pandas as pd

    from lightning_langcell.tokenization import GeneVocabulary

    names = [g for g in GeneVocabulary.bundled().gene_median][:genes]
    rng = np.random.default_rng(0)
    obs = pd.DataFrame({"cell_type": pd.Categorical(rng.choice(["B cell", "T cell"], cells))},
                       index=[f"cell_{i}" for i in range(cells)])
    ad.AnnData(obs=obs, var=pd.DataFrame(index=names)).write_h5ad(path)
    with h5py.File(path, "a") as handle:
        if "X" in handle:
            del handle["X"]
        group = handle.create_group("X")
        group.attrs.update({"encoding-type": "csr_matrix", "encoding-version": "0.1.0", "shape": (cells, genes)})
        data = group.create_dataset("data", (0,), maxshape=(None,), dtype="float32", chunks=(1 << 18,))
        indices = group.create_dataset("indices", (0,), maxshape=(None,), dtype="int32", chunks=(1 << 18,))
        indptr = np.zeros(cells + 1, dtype=np.int64)
        for start in range(0, cells, ROW_BLOCK):
            stop = min(start + ROW_BLOCK, cells)
            picked = rng.random((stop - start, genes)) < nnz_per_cell / genes
            rows, cols = np.nonzero(picked)
            counts = rng.geometric(0.3, rows.size).astype(np.float32)
            end = data.shape[0] + rows.size
            data.resize((end,))
            indices.resize((end,))
            data[end - rows.size:] = counts
            indices[end - rows.size:] = cols.astype(np.int32)
            indptr[start + 1: stop + 1] = indptr[start] + np.cumsum(np.bincount(rows, minlength=stop - start))
        group.create_dataset("indptr", data=indptr)
        nnz = int(indptr[-1])
    return {"cells": cells, "genes": genes, "nnz": nnz, "csr_mib": nnz * 8 / MIB,
            "dense_mib": cells * genes * 4 / MIB, "file_mib": os.path.getsize(path) / MIB}


def tokenize(path: str, output: str, allowance_mib: float) -> dict:
    from lightning_langcell.data.corpus_writer import tokenize_to_corpus
    from lightning_langcell.tokenization import CellTokenizer

    tokenizer = CellTokenizer()  # bundled vocabulary loaded before the cap
    before = _status("VmRSS")
    limit = _cap_address_space(allowance_mib)
    started = time.perf_counter()
    corpus = tokenize_to_corpus(path, output, tokenizer=tokenizer)
    return {"cells": len(corpus), "tokens": int(corpus.manifest["n_tokens"]), "limit_mib": limit,
            "rss_before_mib": before, "peak_rss_mib": _peak_rss(), "peak_vm_mib": _status("VmPeak"),
            "seconds": time.perf_counter() - started}


def load(path: str, allowance_mib: float) -> dict:
    import anndata as ad

    limit = _cap_address_space(allowance_mib)
    try:
        adata = ad.read_h5ad(path)
    except MemoryError as error:
        return {"loaded": False, "error": type(error).__name__, "limit_mib": limit}
    return {"loaded": True, "nnz": int(adata.X.nnz), "limit_mib": limit, "peak_rss_mib": _peak_rss()}


def open_corpus(path: str, allowance_mib: float) -> dict:
    from lightning_langcell.data.corpus import CellCorpus
    from lightning_langcell.errors import CorpusError

    limit = _cap_address_space(allowance_mib)
    try:
        return {"opened": True, "cells": len(CellCorpus(path)), "limit_mib": limit}
    except CorpusError as error:
        return {"opened": False, "error": str(error), "limit_mib": limit}


def make_corpus(output: str, cells: int) -> dict:
    from pathlib import Path

    from lightning_langcell.data.corpus_writer import FORMAT_NAME, FORMAT_VERSION, _token_dtype
    from lightning_langcell.data.corpus_store import CorpusArraysWriter
    from lightning_langcell.tokenization import CLS_ID, CellTokenizer

    settings = CellTokenizer().settings()
    root = Path(output)
    root.mkdir(parents=True)
    writer = CorpusArraysWriter(root, _token_dtype(CLS_ID + 1), [("cell_type", "categorical")], CLS_ID + 1)
    writer.add_source({"path": "synthetic", "bytes": None, "blake3": None})
    rng = np.random.default_rng(0)
    block = 100_000
    for start in range(0, cells, block):
        n = min(block, cells - start)
        lengths = rng.integers(16, 96, n)
        tokens = rng.integers(2, CLS_ID, int(lengths.sum()))
        labels = rng.choice(np.array(["B cell", "T cell", "natural killer cell", "monocyte"]), n)
        writer.add_cells(tokens, lengths, {"cell_type": labels}, np.zeros(n, dtype=np.int64),
                         np.arange(start, start + n), [f"c{i}" for i in range(start, start + n)])
    writer.sources[0].update(n_cells=cells, n_skipped=0)
    manifest = writer.finish({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": "now",
                              "vocabulary_checksum": settings["vocabulary_checksum"], "vocab_size": CLS_ID + 1,
                              "tokenizer_settings": settings})
    return {"cells": manifest["n_cells"], "tokens": manifest["n_tokens"],
            "tokens_mib": (root / "tokens.npy").stat().st_size / MIB}


def serve(corpus: str, cache: str, batches: int) -> dict:
    import torch

    from lightning_langcell.data.datamodule import LangCellDataModule

    torch.set_num_threads(1)
    started = time.perf_counter()
    datamodule = LangCellDataModule(data=corpus, cache_dir=cache, max_length=64, batch_size=64,
                                    text_max_length=64, mgm_probability=0.15, seed=0)
    datamodule.setup("fit")
    setup_seconds = time.perf_counter() - started
    loader = iter(datamodule.train_dataloader())
    warmup = 20
    cells = 0
    for index in range(batches + warmup):
        if index == warmup:
            rss_before, anon_before = _status("VmRSS"), _status("RssAnon")
            started = time.perf_counter()
        batch = next(loader)
        cells += int(batch["input_ids"].shape[0]) * (index >= warmup)
    return {"train_cells": len(datamodule.datasets["train"]), "batches": batches, "cells_served": cells,
            "setup_seconds": setup_seconds, "cells_per_second": cells / (time.perf_counter() - started),
            "rss_before_mib": rss_before, "rss_after_mib": _status("VmRSS"),
            "anon_before_mib": anon_before, "anon_after_mib": _status("RssAnon"), "peak_rss_mib": _peak_rss()}


JOBS = {"make-h5ad": (make_h5ad, (str, int, int, int)), "tokenize": (tokenize, (str, str, float)),
        "load": (load, (str, float)), "open": (open_corpus, (str, float)),
        "make-corpus": (make_corpus, (str, int)), "serve": (serve, (str, str, int))}

if __name__ == "__main__":
    job, types = JOBS[sys.argv[1]]
    print(json.dumps(job(*(kind(value) for kind, value in zip(types, sys.argv[2:])))), flush=True)
