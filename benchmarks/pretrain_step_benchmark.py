"""Pre-training step speed: real (non-pad) gene tokens per second for forward + backward +
optimizer step of masked gene modelling on the cell encoder.

    python -m benchmarks.pretrain_step_benchmark                  # 4 layers x 256, batch 8, CPU fp32
    python -m benchmarks.pretrain_step_benchmark --device cuda --precision bf16 --layers 12 --hidden 512

Cases, all on the same seeded cells (lengths log-normal, clipped to 200..2047 genes) and the
same number of cells per step, in one process:

- ``baseline``: HF eager attention, every cell padded to 2048, gene head over every position
  (the straightforward port of Geneformer / the official collator);
- ``grouped_sdpa``: length-grouped batches padded to the batch maximum, SDPA attention;
- ``ours``: as ``grouped_sdpa`` plus the 25,427-way gene head only at masked positions
  (what ``LangCellPretraining`` does).

Each case first runs ``--warmup`` steps on other cells, then times one pass over the same
``--cells`` cells (so every case trains on exactly the same real tokens); the table shows the
median step time, real tokens/s, the ratio to the baseline, model FLOPs utilisation (MFU) against the
machine's measured fp32 (or bf16) GEMM rate (``--gemm-size``) and the peak memory:

- on CUDA, ``torch.cuda.max_memory_allocated`` of the case (reset before it), in MiB;
- on CPU, the process resident-set high-water mark (``VmHWM``) during the case, in MiB, reset before
  it (:mod:`benchmarks.memory`; the process's memory at the start is included).

``--lengths 128,256,512`` adds a length scaling: for each length, ``ours`` and ``baseline`` on batches
where every cell has exactly that many tokens (CLS included), ``--warmup`` then ``--scaling-steps``
timed steps, same layers / hidden / batch. The baseline still pads every cell to 2048, as the
official collator does, so its step time barely moves with the length while ours follows it.

``main(argv)`` returns ``{"settings", "rows", "cases", "scaling"}``: ``rows`` (also under ``cases``,
the key ``benchmarks.run`` reads) has one dict per case with ``case, step_ms, tokens_per_s, mfu,
peak_mib, peak_source, ratio`` (ratio = tokens/s over the baseline's); ``scaling`` has one dict per
(case, length) with ``case, length, step_ms, tokens_per_s, ratio`` (ratio = baseline step_ms over
the case's at that length).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.memory import peak_memory, reset_peak

from lightning_langcell.data.collate import pad_token_lists
from lightning_langcell.data.sampling import LengthGroupedBatchSampler
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.objectives import mask_genes, masked_gene_positions
from lightning_langcell.tokenization import CLS_ID


def cell_lengths(cells: int, seed: int) -> np.ndarray:
    """Gene counts per cell: log-normal around 700, clipped to 200..2047."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(700), 0.6, cells), 200, 2047).astype(int)


def synthetic_cells(lengths: np.ndarray, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return [rng.choice(np.arange(2, 25426), size=n, replace=False).astype(np.int32) for n in lengths]


def measure_gemm_flops(device: torch.device, dtype: torch.dtype, size: int = 2048, repeat: int = 10) -> float:
    """Achieved FLOP/s of a square matmul (the machine's practical peak for MFU)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeat):
        a @ b
    _sync(device)
    return 2 * size**3 * repeat / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def model_flops_per_step(config: LangCellConfig, input_ids: torch.Tensor, masked: int) -> float:
    """Useful training FLOPs of one step: 6 x (encoder params x real tokens) + attention over the
    real lengths + the gene head at the masked positions (fwd + bwd = 3 x fwd)."""
    cell = config.cell
    hidden, layers, ffn, vocab = cell.hidden_size, cell.num_hidden_layers, cell.intermediate_size, cell.vocab_size
    lengths = (input_ids > 0).sum(1).double()
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    dense = per_token_layer * layers * float(lengths.sum())
    attention = 4 * hidden * layers * float((lengths**2).sum())
    head = 2 * masked * (hidden * hidden + hidden * vocab)
    return 3 * (dense + attention + head)


def make_batches(cells, lengths, batch_size, grouped: bool, seed: int) -> list[list[int]]:
    if grouped:
        sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed, num_replicas=1, rank=0)
        return [list(batch) for batch in sampler]
    order = np.random.default_rng(seed).permutation(len(cells))
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def run_case(name, args, cells, warm, timed, device, autocast_dtype, gemm_rate) -> dict:
    """Train one case for ``warm`` then ``timed`` batches (lists of indices into ``cells``); timings,
    real tokens/s, MFU and peak memory over the timed batches."""
    torch.manual_seed(0)
    reset_peak(device)
    grouped = name != "baseline"
    config = LangCellConfig.preset(
        "tiny",
        cell={"hidden_size": args.hidden, "num_hidden_layers": args.layers, "num_attention_heads": args.heads,
              "intermediate_size": 2 * args.hidden},
        attn_implementation="eager" if name == "baseline" else "sdpa",
        cell_pooling="cls",
    )
    model = LangCellModel(config).to(device)
    params = list(model.cell_bert.parameters()) + list(model.mgm_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-4)
    times, real_tokens, flops = [], [], []
    for step, batch in enumerate(warm + timed):
        max_length = 2048 if grouped else 10**9
        ids, mask = pad_token_lists([cells[i] for i in batch], CLS_ID, max_length)
        if not grouped:  # pad every cell to 2048
            ids = F.pad(ids, (0, 2048 - ids.shape[1]))
            mask = F.pad(mask, (0, 2048 - mask.shape[1]))
        masked_ids, labels = mask_genes(ids, mask, 0.15, seed=args.seed, indices=torch.tensor(batch))
        masked_ids, mask, labels = masked_ids.to(device), mask.to(device), labels.to(device)
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            hidden = model.cell_bert(input_ids=masked_ids, attention_mask=mask).last_hidden_state
            if name == "ours":
                logits = model.mgm_logits(hidden, masked_gene_positions(labels))
                loss = F.cross_entropy(logits.float(), labels[masked_gene_positions(labels)])
            else:
                logits = model.mgm_head(hidden, model.cell_bert.embeddings.word_embeddings.weight)
                loss = F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=-100)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= len(warm):
            times.append(time.perf_counter() - start)
            real_tokens.append(int(mask.sum()))
            flops.append(model_flops_per_step(config, masked_ids * mask, int((labels != -100).sum())))
    seconds = sum(times)
    peak_mib, peak_source = peak_memory(device)
    return {
        "case": name,
        "step_ms": 1000 * statistics.median(times),
        "tokens_per_s": sum(real_tokens) / seconds,
        "mfu": sum(flops) / seconds / gemm_rate,
        "peak_mib": peak_mib,
        "peak_source": peak_source,
    }


def consecutive_batches(start: int, count: int, batch_size: int) -> list[list[int]]:
    """``count`` batches of consecutive cell indices from ``start``."""
    return [list(range(start + i * batch_size, start + (i + 1) * batch_size)) for i in range(count)]


def length_scaling(args, device, autocast_dtype, gemm_rate) -> list[dict]:
    """``ours`` and ``baseline`` on cells of exactly ``length`` tokens (CLS included) for each length."""
    rows = []
    for length in args.lengths:
        steps = args.warmup + args.scaling_steps
        cells = synthetic_cells(np.full(steps * args.batch_size, length - 1), args.seed + length)
        warm = consecutive_batches(0, args.warmup, args.batch_size)
        timed = consecutive_batches(args.warmup * args.batch_size, args.scaling_steps, args.batch_size)
        found = {name: run_case(name, args, cells, warm, timed, device, autocast_dtype, gemm_rate)
                 for name in ("ours", "baseline")}
        for name, row in found.items():
            rows.append({"case": name, "length": length, "step_ms": row["step_ms"],
                         "tokens_per_s": row["tokens_per_s"],
                         "ratio": found["baseline"]["step_ms"] / row["step_ms"]})
    return rows


def parse_lengths(text: str) -> list[int]:
    """``"128,256"`` -> [128, 256]; each length must be 2..2048 tokens (CLS + at least one gene)."""
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lengths {text!r} is not a comma list of integers, e.g. 128,256,512")
    if any(not 2 <= length <= 2048 for length in lengths):
        raise argparse.ArgumentTypeError(f"--lengths {text!r}: every length must be 2..2048 tokens")
    return lengths


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cells", type=int, default=48, help="timed cells (one pass)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each case")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gemm-size", type=int, default=2048, help="square matmul size for the MFU peak")
    parser.add_argument("--lengths", type=parse_lengths, default=[],
                        help="comma list of tokens per cell for the length scaling, e.g. 128,256,512 (default: off)")
    parser.add_argument("--scaling-steps", type=int, default=2, help="timed steps per case and length")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    gemm_rate = measure_gemm_flops(device, autocast_dtype or torch.float32, size=args.gemm_size)
    lengths = cell_lengths(args.cells + args.warmup * args.batch_size, args.seed)
    cells = synthetic_cells(lengths, args.seed)
    print(f"device={device} precision={args.precision} layers={args.layers} hidden={args.hidden} "
          f"batch={args.batch_size} cells={args.cells} gemm={gemm_rate / 1e9:.1f} GFLOP/s")
    warm = consecutive_batches(args.cells, args.warmup, args.batch_size)
    rows = []
    for name in ("ours", "grouped_sdpa", "baseline"):
        grouped = name != "baseline"
        timed = make_batches(cells[: args.cells], lengths[: args.cells], args.batch_size, grouped, args.seed)
        rows.append(run_case(name, args, cells, warm, timed, device, autocast_dtype, gemm_rate))
    base = rows[-1]["tokens_per_s"]
    print(f"{'case':<14}{'step ms':>10}{'real tok/s':>12}{'ratio':>8}{'MFU':>8}{'peak MiB':>10}"
          f"  ({rows[0]['peak_source']})")
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / base
        print(f"{row['case']:<14}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.1f}{row['ratio']:>8.2f}"
              f"{row['mfu']:>8.1%}{row['peak_mib']:>10.0f}")
    scaling = length_scaling(args, device, autocast_dtype, gemm_rate)
    if scaling:
        print(f"\nlength scaling (baseline pads every cell to 2048):\n{'case':<10}{'length':>8}{'step ms':>10}"
              f"{'real tok/s':>12}{'x base':>8}")
        for row in scaling:
            print(f"{row['case']:<10}{row['length']:>8}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.1f}"
                  f"{row['ratio']:>8.2f}")
    return {"settings": vars(args), "rows": rows, "cases": rows, "scaling": scaling}


if __name__ == "__main__":
    main()
