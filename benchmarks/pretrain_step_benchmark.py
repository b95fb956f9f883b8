"""Pre-training step speed: real (non-pad) gene tokens per second for forward + backward +
optimizer step of masked gene modelling on the cell encoder, ours against the strongest fair
baseline, at the official model size and at the tiny one, in one process.

    python -m benchmarks.pretrain_step_benchmark                        # tiny and official sizes, CPU fp32
    python -m benchmarks.pretrain_step_benchmark --device cuda --precision bf16 --cells 256

Cases per model size, all on the same cells (``--length-source real``, the default: real cells
tokenized from the bundled full-gene datasets ``garnett_pbmc_facs``, ``baron_mouse_pancreas`` and
``zeisel_mouse_brain`` (genes detected per cell, capped at 2,047 + ``<cls>`` as Geneformer/LangCell),
drawn with the seed; ``synthetic``: lengths log-normal around 700, clipped to 200..2047), the same
cells per step, the same weights at the start and the same AdamW step:

- ``ours``: ``LangCellPretraining``'s masked-gene-modelling objective (the registered ``mgm``
  objective on a ``LangCellModel``): length-grouped batches padded to the batch maximum, SDPA,
  the gene head only at the masked positions;
- ``ours_packed``: the same objective on the same cells per step packed into one row without
  padding (``CellBatchCollator(packed=True)``'s layout), block-diagonal attention (FlashAttention's
  variable-length kernel on CUDA when installed, else SDPA per cell);
- ``ours_packed_budget``: ``ours_packed`` on batches cut by a token budget
  (``TokenBudgetBatchSampler``, length-grouped, at most 4 x ``--batch-size`` cells) equal to the
  largest padded batch of ``ours`` (cells x longest cell): the same peak activation memory, more
  cells per step where ``ours`` pads;
- ``ours_packed_no_attention_dropout``: ``ours_packed`` with the cell encoder's attention dropout
  set to 0 (the official config has 0.02): a training change, not a like-for-like speed-up, so
  its own row; on CPU, SDPA with dropout runs its math path;
- ``hf_sdpa_grouped`` (the headline baseline): transformers ``BertForMaskedLM`` with
  ``attn_implementation="sdpa"``, the same length-grouped batches padded to the batch maximum
  (as the official collator pads and Geneformer's pretrainer groups), the full gene head over the
  vocabulary at every position;
- ``hf_eager_pad2048`` (context only, not a headline): ``BertForMaskedLM`` with eager attention,
  batches in random order with every cell padded to 2048, full gene head.

Sizes: ``tiny`` and ``official`` are the cell encoders of the ``tiny`` and ``langcell`` presets
(the official one is Geneformer-12L-30M's shape); ``custom`` takes ``--layers/--hidden/--heads``.
Each case runs ``--warmup`` steps on other cells, then one timed pass over the size's timed cells
(``--cells``; ``--official-cells`` for the official size); the cases take their steps in turn
(step 1 of every case, then step 2, ...), so a loaded machine slows them alike. Every row shows the
median step time, real tokens/s (total real tokens / total step time; ``median_tokens_per_s``:
the median over its steps), the padding efficiency of its batches (real / computed tokens), the ratio of its tokens/s to ``hf_sdpa_grouped``'s (and ``x ours``, to ``ours``'s) at the same size, model FLOPs
utilisation (MFU) against the machine's measured GEMM rate (``--gemm-size``) and the peak memory
(CUDA ``max_memory_allocated``, or the process's resident high-water mark on CPU; see
:mod:`benchmarks.memory`). Before timing, both sides compute the MGM loss of the first timed
batch from the same weights in eval mode (``loss_check``): they must agree.

``--compile`` wraps the cell encoder of ``ours`` and the packed cases in ``torch.compile`` (dynamic
shapes; off by default: see the README's pre-training speed notes for the measurement); the first
step of each compiled case (compilation included) is reported as ``first_step_s``.

``--lengths 128,256,512`` adds a length scaling on the first size: for each length, ``ours`` and
``hf_sdpa_grouped`` on cells of exactly that many tokens (CLS included), ``--warmup`` then
``--scaling-steps`` timed steps.

``padding_plan`` (no model run): on every bundled real cell, per batch size (``--batch-size`` and 8)
and batching (length-grouped as the data module does, or random), the real / padded tokens, the
packed / padded attention pairs and the padded / packed encoder FLOPs at the official size: the
most packing can save on that length distribution.

``main(argv)`` returns ``{"settings", "rows", "cases", "headline", "context", "loss_check", "scaling", "padding_plan"}``:
``rows`` (also ``cases``, the key ``benchmarks.run`` reads) has one dict per (size, case) with
``size, case, role, steps, step_ms, first_step_s, tokens_per_s, median_tokens_per_s, padding_efficiency, mfu,
peak_mib, peak_source, ratio, ratio_vs_ours``; ``headline`` maps each
size to ours / ``hf_sdpa_grouped`` tokens/s, ``packed`` to ours_packed / ``hf_sdpa_grouped``,
``context`` to ours / ``hf_eager_pad2048`` where it ran; ``loss_check`` maps each size to
``{"ours", "baseline", "ours_packed"}`` losses; ``scaling`` has one dict
per (case, length) with ``case, length, step_ms, tokens_per_s, ratio`` (``hf_sdpa_grouped`` step
time over the case's).
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from transformers import BertForMaskedLM

from benchmarks.memory import peak_memory, reset_peak

from lightning_langcell.data.collate import pack_cells, pad_token_lists
from lightning_langcell.data.sampling import LengthGroupedBatchSampler, TokenBudgetBatchSampler
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.config import PRESETS
from lightning_langcell.objectives import PretrainingStep, mask_genes, registered_objectives
from lightning_langcell.tokenization import CLS_ID, CellTokenizer

BASELINE = "hf_sdpa_grouped"
CONTEXT = "hf_eager_pad2048"
PACKED = "ours_packed"
BUDGET = "ours_packed_budget"
NO_ATTENTION_DROPOUT = "ours_packed_no_attention_dropout"
PACKED_CASES = (PACKED, BUDGET, NO_ATTENTION_DROPOUT)
CASES = ("ours", PACKED, BUDGET, NO_ATTENTION_DROPOUT, BASELINE, CONTEXT)
ROLES = {"ours": "ours", PACKED: "ours, packed (no padding)",
         BUDGET: "ours, packed, token budget = ours's largest padded batch",
         NO_ATTENTION_DROPOUT: "ours, packed, attention dropout 0 (a training change only this row gets)",
         BASELINE: "headline baseline",
         CONTEXT: "context only (pad-to-2048 eager)"}
REAL_DATASETS = ("garnett_pbmc_facs", "baron_mouse_pancreas", "zeisel_mouse_brain")
"""Bundled datasets with every detected gene kept (the others hold 2,000 selected genes only)."""
CELLS_DIR = Path(__file__).resolve().parent.parent / "data" / "cells"
SIZES = ("tiny", "official", "custom")
PADDED_LENGTH = 2048


def cell_lengths(cells: int, seed: int) -> np.ndarray:
    """Gene counts per cell: log-normal around 700, clipped to 200..2047."""
    rng = np.random.default_rng(seed)
    return np.clip(rng.lognormal(np.log(700), 0.6, cells), 200, 2047).astype(int)


def real_cell_pool() -> list[np.ndarray]:
    """Every cell of :data:`REAL_DATASETS`, tokenized (at most 2,047 genes, as the model takes them)."""
    tokenizer = CellTokenizer(max_genes=PADDED_LENGTH - 1)
    return [cell for name in REAL_DATASETS for cell in tokenizer.tokenize(str(CELLS_DIR / f"{name}.h5ad"))]


def real_cells(count: int, seed: int, pool: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """``count`` real cells drawn with ``seed`` from ``pool`` (default :func:`real_cell_pool`)."""
    pool = real_cell_pool() if pool is None else pool
    picks = np.random.default_rng(seed).choice(len(pool), size=count, replace=count > len(pool))
    return [pool[i] for i in picks]


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


def cell_config(size: str, args) -> dict:
    """The cell encoder's BertConfig keys of a benchmark size."""
    if size == "custom":
        return {**PRESETS["tiny"]["cell"], "hidden_size": args.hidden, "num_hidden_layers": args.layers,
                "num_attention_heads": args.heads, "intermediate_size": 2 * args.hidden}
    return dict(PRESETS["langcell" if size == "official" else "tiny"]["cell"])


def encoder_flops(cell: dict, tokens: float, attention_pairs: float) -> float:
    """Forward FLOPs of the cell encoder over ``tokens`` positions and ``attention_pairs`` (query, key) pairs."""
    hidden, layers, ffn = cell["hidden_size"], cell["num_hidden_layers"], cell["intermediate_size"]
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    return per_token_layer * layers * tokens + 4 * hidden * layers * attention_pairs


def model_flops_per_step(cell: dict, attention_mask: torch.Tensor, masked: int) -> float:
    """Useful training FLOPs of one step: 6 x (encoder params x real tokens) + attention over the
    real lengths + the gene head at the masked positions (fwd + bwd = 3 x fwd)."""
    hidden, vocab = cell["hidden_size"], cell["vocab_size"]
    lengths = attention_mask.sum(1).double()
    head = 2 * masked * (hidden * hidden + hidden * vocab)
    return 3 * (encoder_flops(cell, float(lengths.sum()), float((lengths**2).sum())) + head)


def padding_plan(lengths: np.ndarray, batch_sizes: list[int], cell: dict, seed: int) -> list[dict]:
    """What packing can save on cells of ``lengths`` (genes): per batch size and batching (length-grouped
    as the data module does, pool of 50 batches, or random), the real / padded tokens, the packed /
    padded attention pairs and the padded / packed encoder FLOPs at the ``cell`` size."""
    tokens = np.minimum(lengths + 1, PADDED_LENGTH).astype(float)
    rows = []
    for batch_size in batch_sizes:
        for grouped in (True, False):
            padded = packed = pairs_padded = pairs_packed = 0.0
            for batch in make_batches(lengths, batch_size, grouped, seed):
                counts = tokens[batch]
                padded += counts.size * counts.max()
                packed += counts.sum()
                pairs_padded += counts.size * counts.max() ** 2
                pairs_packed += (counts**2).sum()
            rows.append({"batch_size": batch_size, "batching": "length-grouped" if grouped else "random",
                         "cells": len(lengths), "token_efficiency": packed / padded,
                         "attention_pairs_packed_over_padded": pairs_packed / pairs_padded,
                         "flops_padded_over_packed": encoder_flops(cell, padded, pairs_padded)
                         / encoder_flops(cell, packed, pairs_packed)})
    return rows


class OursStep:
    """``LangCellPretraining``'s MGM objective on a ``LangCellModel`` (gene head at masked positions)."""

    def __init__(self, cell: dict, device: torch.device):
        config = LangCellConfig.preset("tiny", cell=cell, attn_implementation="sdpa", cell_pooling="cls")
        self.model = LangCellModel(config).to(device)
        self.objective = registered_objectives()["mgm"]
        self.parameters = list(self.model.cell_bert.parameters()) + list(self.model.mgm_head.parameters())

    def prepare(self, input_ids, attention_mask, masked_ids, labels) -> tuple:
        """The arguments of :meth:`loss` for one padded batch (made before the step is timed)."""
        return ({"input_ids": input_ids, "attention_mask": attention_mask, "mgm_input_ids": masked_ids,
                 "mgm_labels": labels},)

    def loss(self, batch) -> torch.Tensor:
        loss, _ = self.objective.compute(PretrainingStep(self.model, batch))
        return loss

    def train(self, mode: bool) -> None:
        self.model.train(mode)

    def compile(self) -> None:
        self.model.cell_bert.compile(dynamic=True)


class OursPackedStep(OursStep):
    """``ours`` on the same cells packed into one row (block-diagonal attention), from ``ours``'s weights."""

    def __init__(self, ours: OursStep, attention_dropout: float | None = None):
        if attention_dropout is None:
            self.model = copy.deepcopy(ours.model)
        else:  # ours's weights in a model built from ours's config with another attention dropout
            config = copy.deepcopy(ours.model.config)
            config.cell.attention_probs_dropout_prob = attention_dropout
            self.model = LangCellModel(config).to(next(ours.model.parameters()).device)
            self.model.load_state_dict(ours.model.state_dict())
        self.objective = ours.objective
        self.parameters = list(self.model.cell_bert.parameters()) + list(self.model.mgm_head.parameters())

    def prepare(self, input_ids, attention_mask, masked_ids, labels) -> tuple:
        (batch,) = super().prepare(input_ids.cpu(), attention_mask.cpu(), masked_ids.cpu(), labels.cpu())
        device = input_ids.device
        return ({key: value.to(device) if isinstance(value, torch.Tensor) else value
                 for key, value in pack_cells(batch).items()},)


class HuggingFaceStep:
    """transformers ``BertForMaskedLM`` (full gene head over every position), started from ``ours``'s weights."""

    def __init__(self, ours: OursStep, attention: str, device: torch.device):
        self.model = BertForMaskedLM(ours.model.config.cell_bert_config()).to(device)
        if hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(attention)
        else:  # transformers < 4.48
            self.model.config._attn_implementation = attention
        self.model.bert.load_state_dict(ours.model.cell_bert.state_dict())
        head = ours.model.mgm_head
        self.model.cls.predictions.transform.load_state_dict(
            {key: value for key, value in head.transform.state_dict().items()})
        with torch.no_grad():
            self.model.cls.predictions.bias.copy_(head.bias)
        self.parameters = list(self.model.parameters())

    def prepare(self, input_ids, attention_mask, masked_ids, labels) -> tuple:
        return input_ids, attention_mask, masked_ids, labels

    def loss(self, input_ids, attention_mask, masked_ids, labels) -> torch.Tensor:
        return self.model(input_ids=masked_ids, attention_mask=attention_mask, labels=labels).loss

    def train(self, mode: bool) -> None:
        self.model.train(mode)


def tensors(cells, batch, pad_to: int | None, seed: int, device):
    """(input_ids, attention_mask, masked ids, labels) of one batch, on ``device``."""
    ids, mask = pad_token_lists([cells[i] for i in batch], CLS_ID, PADDED_LENGTH)
    if pad_to is not None:
        ids = torch.nn.functional.pad(ids, (0, pad_to - ids.shape[1]))
        mask = torch.nn.functional.pad(mask, (0, pad_to - mask.shape[1]))
    masked_ids, labels = mask_genes(ids, mask, 0.15, seed=seed, indices=torch.tensor(batch))
    return ids.to(device), mask.to(device), masked_ids.to(device), labels.to(device)


def build_case(name: str, ours: OursStep, device):
    if name == "ours":
        return ours
    if name in PACKED_CASES:
        return OursPackedStep(ours, attention_dropout=0.0 if name == NO_ATTENTION_DROPOUT else None)
    return HuggingFaceStep(ours, "sdpa" if name == BASELINE else "eager", device)


class CaseRun:
    """One case's training run, a step at a time (so several cases can take their steps in turn):
    step times, real and computed tokens, model FLOPs and the peak memory of its own steps."""

    def __init__(self, runner, name, size, cell, args, cells, device, autocast_dtype):
        self.runner, self.name, self.size, self.cell, self.args = runner, name, size, cell, args
        self.cells, self.device, self.autocast_dtype = cells, device, autocast_dtype
        self.pad_to = PADDED_LENGTH if name == CONTEXT else None
        torch.manual_seed(0)
        runner.train(True)
        self.optimizer = torch.optim.AdamW(runner.parameters, lr=1e-4)
        self.times, self.real_tokens, self.computed_tokens, self.flops = [], [], [], []
        self.first_step_s = None
        self.peak = (0.0, "")

    def step(self, batch, timed: bool) -> None:
        """One forward + backward + AdamW step on ``batch`` (indices into the cells)."""
        ids, mask, masked_ids, labels = tensors(self.cells, batch, self.pad_to, self.args.seed, self.device)
        inputs = self.runner.prepare(ids, mask, masked_ids, labels)
        reset_peak(self.device)
        _sync(self.device)
        start = time.perf_counter()
        with torch.autocast(self.device.type, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None):
            loss = self.runner.loss(*inputs)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        _sync(self.device)
        seconds = time.perf_counter() - start
        if self.first_step_s is None:
            self.first_step_s = seconds  # compilation included when compiled
        if timed:
            peak = peak_memory(self.device)
            self.peak = max(self.peak, peak)
            self.times.append(seconds)
            self.real_tokens.append(int(mask.sum()))
            packed = self.name in PACKED_CASES
            self.computed_tokens.append(int(mask.sum()) if packed else mask.numel())
            self.flops.append(model_flops_per_step(self.cell, mask, int((labels != -100).sum())))

    def row(self, gemm_rate: float) -> dict:
        seconds = sum(self.times)
        return {
            "size": self.size,
            "case": self.name,
            "role": ROLES[self.name],
            "steps": len(self.times),
            "step_ms": 1000 * statistics.median(self.times),
            "first_step_s": self.first_step_s,
            "tokens_per_s": sum(self.real_tokens) / seconds,
            "median_tokens_per_s": statistics.median(t / s for t, s in zip(self.real_tokens, self.times)),
            "padding_efficiency": sum(self.real_tokens) / sum(self.computed_tokens),
            "mfu": sum(self.flops) / seconds / gemm_rate,
            "peak_mib": self.peak[0],
            "peak_source": self.peak[1],
        }


def run_cases(runs: dict, plans: dict) -> None:
    """Every case's warm-up then timed steps, the cases in turn step by step. ``plans`` maps a case
    to (warm batches, timed batches)."""
    for name, (warm, _) in plans.items():
        for batch in warm:
            runs[name].step(batch, timed=False)
    timed = [[(name, batch) for batch in plans[name][1]] for name in plans]
    for turn in itertools.zip_longest(*timed):
        for name, batch in filter(None, turn):
            runs[name].step(batch, timed=True)


def run_case(runner, name, size, cell, args, cells, warm, timed, device, autocast_dtype, gemm_rate) -> dict:
    """Train ``runner`` for ``warm`` then ``timed`` batches (lists of indices into ``cells``); timings,
    real tokens/s, MFU and peak memory over the timed batches."""
    run = CaseRun(runner, name, size, cell, args, cells, device, autocast_dtype)
    run_cases({name: run}, {name: (warm, timed)})
    return run.row(gemm_rate)


def budget_batches(lengths: np.ndarray, grouped: list[list[int]], batch_size: int, seed: int) -> list[list[int]]:
    """Token-budget batches of the same cells whose budget is the largest padded batch of ``grouped``
    (cells x longest cell, ``<cls>`` included), at most 4 x ``batch_size`` cells."""
    tokens = np.minimum(lengths + 1, PADDED_LENGTH)
    budget = max(len(batch) * int(tokens[batch].max()) for batch in grouped)
    sampler = TokenBudgetBatchSampler(lengths, budget, 4 * batch_size, max_length=PADDED_LENGTH, seed=seed,
                                      num_replicas=1, rank=0)
    return [list(batch) for batch in sampler]


def same_batch_losses(runners: dict, cells, batch, seed, device) -> dict:
    """Every side's MGM loss of one batch from the same weights, eval mode (no dropout), fp32."""
    ids, mask, masked_ids, labels = tensors(cells, batch, None, seed, device)
    losses = {}
    for name, runner in runners.items():
        runner.train(False)
        with torch.no_grad():
            loss = runner.loss(*runner.prepare(ids, mask, masked_ids, labels))
        losses["baseline" if name == BASELINE else name] = float(loss)
    return losses


def make_batches(lengths, batch_size, grouped: bool, seed: int) -> list[list[int]]:
    if grouped:
        sampler = LengthGroupedBatchSampler(lengths, batch_size, seed=seed, num_replicas=1, rank=0)
        return [list(batch) for batch in sampler]
    order = np.random.default_rng(seed).permutation(len(lengths))
    return [order[i : i + batch_size].tolist() for i in range(0, len(order), batch_size)]


def consecutive_batches(start: int, count: int, batch_size: int) -> list[list[int]]:
    """``count`` batches of consecutive cell indices from ``start``."""
    return [list(range(start + i * batch_size, start + (i + 1) * batch_size)) for i in range(count)]


def run_size(size: str, args, device, autocast_dtype, gemm_rate) -> tuple[list[dict], dict]:
    """Every case of one model size on the same cells; returns (rows, loss check)."""
    cell = cell_config(size, args)
    count = args.official_cells if size == "official" else args.cells
    total = count + args.warmup * args.batch_size
    if args.length_source == "real":
        cells = real_cells(total, args.seed)
        lengths = np.array([min(len(tokens), PADDED_LENGTH - 1) for tokens in cells])
    else:
        lengths = cell_lengths(total, args.seed)
        cells = synthetic_cells(lengths, args.seed)
    warm = consecutive_batches(count, args.warmup, args.batch_size)
    cases = [name for name in CASES if name != CONTEXT or size in args.context_sizes]
    torch.manual_seed(args.seed)
    ours = OursStep(cell, device)
    runners = {name: build_case(name, ours, device) for name in cases}  # same weights before any step
    grouped = make_batches(lengths[:count], args.batch_size, True, args.seed)
    check = same_batch_losses({name: runners[name] for name in ("ours", PACKED, BASELINE)}, cells, grouped[0],
                              args.seed, device)
    if args.compile:
        for name in ("ours", *PACKED_CASES):
            runners[name].compile()
    plans = {name: (warm, grouped) for name in cases}
    plans[BUDGET] = (warm, budget_batches(lengths[:count], grouped, args.batch_size, args.seed))
    if CONTEXT in plans:
        plans[CONTEXT] = (warm, make_batches(lengths[:count], args.batch_size, False, args.seed))
    runs = {name: CaseRun(runners[name], name, size, cell, args, cells, device, autocast_dtype) for name in cases}
    run_cases(runs, plans)
    rows = [runs[name].row(gemm_rate) for name in cases]
    base = rows[cases.index(BASELINE)]["tokens_per_s"]
    ours_rate = rows[cases.index("ours")]["tokens_per_s"]
    for row in rows:
        row["ratio"] = row["tokens_per_s"] / base
        row["ratio_vs_ours"] = row["tokens_per_s"] / ours_rate
    return rows, check


def length_scaling(size: str, args, device, autocast_dtype, gemm_rate) -> list[dict]:
    """``ours`` and ``hf_sdpa_grouped`` on cells of exactly ``length`` tokens (CLS included) per length."""
    rows = []
    cell = cell_config(size, args)
    for length in args.lengths:
        steps = args.warmup + args.scaling_steps
        cells = synthetic_cells(np.full(steps * args.batch_size, length - 1), args.seed + length)
        warm = consecutive_batches(0, args.warmup, args.batch_size)
        timed = consecutive_batches(args.warmup * args.batch_size, args.scaling_steps, args.batch_size)
        torch.manual_seed(args.seed)
        ours = OursStep(cell, device)
        runners = {"ours": ours, BASELINE: build_case(BASELINE, ours, device)}
        found = {name: run_case(runner, name, size, cell, args, cells, warm, timed, device, autocast_dtype, gemm_rate)
                 for name, runner in runners.items()}
        for name, row in found.items():
            rows.append({"case": name, "length": length, "step_ms": row["step_ms"],
                         "tokens_per_s": row["tokens_per_s"],
                         "ratio": found[BASELINE]["step_ms"] / row["step_ms"]})
    return rows


def parse_lengths(text: str) -> list[int]:
    """``"128,256"`` -> [128, 256]; each length must be 2..2048 tokens (CLS + at least one gene)."""
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--lengths {text!r} is not a comma list of integers, e.g. 128,256,512")
    if any(not 2 <= length <= PADDED_LENGTH for length in lengths):
        raise argparse.ArgumentTypeError(f"--lengths {text!r}: every length must be 2..2048 tokens")
    return lengths


def parse_sizes(text: str) -> list[str]:
    """``"tiny,official"`` -> ["tiny", "official"] (each one of tiny, official, custom)."""
    sizes = [part.strip() for part in text.split(",") if part.strip()]
    if any(size not in SIZES for size in sizes):
        raise argparse.ArgumentTypeError(f"--sizes {text!r}: each size must be one of {', '.join(SIZES)}")
    return sizes


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=parse_sizes, default=["tiny", "official"],
                        help="comma list of model sizes: tiny, official, custom (default tiny,official)")
    parser.add_argument("--context-sizes", type=parse_sizes, default=["tiny", "official"],
                        help="sizes that also run the pad-to-2048 eager context row")
    parser.add_argument("--layers", type=int, default=4, help="custom size")
    parser.add_argument("--hidden", type=int, default=256, help="custom size")
    parser.add_argument("--heads", type=int, default=4, help="custom size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--cells", type=int, default=48, help="timed cells (one pass) at the tiny/custom size")
    parser.add_argument("--official-cells", type=int, default=16, help="timed cells at the official size")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before each case")
    parser.add_argument("--length-source", choices=("real", "synthetic"), default="real",
                        help="cells: real bundled cells (default) or synthetic log-normal lengths")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gemm-size", type=int, default=2048, help="square matmul size for the MFU peak")
    parser.add_argument("--lengths", type=parse_lengths, default=[],
                        help="comma list of tokens per cell for the length scaling, e.g. 128,256,512 (default: off)")
    parser.add_argument("--scaling-steps", type=int, default=2, help="timed steps per case and length")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the cell encoder of ours and the packed cases (default: off)")
    return run_with_threads(run, parser.parse_args(argv))


def run_with_threads(run, args):
    """``run(args)`` with torch's CPU threads set to ``args.threads``, restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)


def run(args) -> dict:
    device = torch.device(args.device)
    autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    gemm_rate = measure_gemm_flops(device, autocast_dtype or torch.float32, size=args.gemm_size)
    print(f"device={device} precision={args.precision} cells from {args.length_source} batch={args.batch_size} cells={args.cells} "
          f"official_cells={args.official_cells} gemm={gemm_rate / 1e9:.1f} GFLOP/s")
    rows, checks = [], {}
    print(f"{'size':<10}{'case':<20}{'steps':>6}{'step ms':>10}{'real tok/s':>12}{'median':>10}{'pad eff':>8}"
          f"{'x fair':>8}{'x ours':>8}{'MFU':>8}{'peak MiB':>10}{'1st step s':>11}")
    for size in args.sizes:  # each size's rows as soon as they are measured
        found, checks[size] = run_size(size, args, device, autocast_dtype, gemm_rate)
        rows.extend(found)
        for row in found:
            label = "  (context: pad-to-2048 eager)" if row["case"] == CONTEXT else ""
            print(f"{row['size']:<10}{row['case']:<20}{row['steps']:>6}{row['step_ms']:>10.1f}"
                  f"{row['tokens_per_s']:>12.1f}{row['median_tokens_per_s']:>10.1f}{row['padding_efficiency']:>8.3f}"
                  f"{row['ratio']:>8.2f}{row['ratio_vs_ours']:>8.2f}{row['mfu']:>8.1%}{row['peak_mib']:>10.0f}"
                  f"{row['first_step_s']:>11.2f}{label}", flush=True)
    headline = {row["size"]: row["ratio"] for row in rows if row["case"] == "ours"}
    packed = {row["size"]: row["ratio"] for row in rows if row["case"] == PACKED}
    context = {row["size"]: headline[row["size"]] / row["ratio"] for row in rows if row["case"] == CONTEXT}
    print(f"(peak memory: {rows[0]['peak_source']})" if rows else "")
    for size in args.sizes:
        extra = f"; ours / pad-to-2048 eager (context): {context[size]:.2f}x" if size in context else ""
        print(f"headline {size}: ours / {BASELINE} = {headline[size]:.2f}x real tokens/s, packed "
              f"{packed[size]:.2f}x ({packed[size] / headline[size]:.2f}x ours){extra}; same-batch MGM loss "
              f"ours {checks[size]['ours']:.5f}, packed {checks[size][PACKED]:.5f}, baseline {checks[size]['baseline']:.5f}")
    scaling = length_scaling(args.sizes[0], args, device, autocast_dtype, gemm_rate) if args.sizes else []
    if scaling:
        print(f"\nlength scaling ({args.sizes[0]} size, every cell exactly `length` tokens):\n"
              f"{'case':<20}{'length':>8}{'step ms':>10}{'real tok/s':>12}{'x fair':>8}")
        for row in scaling:
            print(f"{row['case']:<20}{row['length']:>8}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.1f}"
                  f"{row['ratio']:>8.2f}")
    plan = padding_plan(np.array([len(cell) for cell in real_cell_pool()]), sorted({args.batch_size, 8}),
                        cell_config("official", args), args.seed)
    print(f"\npadding plan (every bundled real cell, official size; what packing can save):\n"
          f"{'batch':>6} {'batching':<15}{'real/padded tokens':>20}{'attn pairs packed/padded':>26}"
          f"{'FLOPs padded/packed':>21}")
    for row in plan:
        print(f"{row['batch_size']:>6} {row['batching']:<15}{row['token_efficiency']:>20.3f}"
              f"{row['attention_pairs_packed_over_padded']:>26.3f}{row['flops_padded_over_packed']:>21.3f}")
    return {"settings": vars(args), "rows": rows, "cases": rows, "headline": headline, "packed": packed,
            "context": context, "loss_check": checks, "scaling": scaling, "padding_plan": plan}


if __name__ == "__main__":
    main()
