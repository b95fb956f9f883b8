"""Few-shot adapters on the frozen shipped checkpoint against zero-shot and logistic regression.

On each never-seen dataset (pbmc3k, garnett_pbmc_facs, ACTINN mouse blood when present; split as
:func:`benchmarks.quality.load_dataset`: stratified 80/20, seed 0) the checkpoint
``langcell-tiny-bundled`` embeds every cell and class text ONCE (``annotate``: exact zero-shot,
α = 0.1, ``<cls>`` + 255 genes, every label of the dataset as a class). Then for each k and seed,
k labelled cells per class come from the train split (:func:`benchmarks.quality.few_shot_cells`:
``k_shot_indices``, classes with < k cells dropped) and the test split is scored by:

- zero-shot (α = 0.1, the default) and CTC only (α = 1, what the probe starts from): no labels;
- logistic regression (:func:`benchmarks.baselines.logistic_regression`) on the same frozen
  embeddings of the same k cells, standardised with the train split's mean and sd (no labels);
- every adapter of :data:`lightning_langcell.inference.adapters.ADAPTERS` with its defaults
  (:func:`~lightning_langcell.inference.adapters.fit_adapter`): the prototype adapter with the
  zero-shot log-probabilities as its text term (w = 0 = zero-shot) and the text-prior linear
  probe, standardised with the same train-split mean and sd as the logistic regression.

Mean ± sd over seeds. Run: ``python -m benchmarks.few_shot_adapters [--out results.json]``.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings

import numpy as np
import torch

from benchmarks.baselines import label_metrics, logistic_regression
from benchmarks.quality import (CHECKPOINT, LABEL, METRICS, Dataset, dataset_paths, few_shot_cells, load_dataset,
                                seed_summary)
from lightning_langcell.inference.adapters import ADAPTERS, fit_adapter, standardisation

UNSEEN = ["pbmc3k", "garnett_pbmc_facs", "actinn_mouse_blood"]
KS, SEEDS = (1, 3, 5, 10), (0, 1, 2, 3, 4)
METHODS = ("zero-shot (alpha 0.1)", "CTC only (alpha 1)", "logistic regression (frozen embeddings)",
           *(f"{name} adapter" for name in ADAPTERS))


def frozen_outputs(data: Dataset, model, text_tokenizer) -> dict[str, torch.Tensor]:
    """Zero-shot probabilities [N, C], cell embeddings [N, E] and class-text embeddings [C, E], once."""
    from lightning_langcell.inference.annotate import annotate

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        annotated = annotate(data.adata, str(CHECKPOINT), label_column=LABEL, batch_size=32, max_length=256)
    return frozen_from_annotated(data, annotated, model, text_tokenizer)


def frozen_from_annotated(data: Dataset, annotated, model, text_tokenizer) -> dict[str, torch.Tensor]:
    """:func:`frozen_outputs` of an already annotated AnnData of every cell of ``data`` (α = 0.1)."""
    from lightning_langcell.inference.annotate import tokenize_class_texts
    from lightning_langcell.inference.zero_shot import encode_class_texts

    if list(annotated.uns["langcell_classes"]) != data.classes:
        raise RuntimeError(f"class order {list(annotated.uns['langcell_classes'])} != {data.classes}")
    encoded = tokenize_class_texts(list(annotated.uns["langcell"]["class_texts"]), text_tokenizer, model)
    texts = encode_class_texts(model, encoded["input_ids"], encoded["attention_mask"]).embedding
    return {"probabilities": torch.from_numpy(np.asarray(annotated.obsm["langcell_probabilities"])),
            "embeddings": torch.from_numpy(np.asarray(annotated.obsm["X_langcell"])), "texts": texts}


def method_predictions(data: Dataset, frozen: dict[str, torch.Tensor], train: np.ndarray,
                       seed: int) -> tuple[dict[str, np.ndarray], dict]:
    """Predicted class indices on the test split of every method, and the adapters' fitted settings."""
    emb, texts = frozen["embeddings"], frozen["texts"]
    log_probs = frozen["probabilities"].clamp_min(1e-12).log()
    index = {name: i for i, name in enumerate(data.classes)}
    labels = torch.tensor([index[name] for name in data.labels[train]])
    test = torch.from_numpy(data.test)
    mean, sd = standardisation(emb[data.train])  # what the probe adapter standardises with
    lr = logistic_regression(((emb[train] - mean) / sd).numpy(), data.labels[train],
                             ((emb[test] - mean) / sd).numpy(), seed=seed)
    predictions = {
        METHODS[0]: log_probs[test].argmax(-1).numpy(),
        METHODS[1]: (emb[test] @ texts.T).argmax(-1).numpy(),
        METHODS[2]: np.array([index[str(p)] for p in lr]),
    }
    settings = {}
    for name in ADAPTERS:
        started = time.perf_counter()
        fitted = fit_adapter(name, emb[train], labels, texts, log_probs[train], reference=emb[data.train])
        settings[f"{name} adapter"] = {"fit_s": round(time.perf_counter() - started, 4),
                                       **{key: value for key, value in fitted.settings().items()
                                          if not isinstance(value, dict)}}
        predictions[f"{name} adapter"] = fitted.scores(emb[test], log_probs[test]).argmax(-1).numpy()
    return predictions, settings


def dataset_rows(data: Dataset, frozen: dict[str, torch.Tensor], ks=KS, seeds=SEEDS) -> list[dict]:
    """One row per (k, method): mean ± sd over seeds, per-seed metrics and settings."""
    names = np.asarray(data.classes, dtype=object)
    truth = data.labels[data.test]
    rows = []
    for k in ks:
        runs = {method: [] for method in METHODS}
        for seed in seeds:
            train = few_shot_cells(data, k, seed)
            predictions, settings = method_predictions(data, frozen, train, seed)
            for method, predicted in predictions.items():
                runs[method].append({"seed": seed, **label_metrics(truth, names[predicted], data.classes),
                                     **settings.get(method, {})})
        rows += [{"dataset": data.name, "k": k, "method": method, "n_train": int(len(train)),
                  "n_test": int(len(data.test)), **seed_summary(per_seed), "per_seed": per_seed}
                 for method, per_seed in runs.items()]
    return rows


def run(datasets=UNSEEN, ks=KS, seeds=SEEDS, log=print) -> dict:
    """Embed each dataset once, then every (k, seed, method); returns the results dict."""
    from lightning_langcell.inference.annotate import load_zero_shot_model

    model, text_tokenizer, _ = load_zero_shot_model(str(CHECKPOINT))
    results = {"checkpoint": CHECKPOINT.name, "ks": list(ks), "seeds": list(seeds), "rows": [], "timings": {}}
    for name, path, role in dataset_paths([d for d in datasets if d in {n for n, _, _ in dataset_paths(None)}]):
        started = time.perf_counter()
        data = load_dataset(name, path, role, None, None)
        frozen = frozen_outputs(data, model, text_tokenizer)
        embedded = time.perf_counter()
        results["rows"] += dataset_rows(data, frozen, ks, seeds)
        results["timings"][name] = {"embed_s": round(embedded - started, 1),
                                    "all_fits_s": round(time.perf_counter() - embedded, 1)}
        log(f"{name}: {data.adata.n_obs} cells, train {len(data.train)} / test {len(data.test)}, "
            f"{results['timings'][name]}")
    return results


def table(results: dict) -> str:
    """Markdown table: dataset, k, method, mean ± sd of each metric."""
    lines = ["| dataset | k | method | " + " | ".join(METRICS[:3]) + " |", "|---|---|---|---|---|---|"]
    for row in results["rows"]:
        cells = " | ".join(f"{row[m]:.3f} ± {row[m + '_sd']:.3f}" for m in METRICS[:3])
        lines.append(f"| {row['dataset']} | {row['k']} | {row['method']} | {cells} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="*", default=UNSEEN)
    parser.add_argument("--out", default=None, help="write the results JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    results = run(args.datasets)
    print(table(results))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=1)


if __name__ == "__main__":
    main()
