"""Zero-shot quality against the number of candidate classes, exact vs top-k, on never-seen cells.

    python -m benchmarks.class_scaling_quality                          # pbmc3k, 60 cells
    python -m benchmarks.class_scaling_quality --datasets pbmc3k garnett_pbmc_facs --ks 5,25 --max-cells 90
    python -m benchmarks.class_scaling_quality --pretraining --ks 1,5,10,25   # choose k: pre-training datasets

Cells: at most ``--max-cells`` test cells of each dataset (:func:`benchmarks.quality.load_dataset`'s
split, stratified subsample), truth = each label's Cell Ontology id (as the hierarchy rows map
them). Candidates at each count (:func:`candidates_at`): the dataset's true classes first, then
the hematopoietic subtree (``CL:0000988+``), then every other bundled Cell Ontology term with a
definition, in id order, up to the count; ``all`` = all of them (``"CL:all"`` plus any true class
it lacks). Every true class is always a candidate. ``--pretraining`` scores the shipped checkpoint's
pre-training datasets' held-out test cells instead (labels seen in pre-training: where settings
such as the default ``top_k`` are chosen, never on the never-seen sets).

All (cell, class) scores are computed once against the largest candidate set
(:func:`benchmarks.pair_scores.pair_scores`, exact mode): CTC over a subset is its renormalised
softmax and the matcher scores each pair alone, so exact mode and every top-k rule at every count
come from the library's own rules (:func:`~lightning_langcell.inference.zero_shot.top_k_candidates`,
:func:`~lightning_langcell.inference.zero_shot.combine_scores`) on the same arrays; equal to running
:class:`~lightning_langcell.inference.zero_shot.ZeroShotScorer` on each subset (tested). Reported:
accuracy, balanced accuracy (over the true classes), hierarchical F1 and correct-or-ancestor
(:func:`~lightning_langcell.inference.hierarchy.hierarchical_scores`).

Choice of k, on the pre-training datasets (``--pretraining --max-cells 40 --ks 1,3,5,10,25``; ~41-44
held-out cells each, 4 datasets x 4 counts): accuracy minus exact accuracy, mean (worst) over the 16
cases: top-1 −0.058 (−0.293), top-3 −0.033 (−0.220), top-5 −0.026 (−0.146), top-10 −0.018 (−0.098),
top-25 −0.009 (−0.049). k = 25 is the smallest k within 0.01 of exact on average (no k ≤ 25 is
within 0.01 in every case); the quality suite reports top-5 (the speed target) and top-25.
Adaptive candidate sets scored on the same saved scores (``--save-scores``; smallest set holding
99 % of the CTC mass, or every class within 1/100 of the best CTC probability, k clipped to [5, 25]
or [5, 50]): mean −0.010 to −0.006, worst −0.049 at mean k 17-34: no better than top-25.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

COUNTS = ("10", "100", "1000", "all")
TOP_KS = (5, 25)  # the top-k rows of the quality suite: the speed target's k and the k chosen for quality
ALPHA = 0.1


def candidates_at(count: str, truth_ids: list[str]) -> list[str]:
    """The candidate class ids at one count (see the module doc)."""
    from lightning_langcell.inference.class_sets import all_class_ids, class_set_ids

    order = list(dict.fromkeys([*truth_ids, *class_set_ids("CL:0000988+"), *all_class_ids()]))
    return order if count == "all" else order[: int(count)]


def subset_predictions(ctc_probs: np.ndarray, match_prob: np.ndarray, columns: np.ndarray, k: int | None,
                       alpha: float = ALPHA) -> np.ndarray:
    """Predicted position in ``columns`` [n] of each cell when only ``columns`` are candidates:
    exact mode (``k`` None) or the matcher on each cell's k best CTC classes (the library's rules)."""
    import torch

    from lightning_langcell.inference.zero_shot import candidate_argmax, combine_scores, top_k_candidates

    ctc = torch.from_numpy(ctc_probs[:, columns]).double()
    ctc = ctc / ctc.sum(dim=1, keepdim=True)
    match = torch.from_numpy(match_prob[:, columns]).double()
    if k is None or k >= len(columns):
        candidates = torch.arange(len(columns)).expand(len(ctc), -1)
    else:
        candidates = top_k_candidates(ctc, k)
    _, final = combine_scores(ctc, match.gather(1, candidates), candidates, alpha)
    return candidate_argmax(final, candidates).numpy()


def scaling_rows(name: str, truth: list[str], ctc_probs: np.ndarray, match_prob: np.ndarray, order: list[str],
                 counts=COUNTS, ks=(5,)) -> list[dict]:
    """One row per (count, mode) of one dataset's cells; ``order`` = the columns of the score arrays."""
    from lightning_langcell.inference.hierarchy import hierarchical_scores
    from lightning_langcell.inference.metrics import classification_scores

    truth_ids = sorted(set(truth))
    rows = []
    for count in counts:
        columns = np.arange(len(order) if count == "all" else min(int(count), len(order)))
        index = {term: i for i, term in enumerate(truth_ids)}
        target = np.array([index[t] for t in truth])
        for k in [None, *ks]:
            predicted = [order[c] for c in subset_predictions(ctc_probs, match_prob, columns, k)]
            codes = np.array([index.get(p, len(truth_ids)) for p in predicted])  # any other class: its own code
            scores = classification_scores(target, codes, len(truth_ids) + 1)
            ontology = hierarchical_scores(truth, predicted)
            rows.append({"dataset": name, "classes": int(len(columns)), "mode": "exact" if k is None else f"top-{k}",
                         "k": k, "n_cells": len(truth), "accuracy": round(scores["accuracy"], 4),
                         "balanced_accuracy": round(balanced_over_truth(target, codes, len(truth_ids)), 4),
                         "hierarchical_f1": round(ontology["hierarchical_f1"], 4),
                         "correct_or_ancestor": round(ontology["correct_or_ancestor"], 4)})
    return rows


def balanced_over_truth(target: np.ndarray, codes: np.ndarray, n_true: int) -> float:
    """Mean recall over the true classes (predictions of other candidates count as misses)."""
    return float(np.mean([(codes[target == c] == c).mean() for c in range(n_true) if (target == c).any()]))


def dataset_rows(data, max_cells: int, counts=COUNTS, ks=(5,), log=print) -> tuple[list[dict], dict]:
    """(rows of :func:`scaling_rows`, the pair scores with the cells' ``truth`` ids and the columns'
    ``order``) on at most ``max_cells`` test cells of a
    :class:`benchmarks.quality.Dataset`."""
    from benchmarks.annotation_quality import label_term_ids
    from benchmarks.pair_scores import pair_scores
    from benchmarks.quality import LABEL, _capped

    started = time.perf_counter()
    cells = data.adata[data.test]
    cells = cells[_capped(data.labels[data.test], max_cells)].copy()
    term_of = label_term_ids(data)
    truth_all = [term_of[label] for label in cells.obs[LABEL].astype(str)]
    order = candidates_at("all", sorted(set(truth_all)))
    scored = pair_scores(cells, order, batch_size=16)
    truth = [truth_all[row] for row in scored["rows"]]
    scored["truth"], scored["order"] = np.array(truth), np.array(order)
    rows = scaling_rows(data.name, truth, scored["ctc_probs"], scored["match_prob"], order, counts, ks)
    log(f"{data.name}: class scaling on {len(truth)} cells x {len(order)} classes in "
        f"{time.perf_counter() - started:.1f} s")
    return rows, scored


def main(argv=None) -> list[dict]:
    import torch

    from benchmarks.quality import dataset_paths, load_dataset
    from benchmarks.shipped_checkpoint import recipe_test_cells, training_datasets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=["pbmc3k"])
    parser.add_argument("--pretraining", action="store_true",
                        help="the pre-training datasets' held-out test cells instead of --datasets")
    parser.add_argument("--cache-dir", default="runs/hierarchy_thresholds_cache",
                        help="with --pretraining: where the pre-training corpus is cached (its test split)")
    parser.add_argument("--max-cells", type=int, default=60)
    parser.add_argument("--counts", default=",".join(COUNTS))
    parser.add_argument("--ks", default="5")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--save-scores", help="also write each dataset's pair scores to <this folder>/<name>.npz")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    names = list(training_datasets()) if args.pretraining else args.datasets
    tests = recipe_test_cells(args.cache_dir) if args.pretraining else None
    for name, path, role in dataset_paths(names):
        data = load_dataset(name, path, role, None, tests)
        found, scored = dataset_rows(data, args.max_cells, args.counts.split(","),
                                     [int(k) for k in args.ks.split(",") if k])
        rows += found
        if args.save_scores:
            Path(args.save_scores).mkdir(parents=True, exist_ok=True)
            np.savez(Path(args.save_scores) / f"{name}.npz", **scored)
    print("| dataset | classes | mode | accuracy | balanced accuracy | hierarchical F1 | correct or ancestor |\n"
          + "|---" * 7 + "|")
    for row in rows:
        print(f"| {row['dataset']} | {row['classes']} | {row['mode']} | {row['accuracy']:.3f} | "
              f"{row['balanced_accuracy']:.3f} | {row['hierarchical_f1']:.3f} | {row['correct_or_ancestor']:.3f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2), encoding="utf-8")
    return rows


if __name__ == "__main__":
    main()
