"""Choose the default unknown score and abstention threshold on the pre-training datasets.

The never-seen test sets are never read here. For each dataset of the shipped checkpoint's
pre-training recipe, its held-out test cells (at most ``--max-cells``, stratified) are scored once
against every label of the dataset (Cell Ontology ids, exact mode, α = 0.1), keeping the CTC
probabilities and the matcher's per-pair match probabilities. Leaving a type out of the candidates
is then exact without a second pass: the matcher scores each (cell, class) pair alone, so the CTC
and CTM softmaxes and the blend are recomputed over the other columns. Candidate scores
(:data:`CANDIDATES`): the three of :func:`~lightning_langcell.inference.open_set.unknown_score`
(1 − margin, 1 − max probability, normalised entropy of the final probabilities), the
similarity–matcher disagreement (total variation between the CTC and CTM distributions) and
1 − the best raw match probability. The score with the highest mean leave-one-type-out AUROC wins;
its threshold is :func:`~lightning_langcell.inference.open_set.abstention_threshold` at
``--false-abstention`` on the known cells (the cells whose type stayed a candidate), pooled over the
datasets' left-out rounds.

    python -m benchmarks.unknown_score_selection [--max-cells 300] [--output runs/unknown_score.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.pair_scores import pair_scores
from benchmarks.shipped_checkpoint import CHECKPOINT, REPO

LABEL = "cell_type"
CANDIDATES = ("margin", "max_probability", "entropy", "disagreement", "match")


def left_out_scores(ctc_probs: np.ndarray, match_prob: np.ndarray, keep: np.ndarray, alpha: float = 0.1) -> dict:
    """Every candidate unknown score [n] when only the columns ``keep`` are candidates."""
    import torch

    from lightning_langcell.inference.open_set import disagreement_score, unknown_score
    from lightning_langcell.models.zero_shot_scores import blend, ctm_class_probabilities

    ctc = torch.from_numpy(ctc_probs[:, keep]).double()
    ctc = ctc / ctc.sum(dim=1, keepdim=True)  # softmax over the kept logits = renormalised probabilities
    ctm = ctm_class_probabilities(torch.from_numpy(match_prob[:, keep]).double())
    final = blend(ctc, ctm, alpha).numpy()
    scores = {kind: unknown_score(final, kind) for kind in ("margin", "max_probability", "entropy")}
    scores["disagreement"] = disagreement_score(ctc.numpy(), ctm.numpy())
    scores["match"] = 1.0 - match_prob[:, keep].max(axis=1)
    return scores


def dataset_rounds(truth: np.ndarray, classes: list[str], ctc_probs, match_prob) -> tuple[list[dict], dict]:
    """(one AUROC row per left-out type, {score: unknown scores of the known cells, pooled})."""
    from lightning_langcell.inference.open_set import left_out_auroc

    rows, known = [], {kind: [] for kind in CANDIDATES}
    for column, term in enumerate(classes):
        is_out = truth == term
        if not is_out.any():
            continue
        keep = np.array([c for c in range(len(classes)) if c != column])
        scores = left_out_scores(ctc_probs, match_prob, keep)
        rows.append({"left_out": term, "n_left_out": int(is_out.sum()),
                     **{f"auroc_{kind}": left_out_auroc(scores[kind], is_out) for kind in CANDIDATES}})
        for kind in CANDIDATES:
            known[kind].append(scores[kind][~is_out])
    return rows, {kind: np.concatenate(values) for kind, values in known.items()}


def main(argv: list[str] | None = None) -> dict:
    import anndata

    from benchmarks.quality import _capped
    from benchmarks.shipped_checkpoint import recipe_test_cells, training_datasets
    from lightning_langcell.inference.open_set import abstention_threshold

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-cells", type=int, default=300, help="held-out test cells per dataset (stratified)")
    parser.add_argument("--false-abstention", type=float, default=0.05,
                        help="target fraction of known-type cells marked unknown")
    parser.add_argument("--cache-dir", default=str(REPO / "runs/hierarchy_thresholds_cache"))
    parser.add_argument("--output", type=Path, default=REPO / "runs/unknown_score.json")
    args = parser.parse_args(argv)
    tests = recipe_test_cells(args.cache_dir)
    per_dataset, pooled = {}, {kind: [] for kind in CANDIDATES}
    for name in training_datasets():
        full = anndata.read_h5ad(REPO / "data/cells" / f"{name}.h5ad")
        cells = full[tests[name]]
        cells = cells[_capped(cells.obs[LABEL].astype(str).to_numpy(), args.max_cells)].copy()
        classes = sorted(full.obs[f"{LABEL}_ontology_term_id"].astype(str).unique())
        scored = pair_scores(cells, classes)
        truth = cells.obs[f"{LABEL}_ontology_term_id"].astype(str).to_numpy()[scored["rows"]]
        rows, known = dataset_rounds(truth, classes, scored["ctc_probs"], scored["match_prob"])
        mean = {kind: float(np.nanmean([row[f"auroc_{kind}"] for row in rows])) for kind in CANDIDATES}
        per_dataset[name] = {"cells": int(len(truth)), "types": len(rows), "mean_auroc": mean, "rows": rows}
        for kind in CANDIDATES:
            pooled[kind].append(known[kind])
        print(name, json.dumps({k: round(v, 4) for k, v in mean.items()}), flush=True)
    overall = {kind: float(np.mean([info["mean_auroc"][kind] for info in per_dataset.values()])) for kind in CANDIDATES}
    best = max(CANDIDATES, key=lambda kind: overall[kind])
    thresholds = {kind: abstention_threshold(np.concatenate(pooled[kind]), args.false_abstention)
                  for kind in CANDIDATES}
    print(f"mean AUROC over datasets: {json.dumps({k: round(v, 4) for k, v in overall.items()})}")
    print(f"chosen: {best} (AUROC {overall[best]:.4f}), threshold {thresholds[best]:.6f} "
          f"at {args.false_abstention:.0%} false abstention on known types")
    record = {"checkpoint": CHECKPOINT.name, "max_cells": args.max_cells, "false_abstention": args.false_abstention,
              "mean_auroc": overall, "chosen": best, "thresholds": thresholds, "datasets": per_dataset}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
