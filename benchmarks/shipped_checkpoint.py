"""The shipped checkpoint ``langcell-tiny-bundled``: what it was trained on, and its model card.

- :func:`training_datasets`: the datasets (file stems) it was pre-trained on, read from its
  recipe ``recipes/pretrain_tiny_bundled.yaml`` (``data.data``); their labels are "seen in
  pre-training", and only their held-out test split is ever scored.
- :func:`recipe_test_cells`: that recipe's held-out test split, rebuilt by the data module.
- :func:`render_card` / :func:`card_metrics`: the checkpoint's ``README.md`` and ``metrics.json``
  from the quality suite's results (``benchmarks/results/quality.json``), so the card's numbers
  are the leaderboard's (same splits, same class sets). Written by ``benchmarks.run`` after a
  full quality run, or by ``scripts/evaluate_shipped_checkpoint.py`` from saved results.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CHECKPOINT = REPO / "checkpoints/langcell-tiny-bundled"
TRAINING_RECIPE = REPO / "recipes/pretrain_tiny_bundled.yaml"
NEVER_SEEN = "never seen (cells and labels)"
SEEN = "labels seen in pre-training (held-out cells)"
SHIPPED_RUN = {  # facts of the run that produced the shipped weights (not recomputable here)
    "device": "one NVIDIA H100",
    "wall_time": "3 min 46 s for 40 epochs of 66 steps of 32 cells",
    "kept": "epoch 21, step 1,386 (lowest val/loss of the 40 epochs)",
    "commit": "trained from the tree of commit `b46759a` plus the working changes that became `d01d5e7` "
              "(same model and objective code)",
    "curves": "train loss 17.66 → 9.38; validation loss 14.14 → 10.91; validation in-batch cell→text top-1 "
              "0.35 → 0.90, text→cell 0.44 → 0.92; validation MGM accuracy 0.001 → 0.076 (first → last of the "
              "40 epochs; the shipped state is epoch 21). Learned temperature 0.0712.",
    "conversion": "`temp` was later reshaped from a scalar to a 1-element vector (FSDP cannot shard 0-d "
                  "parameters), values unchanged",
}


def _recipe_data(recipe: Path = TRAINING_RECIPE) -> dict:
    import yaml

    return yaml.safe_load(recipe.read_text())["data"]


def training_datasets(recipe: Path = TRAINING_RECIPE) -> tuple[str, ...]:
    """File stems of the .h5ad files the shipped checkpoint was pre-trained on (recipe order)."""
    return tuple(Path(path).stem for path in _recipe_data(recipe)["data"])


def recipe_test_cells(cache_dir: str, recipe: Path = TRAINING_RECIPE) -> dict[str, np.ndarray]:
    """{dataset stem: sorted obs positions of its test-split cells} under the recipe's split."""
    from lightning_langcell.data.datamodule import LangCellDataModule

    data = _recipe_data(recipe)
    module = LangCellDataModule(data=[str(REPO / p) for p in data["data"]], cache_dir=cache_dir,
                                label_column=data["label_column"], texts=False, split=tuple(data["split"]),
                                seed=data["seed"])
    module.setup("test")
    obs = module.corpus.obs.iloc[module.splits["test"]]
    return {Path(source).stem: np.sort(obs.loc[obs["source_file"] == source, "source_index"].to_numpy(dtype=int))
            for source in obs["source_file"].unique()}


def group_of(quality: dict, dataset: str) -> str:
    """:data:`NEVER_SEEN` or :data:`SEEN` for a dataset (or ``a + b`` mix) of a quality results dict."""
    seen = set(quality["checkpoint"].get("training_datasets") or
               [name for name, info in quality["datasets"].items() if "pre-training" in info["role"]
                and "never" not in info["role"]])
    return SEEN if any(part in seen for part in dataset.split(" + ")) else NEVER_SEEN


def _zero_shot_rows(quality: dict, group: str) -> list[dict]:
    return [row for row in quality["rows"] if row["setting"] == "zero-shot" and group_of(quality, row["dataset"]) == group]


def card_metrics(quality: dict) -> dict:
    """metrics.json: zero-shot metrics per group, dataset and α, with the results they come from."""
    out = {"source": "benchmarks/results/quality.json", "commit": quality["commit"], "created": quality["created"]}
    for key, group in (("never_seen", NEVER_SEEN), ("labels_seen_held_out_cells", SEEN)):
        out[key] = {}
        for row in _zero_shot_rows(quality, group):
            entry = out[key].setdefault(row["dataset"], {"test_cells": row["n_test"]})
            entry[f"alpha={row['alpha']}"] = {m: row[m] for m in ("accuracy", "balanced_accuracy", "macro_f1",
                                                                  "weighted_f1")}
    return out


def _table(quality: dict, group: str) -> list[str]:
    lines = ["| dataset | test cells | classes | α | accuracy | balanced acc. | macro-F1 | weighted-F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in _zero_shot_rows(quality, group):
        classes = len(quality["datasets"][row["dataset"]]["classes"])
        lines.append(f"| {row['dataset']} | {row['n_test']} | {classes} | {row['alpha']} | {row['accuracy']:.3f} | "
                     f"{row['balanced_accuracy']:.3f} | {row['macro_f1']:.3f} | {row['weighted_f1']:.3f} |")
    return lines


def render_card(quality: dict) -> str:
    """The checkpoint's README.md (model card) from a full quality results dict."""
    trained = training_datasets()
    data = _recipe_data()
    never = sorted({row["dataset"] for row in _zero_shot_rows(quality, NEVER_SEEN)})
    files = ", ".join(f"`data/cells/{name}.h5ad`" for name in trained)
    run = SHIPPED_RUN
    lines = [
        "# langcell-tiny-bundled — model card", "",
        "<!-- Generated by scripts/evaluate_shipped_checkpoint.py (benchmarks/shipped_checkpoint.py) from "
        "benchmarks/results/quality.json: do not edit by hand. -->", "",
        "A tiny LangCell (2-layer cell encoder, hidden 64, mean-pooled cell embedding; 2-layer BLIP-style text "
        "encoder with fusion mode, hidden 64; 256-d shared embedding; 2.5 M parameters) pre-trained by this library "
        "on the real cells bundled in `data/cells/`. It exists so that zero-shot, few-shot and the checkpoint API "
        "can be tried offline in seconds. It is **not** the released LangCell model and is far too small and too "
        "briefly trained to annotate new data: see the never-seen rows below.", "",
        f"- **Data**: {files}, split {'/'.join(str(round(100 * f)) for f in data['split'])} stratified by "
        f"`{data['label_column']}`, seed {data['seed']}; mouse genes mapped to human orthologs. Texts: "
        "`\"cell type: <CL label>. <CL definition>; \"` from the curated `cell_type_ontology_term_id` of each "
        f"label. {', '.join(never)} were never used.",
        f"- **Recipe**: `recipes/pretrain_tiny_bundled.yaml` (all four objectives: MGM, cell–cell, cell–text "
        f"contrastive, cell–text matching; AdamW 5e-4, warm-up 20 steps, cosine; max {data['max_length']} tokens per "
        f"cell, batch {data['batch_size']}), fp32, 40 epochs on {run['device']} ({run['wall_time']}); the kept "
        f"state is the lowest validation loss: **{run['kept']}**. Converted to our format; {run['conversion']}.",
        "- **Reproduce**: `python scripts/train_shipped_checkpoint.py` (GPU, as shipped: trains, converts the best "
        "epoch, reruns the quality suite and regenerates this card). Without a GPU, "
        "`python scripts/train_shipped_checkpoint.py --accelerator cpu` trains the closest equivalent (same "
        "recipe, fp32 on CPU, no data-loader workers); CPU and GPU kernels differ in the last bits, so the weights "
        "are not bit-identical; time one CPU epoch first (`--trainer.max_epochs 1 --no-benchmark`), the 40 epochs "
        "take 40 times that.",
        f"- **Commit**: {run['commit']}.",
        f"- **Training curves** (TensorBoard): {run['curves']}", "",
        "## Zero-shot", "",
        f"Numbers from the quality suite (`python -m benchmarks.run --suite quality`, results commit "
        f"`{quality['commit']}`, {quality['created']}), the same as `benchmarks/LEADERBOARD.md`: each dataset's "
        "fixed test split, every label of the dataset as a class, max 256 tokens per cell, α = CTC weight of the "
        "blend with the matcher.", "",
        f"### {NEVER_SEEN[0].upper() + NEVER_SEEN[1:]}: the zero-shot numbers", "", *_table(quality, NEVER_SEEN), "",
        f"### {SEEN[0].upper() + SEEN[1:]}", "",
        "The checkpoint's pre-training texts were built from these labels: this is a supervised text head scored "
        "on the recipe's held-out test cells, not zero-shot.", "", *_table(quality, SEEN), "",
        "Reading the tables: on labels it was trained on, the model finds held-out cells well; labels sharing one "
        "CL term share one text (ties go to the first class: mouse_lung_injury's alveolar type 2 states). On "
        "datasets it never saw it is near chance: 2.6 k cells and a 2-layer model do not teach general cell–text "
        "knowledge. Use the released LangCell weights (`lightning_langcell.load_model(\"langcell\")` once "
        "downloaded) for real annotation.", "",
        "## Files", "",
        "`config.json` (architecture, gene-vocabulary checksum, text tokenizer), `model.safetensors`, "
        "`gene_vocabulary/` (Geneformer-30M dictionaries), `text_tokenizer/` (the bundled WordPiece vocab), "
        "`metrics.json` (the tables above). Licence: Apache-2.0, like the library; trained on MIT/BSD-3 data (see "
        "`data/cells/SOURCE.md`).", ""]
    return "\n".join(lines)


def card_ready(quality: dict) -> bool:
    """Whether ``quality`` is a full (not quick) run over every training dataset and at least one never-seen set."""
    present = set(quality.get("datasets", {}))
    never = [name for name in present if group_of(quality, name) == NEVER_SEEN]
    return not quality.get("quick") and set(training_datasets()) <= present and bool(never)


def write_card(quality: dict, folder: Path = CHECKPOINT) -> list[Path]:
    """Write ``README.md`` and ``metrics.json`` of the checkpoint folder (atomically); returns the paths."""
    from lightning_langcell.io_utils import atomic_file

    written = []
    for name, text in (("README.md", render_card(quality)),
                       ("metrics.json", json.dumps(card_metrics(quality), indent=1) + "\n")):
        with atomic_file(Path(folder) / name, "w") as handle:
            handle.write(text)
        written.append(Path(folder) / name)
    return written
