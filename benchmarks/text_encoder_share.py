"""The text encoder's share of a stage-2 pre-training step (all four objectives) and the padding of
its text batches, on the bundled real cells and their ontology texts (CPU, fp32).

    python -m benchmarks.text_encoder_share --model tiny --cells 8
    python -m benchmarks.text_encoder_share --model langcell --cells 4 --text-max-length 256

Forward and backward of ``LangCellPretraining.compute_losses`` on padded batches (the text encoder
stays padded) from ``--data``; the text encoder's forward time (both its text and its multimodal
passes) is taken with forward hooks. Printed per step: the step's forward and backward time, the
text forward time and its share of the step's forward, and the text batch's padding fraction
(pad / all text positions).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.pretrain_step_benchmark import run_with_threads
from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.tasks import LangCellPretraining

ALL_OBJECTIVES = {"mgm": 1.0, "cell_cell": 1.0, "cell_text": 1.0, "matching": 1.0}


class ForwardClock:
    """Total wall time spent inside a module's forward calls (nested calls counted once)."""

    def __init__(self, module: torch.nn.Module):
        self.seconds, self._depth, self._start = 0.0, 0, 0.0
        module.register_forward_pre_hook(self._enter)
        module.register_forward_hook(self._leave)

    def _enter(self, *_):
        if self._depth == 0:
            self._start = time.perf_counter()
        self._depth += 1

    def _leave(self, *_):
        self._depth -= 1
        if self._depth == 0:
            self.seconds += time.perf_counter() - self._start


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="tiny", help="model preset: tiny or langcell")
    parser.add_argument("--data", default="data/cells/baron_mouse_pancreas.h5ad")
    parser.add_argument("--cells", type=int, default=8, help="cells per batch")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--max-length", type=int, default=2048, help="cell tokens, <cls> included")
    parser.add_argument("--text-max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    return run_with_threads(run, parser.parse_args(argv))


def run(args) -> dict:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as cache:
        module = LangCellDataModule(data=str(Path(args.data)), cache_dir=cache, label_column="cell_type", texts=True,
                                    text_max_length=args.text_max_length, max_length=args.max_length,
                                    batch_size=args.cells, split=(0.9, 0.1, 0.0), seed=0)
        module.setup("fit")
        batches = [batch for _, batch in zip(range(args.steps + 1), module.train_dataloader())]
    task = LangCellPretraining(model=args.model, loss_weights=ALL_OBJECTIVES).train()
    clock = ForwardClock(task.model.text_bert)
    rows = []
    for step, batch in enumerate(batches):
        clock.seconds = 0.0
        start = time.perf_counter()
        loss, _ = task.compute_losses(batch)
        forward = time.perf_counter() - start
        loss.backward()
        backward = time.perf_counter() - start - forward
        task.zero_grad(set_to_none=True)
        mask = batch["text_attention_mask"]
        row = {"forward_s": forward, "backward_s": backward, "text_forward_s": clock.seconds,
               "text_share_of_forward": clock.seconds / forward,
               "text_padding": 1 - float(mask.sum()) / mask.numel(), "text_shape": list(mask.shape),
               "cell_tokens": int(batch["attention_mask"].sum())}
        if step:  # the first step warms up
            rows.append(row)
        print(" ".join(f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
                       for key, value in row.items()), "(warm-up)" if not step else "", flush=True)
    summary = {key: statistics.median(row[key] for row in rows)
               for key in ("forward_s", "backward_s", "text_forward_s", "text_share_of_forward", "text_padding")}
    print(f"{args.model}: median text share of the step's forward {summary['text_share_of_forward']:.1%}, "
          f"text padding {summary['text_padding']:.1%}")
    return {"settings": vars(args), "rows": rows, "summary": summary}


if __name__ == "__main__":
    main()
