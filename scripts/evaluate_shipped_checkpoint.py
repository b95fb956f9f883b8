"""Zero-shot metrics of the shipped checkpoint on cells it never trained on.

    python scripts/evaluate_shipped_checkpoint.py [--checkpoint checkpoints/langcell-tiny-bundled]

Two kinds of held-out cells:
- ``test split``: the test split (seed 0, 80/10/10 stratified) of the recipe's own datasets,
  rebuilt exactly as ``recipes/pretrain.yaml`` splits them;
- ``unseen dataset``: bundled datasets that were not in the pre-training data at all.
Writes ``metrics.json`` beside the checkpoint (accuracy, balanced accuracy, macro-F1, weighted-F1).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import anndata
import numpy as np
import yaml

from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.inference.annotate import annotate
from lightning_langcell.io_utils import atomic_file

REPO = Path(__file__).resolve().parents[1]
UNSEEN = ("pbmc3k", "garnett_pbmc_facs")


def recipe_test_cells(recipe: Path, cache_dir: str) -> dict[str, np.ndarray]:
    """{dataset file: obs positions of its test-split cells} under the recipe's split."""
    data = yaml.safe_load(recipe.read_text())["data"]
    module = LangCellDataModule(
        data=[str(REPO / p) for p in data["data"]], cache_dir=cache_dir, label_column=data["label_column"],
        texts=False, split=tuple(data["split"]), seed=data["seed"],
    )
    module.setup("test")
    obs = module.corpus.obs.iloc[module.splits["test"]]
    return {
        source: obs.loc[obs["source_file"] == source, "source_index"].to_numpy(dtype=int)
        for source in obs["source_file"].unique()
    }


def evaluate(checkpoint: str, adata, alphas) -> dict:
    results = {}
    for alpha in alphas:
        annotated = annotate(adata, checkpoint, label_column="cell_type", alpha=alpha, batch_size=32, max_length=256)
        metrics = annotated.uns["langcell"]["metrics"]
        results[f"alpha={alpha}"] = {k: round(float(v), 4) for k, v in metrics.items()}
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", default=str(REPO / "checkpoints/langcell-tiny-bundled"))
    parser.add_argument("--recipe", default=str(REPO / "recipes/pretrain.yaml"))
    parser.add_argument("--alphas", type=float, nargs="+", default=[0.1, 1.0])
    args = parser.parse_args(argv)
    report: dict = {"held_out_test_split": {}, "unseen_datasets": {}}
    with tempfile.TemporaryDirectory() as cache:
        for source, rows in recipe_test_cells(Path(args.recipe), cache).items():
            adata = anndata.read_h5ad(source)[np.sort(rows)].copy()
            name = Path(source).stem
            report["held_out_test_split"][name] = {"cells": int(adata.n_obs), **evaluate(args.checkpoint, adata, args.alphas)}
            print(name, report["held_out_test_split"][name])
    for name in UNSEEN:
        adata = anndata.read_h5ad(REPO / "data/cells" / f"{name}.h5ad")
        report["unseen_datasets"][name] = {"cells": int(adata.n_obs), **evaluate(args.checkpoint, adata, args.alphas)}
        print(name, report["unseen_datasets"][name])
    with atomic_file(Path(args.checkpoint) / "metrics.json", "w") as handle:
        json.dump(report, handle, indent=2)
    return report


if __name__ == "__main__":
    main()
