"""A small pre-training run that can be interrupted and resumed; shared by the exact-resume tests.

``run(...)`` trains ``LangCellPretraining`` (tiny model) on 10% of the bundled mouse lung cells
(max_length 32, batch 8, 2 epochs of 8 steps, no validation), checkpointing every step
(``last.ckpt``), and returns the loss of every optimizer step and the final weights.
``stop_at=k`` interrupts the run at the start of step k + 1, right after ``last.ckpt`` of
step k was written (an exception in-process; with ``block_at`` the process instead waits
there to be SIGKILLed). Run as a script it writes ``losses.json`` (and ``weights.safetensors``
when it finishes): ``python reliability_resume_harness.py WORKDIR CACHE [--block-at K] [--resume]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "cells" / "mouse_lung_injury.h5ad"
SEED = 0


class Interrupted(RuntimeError):
    """Raised by :class:`StopAt` to end a run abruptly (no epoch-end hooks, no final save)."""


def _callbacks(stop_at: int | None, block_at: int | None, losses_path: Path | None):
    import lightning.pytorch as pl

    class LossRecorder(pl.Callback):
        """The training loss of every optimizer step, keyed by the step number (1-based)."""

        def __init__(self):
            self.losses: dict[int, float] = {}

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.losses[trainer.global_step] = float(outputs["loss"])
            if losses_path is not None:
                losses_path.write_text(json.dumps(self.losses))

    class StopAt(pl.Callback):
        """Interrupt when step ``stop_at`` (or ``block_at``) is complete and checkpointed."""

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if stop_at is not None and trainer.global_step == stop_at:
                raise Interrupted(f"interrupted after step {stop_at}")
            if block_at is not None and trainer.global_step == block_at:
                print(f"checkpointed {block_at}", flush=True)
                time.sleep(600)  # the parent SIGKILLs us here

    return LossRecorder(), StopAt()


def run(workdir: Path, cache_dir: Path, stop_at: int | None = None, resume: bool = False,
        block_at: int | None = None, losses_path: Path | None = None) -> dict:
    """Train (or resume from ``workdir/checkpoints/last.ckpt``); returns losses, weights, steps."""
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_langcell.data.datamodule import LangCellDataModule
    from lightning_langcell.tasks import LangCellPretraining

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread: the same float reduction order in every run
    pl.seed_everything(SEED, verbose=False)
    datamodule = LangCellDataModule(
        data=str(DATA), cache_dir=str(cache_dir), max_length=32, batch_size=8, text_max_length=32,
        mgm_probability=0.15, split=(0.1, 0.1, 0.8), seed=SEED, num_workers=0,
    )
    task = LangCellPretraining(model="tiny", learning_rate=1e-3, warmup_steps=3, min_lr_ratio=0.1)
    recorder, stopper = _callbacks(stop_at, block_at, losses_path)
    checkpoints = ModelCheckpoint(dirpath=workdir / "checkpoints", every_n_train_steps=1, save_last=True,
                                  save_top_k=1, filename="{step}")
    trainer = pl.Trainer(
        max_epochs=2, accelerator="cpu", devices=1, precision="32-true", gradient_clip_val=1.0,
        logger=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        use_distributed_sampler=False, callbacks=[recorder, stopper, checkpoints],
        default_root_dir=workdir,
    )
    ckpt_path = workdir / "checkpoints" / "last.ckpt" if resume else None
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
    except Interrupted:
        pass
    finally:
        torch.set_num_threads(threads)
    weights = {key: value.detach().clone() for key, value in task.state_dict().items()}
    return {"losses": recorder.losses, "weights": weights, "global_step": trainer.global_step}


def max_weight_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    """Largest absolute difference over every tensor of two state dicts with the same keys."""
    assert a.keys() == b.keys()
    return max(float((a[key].double() - b[key].double()).abs().max()) for key in a if a[key].numel())


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("workdir", type=Path)
    parser.add_argument("cache_dir", type=Path)
    parser.add_argument("--block-at", type=int, default=None)
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args(argv)
    out = run(args.workdir, args.cache_dir, resume=args.resume, block_at=args.block_at,
              losses_path=args.workdir / ("losses_resumed.json" if args.resume else "losses.json"))
    from safetensors.torch import save_file

    save_file(out["weights"], str(args.workdir / "weights.safetensors"))
    print(f"finished at step {out['global_step']}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
