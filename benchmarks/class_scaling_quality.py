"""Zero-shot quality against the number of candidate classes, exact vs top-k, on never-seen cells.

    python -m benchmarks.class_scaling_quality                        # pbmc3k, 5 cells per type
    python -m benchmarks.class_scaling_quality --per-type 20 --counts 10,100,all --ks 5,25

Cells: ``--per-type`` cells of each type of ``data/cells/pbmc3k.h5ad`` (never seen by
``langcell-tiny-bundled``), evenly spaced; truth = their curated ``cell_type_ontology_term_id``.
Candidates at each count: the dataset's true classes first, then the other terms of the
hematopoietic subtree (``CL:0000988+``, id order) up to the count; ``all`` = ``"CL:all"`` (every
bundled Cell Ontology term with a definition). Every true class is always a candidate. Reports
accuracy and balanced accuracy of exact mode and each top-k (same checkpoint, same cells).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def candidates_at(count: str, truth_ids: list[str]) -> list[str] | str:
    from lightning_langcell.inference.class_sets import class_set_ids

    if count == "all":
        return "CL:all"
    extra = [term for term in class_set_ids("CL:0000988+") if term not in truth_ids]
    return (truth_ids + extra)[: int(count)]


def main(argv=None) -> list[dict]:
    import anndata
    import torch

    from lightning_langcell.inference import annotate

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="data/cells/pbmc3k.h5ad")
    parser.add_argument("--model", default="langcell-tiny-bundled")
    parser.add_argument("--per-type", type=int, default=5)
    parser.add_argument("--counts", default="10,100,all")
    parser.add_argument("--ks", default="5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    adata = anndata.read_h5ad(args.data)
    label = "cell_type_ontology_term_id"
    picked = np.concatenate([np.flatnonzero(adata.obs[label] == term)[
        np.linspace(0, (adata.obs[label] == term).sum() - 1, args.per_type).astype(int)]
        for term in sorted(adata.obs[label].unique())])
    adata = adata[np.unique(picked)].copy()
    truth_ids = sorted(adata.obs[label].astype(str).unique())
    rows = []
    print(f"# {args.data}: {adata.n_obs} cells ({len(truth_ids)} types), {args.model}, never seen in pre-training")
    print("| classes | mode | accuracy | balanced accuracy | seconds |\n|---|---|---|---|---|")
    for count in args.counts.split(","):
        classes = candidates_at(count, truth_ids)
        for k in [None, *(int(k) for k in args.ks.split(",") if k)]:
            result = annotate(adata, args.model, classes=classes, label_column=label, top_k=k,
                              batch_size=16, progress=False)
            info = result.uns["langcell"]
            row = {"classes": len(info["class_texts"]), "mode": "exact" if k is None else f"top-{k}",
                   "accuracy": float(info["metrics"]["accuracy"]),
                   "balanced_accuracy": float(info["metrics"]["balanced_accuracy"]), "seconds": info["seconds"]}
            rows.append(row)
            print(f"| {row['classes']} | {row['mode']} | {row['accuracy']:.3f} | {row['balanced_accuracy']:.3f} | "
                  f"{row['seconds']:.1f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
