"""Train checkpoints/langcell-tiny-bundled as shipped, convert its best epoch and regenerate its model card.

    python scripts/train_shipped_checkpoint.py                    # as shipped: one GPU, fp32, 40 epochs
    python scripts/train_shipped_checkpoint.py --accelerator cpu  # the closest CPU equivalent

The recipe is ``recipes/pretrain_tiny_bundled.yaml`` (accelerator gpu, 1 device, fp32, 40 epochs,
4 data-loader workers, seed 0; ``ModelCheckpoint`` keeps the epoch with the lowest ``val/loss``).
Steps: (1) ``python -m lightning_langcell fit --config <recipe>`` in-process, under
``--root`` (default ``runs/langcell-tiny-bundled``); (2) convert the kept checkpoint to our format
into ``--output`` (default ``checkpoints/langcell-tiny-bundled``, replaced only once the new one is
complete); (3) unless ``--no-benchmark``, rerun the quality suite (``python -m benchmarks.run
--suite quality``, about 17 min on 2 CPU cores), which rewrites ``benchmarks/results/quality.json``,
the leaderboard and the model card from the new weights.

The shipped weights were trained on one NVIDIA H100 (3 min 46 s). ``--accelerator cpu`` runs the
same recipe on the CPU with fp32 and no data-loader workers (``--data.num_workers 0``); CPU and
GPU kernels round differently, so the result is the closest equivalent, not bit-identical. Its CPU
time has no trustworthy measurement yet: on a 2-core machine shared by seven jobs (load average
~10) the first 4 training steps of 66 per epoch took ~95 s each, which says more about the load
than about the recipe. Time one epoch on your machine first (``--trainer.max_epochs 1
--no-benchmark``) and multiply by 40. Extra arguments are passed to the CLI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script: make the repository's benchmarks package importable
    sys.path.insert(0, str(REPO))

RECIPE = REPO / "recipes/pretrain_tiny_bundled.yaml"
CPU_OVERRIDES = ["--trainer.accelerator", "cpu", "--data.num_workers", "0"]


def fit_argv(accelerator: str, root: Path, extra: list[str]) -> list[str]:
    """CLI arguments of the training run (the recipe, its root folder, the CPU overrides when asked)."""
    overrides = CPU_OVERRIDES if accelerator == "cpu" else []
    return ["fit", "--config", str(RECIPE), "--trainer.default_root_dir", str(root), *overrides, *extra]


def best_checkpoint(trainer) -> Path:
    """The checkpoint the recipe's ModelCheckpoint kept (lowest val/loss)."""
    path = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if not path:
        raise SystemExit("The run kept no checkpoint (no validation epoch finished): train at least one epoch.")
    return Path(path)


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu", help="gpu: as shipped")
    parser.add_argument("--root", type=Path, default=Path("runs/langcell-tiny-bundled"), help="training run folder")
    parser.add_argument("--output", type=Path, default=REPO / "checkpoints/langcell-tiny-bundled",
                        help="converted checkpoint folder (replaced)")
    parser.add_argument("--no-benchmark", action="store_true", help="skip the quality suite and the card")
    args, extra = parser.parse_known_args(argv)
    from lightning_langcell.cli import main as cli

    trainer = cli(fit_argv(args.accelerator, args.root, extra)).trainer
    kept = best_checkpoint(trainer)
    print(f"kept {kept} (val/loss {float(trainer.checkpoint_callback.best_model_score):.4f})")
    cli(["convert", os.path.relpath(kept), str(args.output), "--to", "ours", "--overwrite"])
    if not args.no_benchmark:
        from benchmarks.run import main as run_benchmarks

        run_benchmarks(["--suite", "quality", "--card-dir", str(args.output)])
    return args.output


if __name__ == "__main__":
    main()
