"""Prompt ensembles against the single official class text, and the choice of the default.

For each dataset the test cells (:func:`benchmarks.quality.load_dataset`'s split: the pre-training
recipe's held-out cells for the checkpoint's pre-training datasets, ``stratified_split`` 80/20
for the never-seen ones) are scored by ``langcell-tiny-bundled`` at α = 0.1 against every label
of the dataset, under each prompt set of :data:`PROMPT_SETS` (the official text, each template
alone, the full ensemble; :mod:`lightning_langcell.inference.prompts`). Cheap: every text of the
full ensemble goes through the matcher once per cell batch (cells encoded once, their
cross-attention key/value reused for every text); each prompt set then combines its subset of
those texts exactly as the engine does (:class:`~lightning_langcell.inference.zero_shot.TextGroups`).

The default (:data:`~lightning_langcell.inference.prompts.DEFAULT_PROMPTS`) is chosen by
:data:`RULE` on the pre-training datasets only; the never-seen figures are the headline.

    python -m benchmarks.prompt_ensembles [--output runs/prompt_ensembles.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from benchmarks.shipped_checkpoint import CHECKPOINT, REPO

PROMPT_SETS = {"official": "official", "synonyms": ["synonyms"], "label": ["label"], "parent": ["parent"],
               "ensemble": "ensemble"}
CANDIDATES = ("official", "ensemble")  # what the default may be
MARGIN = 0.005
RULE = (f"mean macro-F1 over the pre-training datasets' held-out cells; the ensemble becomes the default only "
        f"when it beats the official text by more than {MARGIN} (else the default stays 'official')")
ALPHA = 0.1
BATCH = 32
LABEL = "cell_type"


def text_scores(cells, model, text_tokenizer, texts: list[str]) -> tuple:
    """(rows of the scored cells [n], their embeddings [n, E], text embeddings [T, E], match
    probabilities [n, T]), exact mode at :data:`ALPHA` (each text scored as its own class)."""
    from lightning_langcell.inference.annotate import _cell_tokenizer, tokenize_cells, tokenize_class_texts
    from lightning_langcell.data.collate import pad_token_lists
    from lightning_langcell.inference.zero_shot import ZeroShotScorer, encode_class_texts
    from lightning_langcell.tokenization import CLS_ID

    encoded = tokenize_class_texts(texts, text_tokenizer, model)
    scorer = ZeroShotScorer(model, encode_class_texts(model, encoded["input_ids"], encoded["attention_mask"]),
                            alpha=ALPHA)
    max_length = model.config.cell_max_length()
    rows, tokens = tokenize_cells(cells, _cell_tokenizer(None, max_length, False))
    embeddings, match = [], []
    for start in range(0, len(tokens), BATCH):
        input_ids, attention_mask = pad_token_lists(tokens[start:start + BATCH], CLS_ID, max_length)
        out = scorer(input_ids, attention_mask)
        embeddings.append(out.cell_embedding)
        match.append(out.match_prob)
    return rows, torch.cat(embeddings), scorer.classes.embedding, torch.cat(match)


def prompt_set_probabilities(cell_embedding, text_embedding, match, owner: list[int], n_classes: int,
                             alpha: float = ALPHA) -> torch.Tensor:
    """Final probabilities [n, C] of one prompt set from its texts' embeddings [T, E] and match
    probabilities [n, T] (what :class:`ZeroShotScorer` computes with these texts, in exact mode)."""
    from lightning_langcell.inference.zero_shot import TextGroups, combine_scores
    from lightning_langcell.models.zero_shot_scores import ctc_logits

    one_per_class = owner == list(range(n_classes))
    groups = None if one_per_class else TextGroups(torch.tensor(owner), n_classes)
    class_embedding = text_embedding if one_per_class else groups.class_embedding(text_embedding)
    class_match = match if one_per_class else groups.class_match(match)
    ctc = ctc_logits(cell_embedding, class_embedding).softmax(dim=-1)
    everything = torch.arange(n_classes).expand(len(cell_embedding), -1)
    return combine_scores(ctc, class_match, everything, alpha)[1]


def dataset_rows(data, model, text_tokenizer) -> list[dict]:
    """One row per prompt set of :data:`PROMPT_SETS` on the test cells of ``data`` (a
    :class:`benchmarks.quality.Dataset`; classes: every label of the dataset, as the quality suite's
    zero-shot rows; an unscored cell counts as an error)."""
    from benchmarks.baselines import label_metrics
    from lightning_langcell.inference.classes import candidate_classes
    from lightning_langcell.inference.prompts import class_prompts

    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        candidates = candidate_classes(None, data.adata.obs, LABEL)
    cells = data.adata[data.test].copy()
    texts = list(dict.fromkeys(class_prompts(candidates, "ensemble").texts))  # a text shared by classes: one column
    position = {text: i for i, text in enumerate(texts)}
    rows, cell_embedding, text_embedding, match = text_scores(cells, model, text_tokenizer, texts)
    truth = cells.obs[LABEL].astype(str).to_numpy()
    out = []
    for label, spec in PROMPT_SETS.items():
        written = class_prompts(candidates, spec)
        subset = [position[text] for text in written.texts]
        probabilities = prompt_set_probabilities(cell_embedding, text_embedding[subset], match[:, subset],
                                                 written.owner, len(candidates))
        predicted = np.full(len(truth), None, dtype=object)
        predicted[rows] = np.asarray(candidates.names, dtype=object)[probabilities.argmax(dim=1).numpy()]
        scores = label_metrics(truth, predicted, candidates.names)
        out.append({"dataset": data.name, "role": data.role, "prompts": label, "alpha": ALPHA, "n_test": int(len(truth)),
                    "n_classes": len(candidates), "n_texts": len(written.texts),
                    "macro_f1": scores["macro_f1"], "balanced_accuracy": scores["balanced_accuracy"],
                    "accuracy": scores["accuracy"]})
    seconds = round(time.perf_counter() - started, 1)
    for row in out:
        row["seconds"] = seconds
    return out


def choose(rows: list[dict]) -> dict:
    """The default by :data:`RULE` from the pre-training rows, with the means it compared."""
    seen = [row for row in rows if row["role"] == "pretraining"]
    means = {label: round(float(np.mean([r["macro_f1"] for r in seen if r["prompts"] == label])), 4)
             for label in PROMPT_SETS} if seen else {}
    if not means:
        return {"chosen": None, "rule": RULE, "pretraining_mean_macro_f1": {}}
    chosen = "ensemble" if means["ensemble"] > means["official"] + MARGIN else "official"
    return {"chosen": chosen, "rule": RULE, "pretraining_mean_macro_f1": means}


def results(rows: list[dict]) -> dict:
    """The quality suite's ``prompt_ensembles`` entry: rows, the choice and the shipped default."""
    from lightning_langcell.inference.prompts import DEFAULT_PROMPTS, PROMPT_SETS as SETS, PROMPT_TEMPLATES

    choice = choose(rows)
    return {"alpha": ALPHA, "prompt_sets": {k: list(v) if not isinstance(v, str) else list(SETS[v])
                                            for k, v in PROMPT_SETS.items()},
            "templates": list(PROMPT_TEMPLATES), "default": DEFAULT_PROMPTS, **choice, "rows": rows}


def main(argv: list[str] | None = None) -> dict:
    from benchmarks.quality import dataset_paths, load_dataset
    from benchmarks.shipped_checkpoint import recipe_test_cells
    from lightning_langcell.inference.annotate import load_zero_shot_model

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="*", default=None, help="dataset names (default: all)")
    parser.add_argument("--output", type=Path, default=REPO / "runs/prompt_ensembles.json")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    started = time.perf_counter()
    model, text_tokenizer, _ = load_zero_shot_model(str(CHECKPOINT))
    rows = []
    with tempfile.TemporaryDirectory(prefix="prompt_ensembles_") as scratch:
        wanted = dataset_paths(args.datasets)
        tests = recipe_test_cells(scratch) if any(role == "pretraining" for _, _, role in wanted) else None
        for name, path, role in wanted:
            data = load_dataset(name, path, role, None, tests)
            found = dataset_rows(data, model, text_tokenizer)
            rows += found
            for row in found:
                print(f"{name:22s} {role:11s} {row['prompts']:9s} texts {row['n_texts']:3d}  "
                      f"macro-F1 {row['macro_f1']:.4f}  balanced acc. {row['balanced_accuracy']:.4f}")
    record = {"checkpoint": CHECKPOINT.name, **results(rows), "seconds": round(time.perf_counter() - started, 1)}
    print(f"chosen by the rule ({RULE}): {record['chosen']}; shipped default: {record['default']}; "
          f"{record['seconds']} s")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(record, indent=1))
    return record


if __name__ == "__main__":
    main()
