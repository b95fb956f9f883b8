"""Open-set abstention on never-seen data: leave each cell type out of the candidates in turn.

For each never-seen dataset (pbmc3k, garnett_pbmc_facs, ACTINN mouse blood when present) and each
of its cell types (Cell Ontology ids), the test cells (``benchmarks.quality.load_dataset``'s split,
at most ``--max-cells`` of them, stratified) are annotated by ``langcell-tiny-bundled`` against
every *other* type; the AUROC of the unknown score
(:func:`~lightning_langcell.inference.open_set.unknown_score`, every kind) for the left-out type's
cells against the rest is reported, with the mean over types per dataset.

    python -m benchmarks.open_set_benchmark [--max-cells 300] [--datasets pbmc3k] [--output runs/open_set.json]
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path


from benchmarks.quality import LABEL, dataset_paths, load_dataset
from benchmarks.shipped_checkpoint import CHECKPOINT, REPO

ID_COLUMN = f"{LABEL}_ontology_term_id"


def left_out_rows(name: str, adata, log=print) -> list[dict]:
    """One row per left-out type of one dataset's cells."""
    from lightning_langcell.inference import annotate
    from lightning_langcell.inference.open_set import UNKNOWN_SCORES, left_out_auroc, unknown_score

    truth = adata.obs[ID_COLUMN].astype(str).to_numpy()
    types = sorted(set(truth))
    rows = []
    for left_out in types:
        candidates = [term for term in types if term != left_out]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            annotated = annotate(adata, str(CHECKPOINT), classes=candidates, label_column=None, batch_size=32,
                                 device="cpu")
        probabilities = annotated.obsm["langcell_probabilities"]
        row = {"dataset": name, "left_out": left_out, "n_left_out": int((truth == left_out).sum()),
               "n_cells": int(len(truth))}
        for kind in UNKNOWN_SCORES:
            row[f"auroc_{kind}"] = left_out_auroc(unknown_score(probabilities, kind), truth == left_out)
        log(json.dumps(row))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-cells", type=int, default=300, help="test cells per dataset (stratified subsample)")
    parser.add_argument("--datasets", nargs="*", default=None, help="never-seen dataset names (default: all)")
    parser.add_argument("--output", type=Path, default=REPO / "runs/open_set.json")
    args = parser.parse_args(argv)
    from benchmarks.annotation_quality import open_set_row
    from lightning_langcell.inference.open_set import UNKNOWN_SCORES

    summary, rows = {}, []
    for name, path, role in dataset_paths(args.datasets):
        if role != "unseen":
            continue
        found = open_set_row(load_dataset(name, path, role, None, None), args.max_cells)
        rows += found["per_type"]
        summary[name] = {f"auroc_{kind}": found[f"auroc_{kind}"] for kind in UNKNOWN_SCORES}
        print(name, json.dumps(summary[name]))
    record = {"checkpoint": CHECKPOINT.name, "max_cells": args.max_cells, "mean_over_types": summary, "rows": rows}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
