"""Does the data path outrun the model? Pre-training throughput of the cell encoder against the
train loader's, in cells/s on cells of one length distribution (CPU, fp32).

    python -m benchmarks.loader_vs_model                      # official size, 20,000-cell corpus
    python -m benchmarks.loader_vs_model --size tiny --cells 2000 --model-steps 2

- ``model``: forward + backward of the masked-gene-modelling objective (``OursStep`` of
  :mod:`benchmarks.pretrain_step_benchmark`: ``LangCellPretraining``'s ``mgm`` objective, gene head
  at the masked positions) at ``--size`` (``official``: the 12-layer × 512 cell encoder),
  length-grouped batches of ``--model-batch`` cells, one warm-up step then ``--model-steps`` timed,
  on 1 thread and on all CPUs (``torch.set_num_threads``, restored afterwards);
- ``loader``: ``LangCellDataModule``'s masked train batches (MGM 0.15, ``max_length`` 2048, texts
  and labels from ``cell_type``, ``--loader-batch`` cells) over a synthetic corpus of ``--cells``
  cells, 0 and 2 workers (first batch excluded), written in a temporary folder.

Cell lengths of both: :func:`benchmarks.pretrain_step_benchmark.cell_lengths` (log-normal around
700 genes, clipped to 200..2047). ``ratio_min`` = the slower loader's cells/s over the faster
model's: the loader outruns the model by that factor at least (target ≥ 10).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

TARGET_RATIO = 10.0


def model_rates(size: str, batch: int, steps: int, seed: int, threads: list[int]) -> list[dict]:
    """Cells/s and tokens/s of forward + backward of the MGM objective, one row per thread count."""
    import torch

    from benchmarks.pretrain_step_benchmark import OursStep, cell_config, cell_lengths, make_batches, \
        synthetic_cells, tensors

    lengths = cell_lengths(batch * (steps + 1), seed)
    cells = synthetic_cells(lengths, seed)
    batches = make_batches(lengths, batch, grouped=True, seed=seed)
    device = torch.device("cpu")
    torch.manual_seed(seed)
    runner = OursStep(cell_config(size, None), device)
    runner.train(True)
    before = torch.get_num_threads()
    rows = []
    try:
        for count in threads:
            torch.set_num_threads(count)
            seconds, done, tokens = 0.0, 0, 0
            for step, indices in enumerate(batches):
                ids, mask, masked_ids, labels = tensors(cells, indices, None, seed, device)
                (inputs,) = runner.prepare(ids, mask, masked_ids, labels)
                started = time.perf_counter()
                runner.loss(inputs).backward()
                elapsed = time.perf_counter() - started
                for parameter in runner.parameters:
                    parameter.grad = None
                if step > 0:  # the first batch warms up
                    seconds, done, tokens = seconds + elapsed, done + len(indices), tokens + int(mask.sum())
            rows.append({"side": "model", "setting": f"{count} thread{'s' if count > 1 else ''}", "threads": count,
                         "cells": done, "cells_per_s": done / seconds, "tokens_per_s": tokens / seconds})
    finally:
        torch.set_num_threads(before)
    return rows


def loader_rates(cells: int, batch: int, steady: int, workers: list[int], seed: int) -> list[dict]:
    """Cells/s and tokens/s of masked pre-training batches over a corpus of ``cells`` cells, per worker count."""
    from benchmarks.corpus_verify_benchmark import cache_in, write_synthetic_corpus
    from benchmarks.data_path_benchmark import CELL_TYPES, _loader_rates
    from benchmarks.pretrain_step_benchmark import cell_lengths
    from lightning_langcell.data.datamodule import LangCellDataModule

    rows = []
    with tempfile.TemporaryDirectory(prefix="loader_vs_model_") as tmp, cache_in(Path(tmp) / "cache"):
        path = Path(tmp) / "corpus"
        write_synthetic_corpus(path, cells, 0, seed, categories={"cell_type": CELL_TYPES},
                               lengths=cell_lengths(cells, seed))
        datamodule = LangCellDataModule(str(path), label_column="cell_type", texts=True, batch_size=batch,
                                        max_length=2048, split=(0.9, 0.1, 0.0), verify_digests=False,
                                        mgm_probability=0.15, seed=seed)
        datamodule.setup("fit")
        for count in workers:
            rates = _loader_rates(datamodule, count, steady)
            rows.append({"side": "loader", "setting": f"{count} workers", "workers": count,
                         "cells": rates[f"steady_cells_w{count}"], "cells_per_s": rates[f"cells_per_s_w{count}"],
                         "tokens_per_s": rates[f"tokens_per_s_w{count}"]})
        del datamodule
    return rows


def compare(model: list[dict], loader: list[dict]) -> dict:
    """The slower loader's cells/s over the faster model's (and each pairing)."""
    fastest = max(model, key=lambda row: row["cells_per_s"])
    slowest = min(loader, key=lambda row: row["cells_per_s"])
    pairs = [{"loader": lo["setting"], "model": mo["setting"], "ratio": lo["cells_per_s"] / mo["cells_per_s"]}
             for lo in loader for mo in model]
    ratio = slowest["cells_per_s"] / fastest["cells_per_s"]
    return {"ratio_min": ratio, "ratio_min_between": [slowest["setting"], fastest["setting"]], "pairs": pairs,
            "target": TARGET_RATIO, "meets_target": bool(ratio >= TARGET_RATIO)}


def measure(size: str = "official", cells: int = 20_000, model_batch: int = 2, model_steps: int = 2,
            loader_batch: int = 8, steady_batches: int = 20, workers: tuple[int, ...] = (0, 2),
            seed: int = 0) -> dict:
    """``{"settings", "rows", "ratio_min", "pairs", "target", "meets_target"}``."""
    threads = sorted({1, os.cpu_count() or 1})
    settings = {"size": size, "corpus_cells": cells, "model_batch": model_batch, "model_steps": model_steps,
                "loader_batch": loader_batch, "steady_batches": steady_batches, "workers": list(workers),
                "threads": threads, "lengths": "log-normal around 700 genes, 200..2047", "precision": "fp32",
                "mgm_probability": 0.15, "seed": seed}
    model = model_rates(size, model_batch, model_steps, seed, threads)
    loader = loader_rates(cells, loader_batch, steady_batches, list(workers), seed)
    return {"settings": settings, "rows": model + loader, **compare(model, loader)}


def print_table(result: dict) -> None:
    print(f"\n{'side':<8}{'setting':<12}{'cells':>7}{'cells/s':>12}{'tokens/s':>14}")
    for row in result["rows"]:
        print(f"{row['side']:<8}{row['setting']:<12}{row['cells']:>7}{row['cells_per_s']:>12,.2f}"
              f"{row['tokens_per_s']:>14,.0f}")
    between = " vs ".join(result["ratio_min_between"])
    print(f"loader / model (slowest loader / fastest model, {between}): {result['ratio_min']:,.1f}x "
          f"(target >= {result['target']:.0f}x: {'met' if result['meets_target'] else 'NOT met'})")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=("tiny", "official"), default="official")
    parser.add_argument("--cells", type=int, default=20_000, help="cells of the loader's corpus")
    parser.add_argument("--model-batch", type=int, default=2)
    parser.add_argument("--model-steps", type=int, default=2)
    parser.add_argument("--loader-batch", type=int, default=8)
    parser.add_argument("--steady-batches", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if min(args.cells, args.model_batch, args.model_steps, args.loader_batch, args.steady_batches) < 1:
        parser.error("--cells, --model-batch, --model-steps, --loader-batch and --steady-batches must be >= 1")
    result = measure(args.size, args.cells, args.model_batch, args.model_steps, args.loader_batch,
                     args.steady_batches, seed=args.seed)
    print_table(result)
    return result


if __name__ == "__main__":
    main()
