"""Pre-training step speed: real (non-pad) gene tokens per second for forward + backward +
optimizer step of masked gene modelling on the cell encoder, ours against the strongest fair
baseline, at the official model size and at the tiny one, in one process.

    python -m benchmarks.pretrain_step_benchmark                        # tiny and official sizes, CPU fp32
    python -m benchmarks.pretrain_step_benchmark --device cuda --precision bf16 --cells 256

Cases per model size, all on the same seeded cells (lengths log-normal, clipped to 200..2047
genes), the same cells per step, the same weights at the start and the same AdamW step:

- ``ours``: ``LangCellPretraining``'s masked-gene-modelling objective (the registered ``mgm``
  objective on a ``LangCellModel``): length-grouped batches padded to the batch maximum, SDPA,
  the gene head only at the masked positions;
- ``ours_packed``: the same objective on the same cells per step packed into one row without
  padding (``CellBatchCollator(packed=True)``'s layout), block-diagonal attention (FlashAttention's
  variable-length kernel on CUDA when installed, else SDPA per cell);
- ``hf_sdpa_grouped`` (the headline baseline): transformers ``BertForMaskedLM`` with
  ``attn_implementation="sdpa"``, the same length-grouped batches padded to the batch maximum
  (as the official collator pads and Geneformer's pretrainer groups), the full gene head over the
  vocabulary at every position;
- ``hf_eager_pad2048`` (context only, not a headline): ``BertForMaskedLM`` with eager attention,
  batches in random order with every cell padded to 2048, full gene head.

Sizes: ``tiny`` and ``official`` are the cell encoders of the ``tiny`` and ``langcell`` presets
(the official one is Geneformer-12L-30M's shape); ``custom`` takes ``--layers/--hidden/--heads``.
Each case runs ``--warmup`` steps on other cells, then one timed pass over the size's timed cells
(``--cells``; ``--official-cells`` for the official size). Every row shows the median step time,
real tokens/s, the ratio of its tokens/s to ``hf_sdpa_grouped``'s (and ``x ours``, to ``ours``'s) at the same size, model FLOPs
utilisation (MFU) against the machine's measured GEMM rate (``--gemm-size``) and the peak memory
(CUDA ``max_memory_allocated``, or the process's resident high-water mark on CPU; see
:mod:`benchmarks.memory`). Before timing, both sides compute the MGM loss of the first timed
batch from the same weights in eval mode (``loss_check``): they must agree.

``--compile`` wraps the cell encoder of ``ours`` and ``ours_packed`` in ``torch.compile`` (dynamic
shapes; off by default).

``--lengths 128,256,512`` adds a length scaling on the first size: for each length, ``ours`` and
``hf_sdpa_grouped`` on cells of exactly that many tokens (CLS included), ``--warmup`` then
``--scaling-steps`` timed steps.

``main(argv)`` returns ``{"settings", "rows", "cases", "headline", "context", "loss_check", "scaling"}``:
``rows`` (also ``cases``, the key ``benchmarks.run`` reads) has one dict per (size, case) with
``size, case, role, step_ms, tokens_per_s, mfu, peak_mib, peak_source, ratio, ratio_vs_ours``; ``headline`` maps each
size to ours / ``hf_sdpa_grouped`` tokens/s, ``packed`` to ours_packed / ``hf_sdpa_grouped``,
``context`` to ours / ``hf_eager_pad2048`` where it ran; ``loss_check`` maps each size to
``{"ours", "baseline", "ours_packed"}`` losses; ``scaling`` has one dict
per (case, length) with ``case, length, step_ms, tokens_per_s, ratio`` (``hf_sdpa_grouped`` step
time over the case's).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import numpy as np
import torch
from transformers import BertForMaskedLM

from benchmarks.memory import peak_memory, reset_peak

from lightning_langcell.data.collate import pack_cells, pad_token_lists
from lightning_langcell.data.sampling import LengthGroupedBatchSampler
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.config import PRESETS
from lightning_langcell.objectives import PretrainingStep, mask_genes, registered_objectives
from lightning_langcell.tokenization import CLS_ID

BASELINE = "hf_sdpa_grouped"
CONTEXT = "hf_eager_pad2048"
PACKED = "ours_packed"
CASES = ("ours", PACKED, BASELINE, CONTEXT)
ROLES = {"ours": "ours", PACKED: "ours, packed (no padding)", BASELINE: "headline baseline",
         CONTEXT: "context only (pad-to-2048 eager)"}
SIZES = ("tiny", "official", "custom")
PADDED_LENGTH = 2048


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


def cell_config(size: str, args) -> dict:
    """The cell encoder's BertConfig keys of a benchmark size."""
    if size == "custom":
        return {**PRESETS["tiny"]["cell"], "hidden_size": args.hidden, "num_hidden_layers": args.layers,
                "num_attention_heads": args.heads, "intermediate_size": 2 * args.hidden}
    return dict(PRESETS["langcell" if size == "official" else "tiny"]["cell"])


def model_flops_per_step(cell: dict, attention_mask: torch.Tensor, masked: int) -> float:
    """Useful training FLOPs of one step: 6 x (encoder params x real tokens) + attention over the
    real lengths + the gene head at the masked positions (fwd + bwd = 3 x fwd)."""
    hidden, layers, ffn, vocab = cell["hidden_size"], cell["num_hidden_layers"], cell["intermediate_size"], cell["vocab_size"]
    lengths = attention_mask.sum(1).double()
    per_token_layer = 2 * (4 * hidden * hidden + 2 * hidden * ffn)
    dense = per_token_layer * layers * float(lengths.sum())
    attention = 4 * hidden * layers * float((lengths**2).sum())
    head = 2 * masked * (hidden * hidden + hidden * vocab)
    return 3 * (dense + attention + head)


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

    def __init__(self, ours: OursStep):
        self.model = copy.deepcopy(ours.model)
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
    if name == PACKED:
        return OursPackedStep(ours)
    return HuggingFaceStep(ours, "sdpa" if name == BASELINE else "eager", device)


def run_case(runner, name, size, cell, args, cells, warm, timed, device, autocast_dtype, gemm_rate) -> dict:
    """Train ``runner`` for ``warm`` then ``timed`` batches (lists of indices into ``cells``); timings,
    real tokens/s, MFU and peak memory over the timed batches."""
    reset_peak(device)
    torch.manual_seed(0)
    runner.train(True)
    optimizer = torch.optim.AdamW(runner.parameters, lr=1e-4)
    pad_to = PADDED_LENGTH if name == CONTEXT else None
    times, real_tokens, flops = [], [], []
    for step, batch in enumerate(warm + timed):
        ids, mask, masked_ids, labels = tensors(cells, batch, pad_to, args.seed, device)
        inputs = runner.prepare(ids, mask, masked_ids, labels)
        _sync(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            loss = runner.loss(*inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if step >= len(warm):
            times.append(time.perf_counter() - start)
            real_tokens.append(int(mask.sum()))
            flops.append(model_flops_per_step(cell, mask, int((labels != -100).sum())))
    seconds = sum(times)
    peak_mib, peak_source = peak_memory(device)
    return {
        "size": size,
        "case": name,
        "role": ROLES[name],
        "step_ms": 1000 * statistics.median(times),
        "tokens_per_s": sum(real_tokens) / seconds,
        "mfu": sum(flops) / seconds / gemm_rate,
        "peak_mib": peak_mib,
        "peak_source": peak_source,
    }


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
    lengths = cell_lengths(count + args.warmup * args.batch_size, args.seed)
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
        for name in ("ours", PACKED):
            runners[name].compile()
    rows = []
    for name in cases:
        timed = grouped if name != CONTEXT else make_batches(lengths[:count], args.batch_size, False, args.seed)
        rows.append(run_case(runners[name], name, size, cell, args, cells, warm, timed, device, autocast_dtype,
                             gemm_rate))
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
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gemm-size", type=int, default=2048, help="square matmul size for the MFU peak")
    parser.add_argument("--lengths", type=parse_lengths, default=[],
                        help="comma list of tokens per cell for the length scaling, e.g. 128,256,512 (default: off)")
    parser.add_argument("--scaling-steps", type=int, default=2, help="timed steps per case and length")
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the cell encoder of ours and ours_packed (default: off)")
    args = parser.parse_args(argv)
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
    print(f"device={device} precision={args.precision} batch={args.batch_size} cells={args.cells} "
          f"official_cells={args.official_cells} gemm={gemm_rate / 1e9:.1f} GFLOP/s")
    rows, checks = [], {}
    print(f"{'size':<10}{'case':<18}{'step ms':>10}{'real tok/s':>12}{'x fair':>8}{'x ours':>8}{'MFU':>8}"
          f"{'peak MiB':>10}")
    for size in args.sizes:  # each size's rows as soon as they are measured
        found, checks[size] = run_size(size, args, device, autocast_dtype, gemm_rate)
        rows.extend(found)
        for row in found:
            label = "  (context: pad-to-2048 eager)" if row["case"] == CONTEXT else ""
            print(f"{row['size']:<10}{row['case']:<18}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.1f}"
                  f"{row['ratio']:>8.2f}{row['ratio_vs_ours']:>8.2f}{row['mfu']:>8.1%}{row['peak_mib']:>10.0f}{label}", flush=True)
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
              f"{'case':<18}{'length':>8}{'step ms':>10}{'real tok/s':>12}{'x fair':>8}")
        for row in scaling:
            print(f"{row['case']:<18}{row['length']:>8}{row['step_ms']:>10.1f}{row['tokens_per_s']:>12.1f}"
                  f"{row['ratio']:>8.2f}")
    return {"settings": vars(args), "rows": rows, "cases": rows, "headline": headline, "packed": packed,
            "context": context,
            "loss_check": checks, "scaling": scaling}


if __name__ == "__main__":
    main()
