"""Zero-shot speed: ours (exact and top-k) vs the official per-class algorithm, same weights,
same settings.

    python -m benchmarks.zero_shot_benchmark                  # official sizes, 8 cells x 1,000 genes, 8 classes
    python -m benchmarks.zero_shot_benchmark --quick          # tiny model, seconds (a smoke run)
    python -m benchmarks.zero_shot_benchmark --cells 4 --scaling 1,2,4 --ks 1,2,4
    python -m benchmarks.zero_shot_benchmark --bf16           # + the bf16 autocast rows in both tables
    python -m benchmarks.zero_shot_benchmark --class-scaling 8,16,32 --ks '' --scaling '' --real-data ''
                                                              # cost against the number of classes
    python -m benchmarks.zero_shot_benchmark --ontology-only --ontology-scaling 10,100,1000,all --genes 2047 \
        --threads 1 --official-max-classes 100       # up to the whole Cell Ontology (3,221 classes)

Model: ``LangCellConfig.preset("langcell")`` (12-layer cell encoder 512 wide, 12-layer text
encoder 768 wide) with seeded random weights: every tensor random (LayerNorm weights 1 ± 0.2,
biases N(0, 0.1), weights N(0, 1/fan_in)) so the matcher's scores differ between classes and
prediction agreement means something. Cells: ``--genes`` distinct random genes each, ``<cls>``
first (length genes + 1). Classes: PBMC cell types as CL ids, texts "cell type: X. definition; "
with the bundled text tokenizer (23-81 tokens). fp32, ``torch.set_num_threads(--threads)``.
``--bf16`` adds every ``ours`` case (but alpha=1) and the cell encoder again under
``torch.autocast(<--device type>, torch.bfloat16)`` wrapping the whole call (same cells, same
weights; the scorer keeps its scores in fp32): rows ``... (bf16 autocast)``.

Equal settings: every case runs in the same process with the same allocator (whatever the
process was started with: the library changes none) and the headline baseline uses the same
attention implementation as ours (SDPA), so the "x official" columns measure the algorithm alone.
The one setting ours has and the released code lacks, SDPA instead of the written-out attention,
is its own row: ``official (per class, eager attention as released)``, whose gain is reported
against the SDPA baseline (``sdpa_gain``).

Cases (each times everything after the model is built: cell encoding, class texts, scores):

- ``official (per class)``: the released algorithm — each class text embedded alone, then for
  each class its text repeated for every cell and one full multimodal pass (``match_logits``;
  cross-attention key/value recomputed per class), official blend (alpha 0.1); SDPA attention.
- ``official (per class, eager attention as released)``: the same with the attention written
  out in both encoders, as transformers 4.39's BERT and BLIP's "med" text encoder do.
- ``ours exact``: :class:`ZeroShotScorer` (SDPA, cross-attention K/V once per cell batch, fused
  packed pass over all classes, last layer on ``[CLS]`` only).
- ``ours top-k``: the matcher on each cell's k best CTC classes only.
- ``cell encoder only`` / ``ours alpha=1``: the floor no matcher variant can go below.

Whole-ontology table (``--ontology-scaling``): class counts up to every bundled Cell Ontology term
with a definition (``all``; the PBMC types first, then CL terms in id order), on
``--ontology-cells`` cells. Both sides get the class-text embeddings computed before the per-cell
timing (ours reads them from its on-disk cache in real use): ``official`` = cell encoder + one full
multimodal pass per class (SDPA), timed at 1 class and each count up to ``--official-max-classes``
and beyond fitted as ``a + s × classes`` (least squares on the timed counts; rows marked
"fitted"); ``ours`` =
:class:`ZeroShotScorer` top-k (``--ontology-k``), timed at every count. The one-off text cost is
timed on the first ``--text-sample`` texts and fitted per text token beyond; classes beyond the
sample get random unit embeddings (they only rank the CTC candidates, the matcher reads their real
texts), counted in the "stand-in embeddings" column.

Agreement = fraction of cells whose prediction equals the official one (fp32), agreement with
ours exact = the same against ``ours exact`` (fp32); max |Δp| = largest difference of final
probabilities from the official ones; x fp32 = speed-up of a bf16 row over its fp32 row. A
second table times ``ours exact`` at several cell counts (cost linear in cells → constant
cells/s). Random deep models map all cells to nearly the same state, so the agreement of top-k
there says little: a third table (``--real-data``) scores real cells with a checkpoint for every
k and reports agreement with the fp32 exact predictions, accuracy and speed; ``--bf16`` adds each
k under bf16 autocast (with its agreement with fp32 at the same k). Its files must be cells the
checkpoint never saw: the defaults are ``data/cells/pbmc3k.h5ad`` and
``data/cells/garnett_pbmc_facs.h5ad`` (never seen by ``langcell-tiny-bundled``), and the datasets
the shipped checkpoint was pre-trained on (:data:`SEEN_IN_PRETRAINING`) are refused. Each file
needs ``obs.cell_type``; ``--real-cells N`` scores N cells evenly spaced through each file.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import time
from pathlib import Path

import torch

from benchmarks.memory import peak_memory, reset_peak

PEAKS: dict = {}  # case -> peak MiB of its timings (``benchmarks.memory``)
BF16 = " (bf16 autocast)"  # case-name suffix of the bf16 rows
# the pre-training datasets of the shipped checkpoint (langcell-tiny-bundled): no agreement or
# accuracy figure may be measured on their cells
SEEN_IN_PRETRAINING = ("pbmc68k_reduced", "baron_mouse_pancreas", "zeisel_mouse_brain", "mouse_lung_injury")
REAL_DATA = "data/cells/pbmc3k.h5ad,data/cells/garnett_pbmc_facs.h5ad"
OFFICIAL = "official (per class)"
OFFICIAL_EAGER = "official (per class, eager attention as released)"
PBMC_CLASSES = ("CL:0000236", "CL:0001054", "CL:0000623", "CL:0000451", "CL:0000625", "CL:0000895",
                "CL:0002396", "CL:0000897")


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (see the module docstring), reproducibly."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim == 0:  # the temperature (unused: inference uses 0.05)
                continue
            if name.endswith("LayerNorm.weight"):
                value = 1.0 + 0.2 * torch.randn(parameter.shape, generator=generator)
            elif parameter.ndim == 1:
                value = 0.1 * torch.randn(parameter.shape, generator=generator)
            else:
                value = torch.randn(parameter.shape, generator=generator) / math.sqrt(parameter.shape[-1])
            parameter.copy_(value)


def class_ids(count: int) -> list[str]:
    """The PBMC types, then further CL terms with a definition (sorted by id)."""
    from lightning_langcell.text import Ontology

    ids = list(PBMC_CLASSES[:count])
    for term in sorted(Ontology.bundled().terms("CL"), key=lambda t: t.id):
        if len(ids) >= count:
            break
        if term.definition and term.id not in ids:
            ids.append(term.id)
    return ids


def build_inputs(args):
    from lightning_langcell.inference.classes import candidate_classes
    from lightning_langcell.models import LangCellConfig, LangCellModel
    from lightning_langcell.text import load_text_tokenizer, tokenize_texts
    from lightning_langcell.tokenization import CLS_ID

    torch.manual_seed(args.seed)
    tokenizer = load_text_tokenizer()
    preset = "tiny" if args.quick else "langcell"
    model = LangCellModel(LangCellConfig.preset(preset, text={"vocab_size": len(tokenizer)})).eval()
    randomise(model, args.seed)
    texts = candidate_classes(class_ids(max([args.classes, *getattr(args, "class_scaling", [])]))).texts
    encoded = tokenize_texts(texts, tokenizer)
    generator = torch.Generator().manual_seed(args.seed + 1)
    n_cells = max([args.cells, *args.scaling])
    genes = torch.stack([torch.randperm(25424, generator=generator)[: args.genes] + 2 for _ in range(n_cells)])
    cell_ids = torch.cat([torch.full((n_cells, 1), CLS_ID), genes], dim=1)
    return model, encoded, cell_ids


def official_per_class(model, encoded, cell_ids, attention: str = "sdpa"):
    """Final probabilities [B, C] by the released algorithm (see ``official`` above) with
    ``attention`` (``"sdpa"`` or ``"eager"``) in both encoders."""
    from lightning_langcell.inference.zero_shot import per_class_match_logits
    from lightning_langcell.models.zero_shot_scores import zero_shot_scores

    model.set_attn_implementation(attention)
    try:
        mask = torch.ones_like(cell_ids)
        hidden, cell_embedding = model.encode_cells(cell_ids, mask)
        ids, text_mask = encoded["input_ids"], encoded["attention_mask"]
        text_embedding = torch.cat([model.encode_texts(row[: int(m.sum())][None], None)[1]  # each text alone
                                    for row, m in zip(ids, text_mask)])
        logits = per_class_match_logits(model, ids, text_mask, hidden, mask)
    finally:
        model.set_attn_implementation("sdpa")
    return zero_shot_scores(cell_embedding, text_embedding, logits).final_probs


def ours(model, encoded, cell_ids, alpha: float = 0.1, top_k: int | None = None):
    from lightning_langcell.inference.zero_shot import ZeroShotScorer, encode_class_texts

    classes = encode_class_texts(model, encoded["input_ids"], encoded["attention_mask"])
    scorer = ZeroShotScorer(model, classes, alpha=alpha, top_k=top_k)
    return scorer(cell_ids, torch.ones_like(cell_ids)).final_probs


def first_classes(encoded: dict, n_classes: int) -> dict:
    """The tokenized texts of the first ``n_classes`` classes."""
    return {key: value[:n_classes] for key, value in encoded.items()}


def cell_encoder_only(model, encoded, cell_ids):
    return model.encode_cells(cell_ids, torch.ones_like(cell_ids))[1]


def autocast(precision: str, device: torch.device):
    """bf16 autocast on ``device``'s type for ``"bf16"``; no-op for ``"32"``."""
    if precision == "32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def bf16_autocast(function):
    """``function(model, encoded, cell_ids, **kwargs)`` run whole under bf16 autocast."""
    def run(model, encoded, cell_ids, **kwargs):
        with autocast("bf16", cell_ids.device):
            return function(model, encoded, cell_ids, **kwargs)
    return run


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(function, *args, repeats: int = 1, **kwargs):
    """(result, best wall-clock seconds, best CPU seconds of the process) over ``repeats`` runs."""
    wall, cpu, result = float("inf"), float("inf"), None
    reset_peak("cuda" if torch.cuda.is_available() else "cpu")
    for _ in range(repeats):
        _sync()
        start, start_cpu = time.perf_counter(), time.process_time()
        with torch.inference_mode():
            result = function(*args, **kwargs)
        _sync()
        wall, cpu = min(wall, time.perf_counter() - start), min(cpu, time.process_time() - start_cpu)
    return result, wall, cpu


def timed_rounds(cases: dict, repeats: int) -> dict:
    """Run every case once per round (so slow phases of a shared machine hit all cases alike);
    keep each case's last result and its best wall and CPU seconds."""
    out = {name: [None, float("inf"), float("inf")] for name in cases}
    peaks = {}
    for _ in range(repeats):
        for name, (function, args, kwargs) in cases.items():
            result, wall, cpu = timed(function, *args, **kwargs)
            out[name] = [result, min(out[name][1], wall), min(out[name][2], cpu)]
            peak = peak_memory("cuda" if torch.cuda.is_available() else "cpu")[0]
            peaks[name] = max(peaks.get(name, 0.0), peak)
    PEAKS.update(peaks)
    return out


def real_cells_curve(data: str, checkpoint: str, batch_size: int, repeats: int, device: torch.device,
                     bf16: bool = False, n_cells: int | None = None) -> list[dict]:
    """Exact and every top-k on the real cells of ``data`` (fp32, then bf16 autocast with ``bf16``).

    Rows: seconds, cells/s, agreement with the fp32 exact predictions, accuracy, and against fp32
    at the same k: agreement, max |Δp| (large where a cell's k candidates changed) and speed-up.
    ``n_cells``: that many cells, evenly spaced through the file.
    """
    import anndata
    import numpy as np

    from lightning_langcell.inference.annotate import (_cell_tokenizer, build_scorer, load_zero_shot_model,
                                                       score_cells, tokenize_cells)
    from lightning_langcell.inference.classes import candidate_classes, obs_labels, truth_indices

    adata = anndata.read_h5ad(data)
    if n_cells and n_cells < adata.n_obs:
        adata = adata[np.linspace(0, adata.n_obs - 1, n_cells).astype(int)].copy()
    model, text_tokenizer, vocabulary = load_zero_shot_model(checkpoint)
    model = model.to(device)
    classes = candidate_classes(None, adata.obs, "cell_type")
    _, tokens = tokenize_cells(adata, _cell_tokenizer(vocabulary, 2048, False))  # every cell passes here
    truth = truth_indices(obs_labels(adata.obs, "cell_type"), classes)
    rows, fp32 = [], {}  # fp32: k -> (probabilities, seconds)
    for precision in (("32", "bf16") if bf16 else ("32",)):
        for k in [None, *range(1, len(classes))]:
            with autocast(precision, device):  # class texts too
                scorer = build_scorer(model, classes, text_tokenizer, device, top_k=k)
                (probabilities, _), seconds, _ = timed(score_cells, scorer, tokens, batch_size, 2048, device,
                                                       repeats=repeats)
            reference, reference_seconds = fp32.setdefault(k, (probabilities, seconds))
            predictions = probabilities.argmax(1)
            rows.append({"dataset": Path(data).stem, "cells_from": "never seen in pre-training",
                         "precision": precision, "k": k or len(classes),
                         "cells": len(tokens), "seconds": seconds, "cells_per_s": len(tokens) / seconds,
                         "speedup_vs_fp32": reference_seconds / seconds,
                         "agreement": float((predictions == fp32[None][0].argmax(1)).mean()),
                         "accuracy": float((predictions == truth).mean()),
                         "agreement_fp32_same_k": float((predictions == reference.argmax(1)).mean()),
                         "max_abs_diff_fp32_same_k": float(np.abs(probabilities - reference).max())})
    return rows


def official_matcher_only(model, encoded, cell_ids, text_embedding):
    """The released per-class algorithm with the class-text embeddings given (computed outside the
    timing, as ours gets them from its cache): cell encoder, then one multimodal pass per class."""
    from lightning_langcell.inference.zero_shot import per_class_match_logits
    from lightning_langcell.models.zero_shot_scores import zero_shot_scores

    mask = torch.ones_like(cell_ids)
    hidden, cell_embedding = model.encode_cells(cell_ids, mask)
    logits = per_class_match_logits(model, encoded["input_ids"], encoded["attention_mask"], hidden, mask)
    return zero_shot_scores(cell_embedding, text_embedding, logits).final_probs


def ontology_class_texts(model, encoded: dict, n_sample: int, seed: int):
    """(ClassTexts of every class, text seconds of the sample, text tokens of the sample).

    The first ``n_sample`` texts are encoded for real (chunks of 256, through no cache: this is the
    one-off cost being timed); the embeddings of the classes beyond stand in as random unit vectors
    (they only rank the CTC candidates; the matcher reads the real texts), for timing only.
    """
    from lightning_langcell.inference.zero_shot import ClassTexts, encode_class_texts

    ids, mask = encoded["input_ids"], encoded["attention_mask"]
    sample = min(n_sample, ids.shape[0])
    encoded_sample, seconds, _ = timed(encode_class_texts, model, ids[:sample], mask[:sample], 256)
    rest = torch.randn(ids.shape[0] - sample, encoded_sample.embedding.shape[1],
                       generator=torch.Generator().manual_seed(seed)).to(encoded_sample.embedding)
    embedding = torch.cat([encoded_sample.embedding, torch.nn.functional.normalize(rest, dim=-1)])
    return ClassTexts(ids, mask, embedding), seconds, int(mask[:sample].sum())


def ontology_scaling(args, model, cells) -> dict:
    """Class-scaling table up to the whole Cell Ontology: ours top-k per cell (class texts encoded
    once, outside the per-cell time) against the released per-class algorithm, measured up to
    ``--official-max-classes`` and fitted linearly in the class count beyond (see ``--help``)."""
    from lightning_langcell.inference.class_sets import all_class_ids
    from lightning_langcell.inference.classes import candidate_classes
    from lightning_langcell.inference.zero_shot import ClassTexts, ZeroShotScorer
    from lightning_langcell.text import load_text_tokenizer, tokenize_texts

    every = all_class_ids()
    counts = [len(every) if count == "all" else int(count) for count in args.ontology_scaling]
    ids = class_ids(max(counts))
    tokenizer = load_text_tokenizer()
    encoded = tokenize_texts(candidate_classes(ids).texts, tokenizer, max_length=model.config.text_length())
    texts, text_seconds, sample_tokens = ontology_class_texts(model, encoded, args.text_sample, args.seed)
    tokens = encoded["attention_mask"].sum(1).cumsum(0)
    per_token = text_seconds / sample_tokens
    n_cells = cells.shape[0]
    timed(cell_encoder_only, model, None, cells)  # warm-up: first-call allocations stay out of the timings
    _, encoder_s, _ = timed(cell_encoder_only, model, None, cells)
    official, rows = {}, []
    for count in sorted({1, *(c for c in counts if c <= args.official_max_classes)}):
        subset = first_classes(encoded, count)
        _, seconds, _ = timed(official_matcher_only, model, subset, cells, texts.embedding[:count])
        official[count] = seconds / n_cells
    design = torch.tensor([[1.0, float(count)] for count in official])
    fixed, per_class = torch.linalg.lstsq(design, torch.tensor(list(official.values()))[:, None]).solution[:, 0].tolist()
    for count in counts:
        first = ClassTexts(texts.input_ids[:count], texts.attention_mask[:count], texts.embedding[:count])
        scorer = ZeroShotScorer(model, first, top_k=args.ontology_k)
        _, seconds, _ = timed(scorer, cells, torch.ones_like(cells))
        baseline = official.get(count, fixed + per_class * count)
        text_cost = per_token * float(tokens[count - 1])
        rows.append({"classes": count, "official_s_per_cell": baseline, "official_measured": count in official,
                     "ours_s_per_cell": seconds / n_cells, "speedup": baseline / (seconds / n_cells),
                     "text_one_off_s": text_cost, "text_measured": count <= args.text_sample,
                     "stand_in_embeddings": max(count - args.text_sample, 0)})
    print(f"\n# class scaling to the whole Cell Ontology ({len(every)} terms with a definition): {n_cells} cell(s) x "
          f"{args.genes} genes, ours top-{args.ontology_k}; cell encoder alone {encoder_s / n_cells:.2f} s/cell; "
          f"official timed at {sorted(official)} classes, fit: {fixed:.2f} + {per_class:.3f} x classes s/cell; class texts "
          f"{per_token * 1000:.2f} s per 1,000 text tokens ({sample_tokens} tokens of {min(args.text_sample, len(ids))} "
          f"texts timed)")
    print("| classes | official s/cell | ours top-k s/cell | x official | ours one-off class texts s | "
          "stand-in embeddings |\n" + "|---" * 6 + "|")
    for row in rows:
        mark = "" if row["official_measured"] else " (fitted)"
        text_mark = "" if row["text_measured"] else " (fitted)"
        print(f"| {row['classes']} | {row['official_s_per_cell']:.2f}{mark} | {row['ours_s_per_cell']:.2f} | "
              f"{row['speedup']:.1f}{mark} | {row['text_one_off_s']:.1f}{text_mark} | {row['stand_in_embeddings']} |")
    return {"rows": rows, "cell_encoder_s_per_cell": encoder_s / n_cells, "official_fit_s_per_class": per_class,
            "official_fit_fixed_s": fixed, "official_measured_s_per_cell": official,
            "text_s_per_token": per_token, "cells": n_cells, "k": args.ontology_k}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cells", type=int, default=8, help="cells of the main comparison")
    parser.add_argument("--genes", type=int, default=1000, help="genes per cell (tokens = genes + 1)")
    parser.add_argument("--classes", type=int, default=8)
    parser.add_argument("--ks", default="1,2,3,4,6", help="top-k values (k = classes is exact mode)")
    parser.add_argument("--scaling", default="2,4,8", help="cell counts of the linear-cost table ('' = none)")
    parser.add_argument("--class-scaling", default="2,4,8",
                        help="class counts timed for ours exact and the official loop ('' = none)")
    parser.add_argument("--class-scaling-k", type=int, default=3,
                        help="top-k also timed in the class-count table (0 = none)")
    parser.add_argument("--ontology-scaling", default="",
                        help="class counts of the whole-ontology table, e.g. 10,100,1000,all ('' = none)")
    parser.add_argument("--ontology-only", action="store_true", help="run only the whole-ontology table")
    parser.add_argument("--ontology-cells", type=int, default=1, help="cells of the whole-ontology table")
    parser.add_argument("--ontology-k", type=int, default=5, help="top-k of ours in the whole-ontology table")
    parser.add_argument("--official-max-classes", type=int, default=100,
                        help="largest class count the official algorithm is timed at (a linear fit beyond)")
    parser.add_argument("--text-sample", type=int, default=10**6,
                        help="class texts encoded for real in the whole-ontology table (the one-off text cost "
                             "is fitted per token beyond, and the other classes' embeddings stand in as random)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timings keep the best of this many runs")
    parser.add_argument("--no-eager-row", dest="eager_row", action="store_false",
                        help="skip the official algorithm with eager attention (the released setting)")
    parser.add_argument("--quick", action="store_true", help="tiny model (2 layers, 64 wide) for a smoke run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bf16", action="store_true",
                        help="add the bf16 autocast rows (ours exact / top-k, cell encoder, each real-cell k)")
    parser.add_argument("--real-data", default=REAL_DATA,
                        help="labelled .h5ad file(s) of the real-cell curve, comma-separated ('' to skip it); "
                             "cells the checkpoint never saw (the shipped checkpoint's pre-training sets are refused)")
    parser.add_argument("--real-cells", type=int,
                        help="score this many cells of each real-data file (evenly spaced; default all)")
    parser.add_argument("--real-model", default="tests/data/langcell-official-tiny",
                        help="checkpoint for the real-cell curve, e.g. langcell-tiny-bundled (trained)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--json", help="also write the results here")
    args = parser.parse_args(argv)
    args.ks = [int(k) for k in args.ks.split(",") if k and int(k) < args.classes]
    args.scaling = [int(n) for n in args.scaling.split(",") if n]
    args.class_scaling = [int(n) for n in args.class_scaling.split(",") if n]
    args.real_data = [path for path in args.real_data.split(",") if path]
    args.ontology_scaling = [count for count in args.ontology_scaling.split(",") if count]
    seen = [path for path in args.real_data if Path(path).stem in SEEN_IN_PRETRAINING]
    if seen:
        from lightning_langcell.errors import LangCellInputError

        raise LangCellInputError(f"{', '.join(seen)}: cells the shipped checkpoint was pre-trained on.",
                                 f"Use never-seen cells, e.g. --real-data {REAL_DATA}.")
    torch.set_num_threads(args.threads)
    return run(args)


def run(args) -> dict:
    """The tables of :func:`main` for parsed arguments."""
    device = torch.device(args.device)
    model, encoded, all_cells = build_inputs(args)
    model = model.to(device)
    if args.ontology_only:
        return {"settings": vars(args),
                "ontology_scaling": ontology_scaling(args, model, all_cells[: args.ontology_cells].to(device))}
    every_text = {key: value.to(device) for key, value in encoded.items()}
    encoded = first_classes(every_text, args.classes)
    all_cells = all_cells.to(device)
    cells = all_cells[: args.cells]
    lengths = encoded["attention_mask"].sum(1).tolist()
    print(f"# {'tiny' if args.quick else 'langcell'} preset, {args.cells} cells x {args.genes} genes, "
          f"{args.classes} classes (text tokens {min(lengths)}-{max(lengths)}, "
          f"mean {sum(lengths) / len(lengths):.0f}), "
          f"fp32{' and bf16 autocast' if args.bf16 else ''}, {args.device}, {args.threads} threads, "
          f"best of {args.repeats}")
    print(f"# CPU {torch.backends.cpu.get_cpu_capability()}; equal settings: one process, one allocator, "
          f"SDPA attention for the baseline and ours (x official); the eager row is the released attention")
    official, encoder = OFFICIAL, "cell encoder only (SDPA)"
    variants = {"ours exact": (ours, {}), **{f"ours top-{k}": (ours, {"top_k": k}) for k in args.ks},
                "ours alpha=1 (CTC only)": (ours, {"alpha": 1.0}), encoder: (cell_encoder_only, {})}
    cases = {official: (official_per_class, (model, encoded, cells, "sdpa"), {})}
    if args.eager_row:
        cases[OFFICIAL_EAGER] = (official_per_class, (model, encoded, cells, "eager"), {})
    cases.update({name: (function, (model, encoded, cells), kwargs) for name, (function, kwargs) in variants.items()})
    fp32_case = {}  # bf16 case -> its fp32 case
    for name, (function, kwargs) in (variants.items() if args.bf16 else ()):
        if "alpha" not in kwargs:  # alpha=1 skips the matcher: the cell encoder row covers it
            bf16_name = name.removesuffix(" (SDPA)") + BF16
            fp32_case[bf16_name] = name
            cases[bf16_name] = (bf16_autocast(function), (model, encoded, cells), kwargs)
    measured = timed_rounds(cases, args.repeats)
    reference, base_wall, base_cpu = measured[official]
    exact = measured["ours exact"][0]

    results = {"settings": vars(args), "cases": [], "scaling": [], "class_scaling": [],
               "baseline": {"case": official, "attention": "sdpa", "allocator": "the process's, same for all cases"}}
    if args.eager_row:  # what SDPA alone gives the released algorithm (a setting the released code lacks)
        results["sdpa_gain"] = {"wall": measured[OFFICIAL_EAGER][1] / base_wall,
                                "cpu": measured[OFFICIAL_EAGER][2] / base_cpu}
    print("\n| case | wall s | CPU s | cells/s (wall) | x official (wall) | x official (CPU) | x fp32 (wall) "
          "| peak MiB | agreement | agreement with ours exact | max abs diff p |\n" + "|---" * 11 + "|")
    for name, (probs, wall, cpu) in measured.items():
        baseline = fp32_case.get(name)
        row = {"case": name, "precision": "bf16" if baseline else "32",
               "attention": "eager" if name == OFFICIAL_EAGER else "sdpa", "wall_s": wall, "cpu_s": cpu,
               "cells_per_s": args.cells / wall, "speedup_wall": base_wall / wall, "speedup_cpu": base_cpu / cpu,
               "speedup_vs_fp32": measured[baseline][1] / wall if baseline else None, "peak_mib": PEAKS.get(name)}
        if not name.startswith("cell encoder only"):  # the rest return final probabilities [cells, classes]
            probs, predictions = probs.float(), probs.argmax(1)
            row["agreement"] = float((predictions == reference.argmax(1)).float().mean())
            row["agreement_exact"] = float((predictions == exact.argmax(1)).float().mean())
            row["max_abs_diff"] = float((probs - reference).abs().max())
            row["predictions"] = predictions.tolist()
        results["cases"].append(row)
        extra = (f"{row['agreement']:.3f} | {row['agreement_exact']:.3f} | {row['max_abs_diff']:.1e}"
                 if "agreement" in row else "- | - | -")
        vs_fp32 = "-" if baseline is None else f"{row['speedup_vs_fp32']:.2f}"
        print(f"| {name} | {wall:.2f} | {cpu:.2f} | {row['cells_per_s']:.3f} | {row['speedup_wall']:.2f} | "
              f"{row['speedup_cpu']:.2f} | {vs_fp32} | {row['peak_mib']:.0f} | {extra} |")

    if "sdpa_gain" in results:
        print(f"SDPA instead of the released eager attention (official algorithm, a setting the baseline row already "
              f"has): x{results['sdpa_gain']['wall']:.2f} wall, x{results['sdpa_gain']['cpu']:.2f} CPU")

    scaling = timed_rounds({n: (ours, (model, encoded, all_cells[:n]), {}) for n in args.scaling}, args.repeats)
    if scaling:
        print("\n| cells | ours exact wall s | CPU s | CPU s per cell |\n|---|---|---|---|")
    for n_cells, (_, wall, cpu) in scaling.items():
        results["scaling"].append({"cells": n_cells, "wall_s": wall, "cpu_s": cpu})
        print(f"| {n_cells} | {wall:.2f} | {cpu:.2f} | {cpu / n_cells:.3f} |")
    if len(scaling) >= 2:  # cost = fixed (class texts) + per cell x cells
        counts = torch.tensor([float(n) for n in scaling])
        cpu = torch.tensor([value[2] for value in scaling.values()])
        design = torch.stack([torch.ones_like(counts), counts], dim=1)
        fixed, per_cell = torch.linalg.lstsq(design, cpu[:, None]).solution[:, 0].tolist()
        residual = float((design @ torch.tensor([fixed, per_cell]) - cpu).abs().max())
        results["scaling_fit"] = {"fixed_cpu_s": fixed, "cpu_s_per_cell": per_cell, "max_residual_s": residual}
        print(f"fit: CPU s = {fixed:.2f} + {per_cell:.3f} x cells (max residual {residual:.2f} s)")
    class_cases, top = {}, f"ours top-{args.class_scaling_k}"
    for n_classes in args.class_scaling:
        subset = first_classes(every_text, n_classes)
        baseline = (model, subset, cells, "sdpa")
        class_cases[("official", n_classes)] = (official_per_class, baseline, {})
        class_cases[("ours exact", n_classes)] = (ours, (model, subset, cells), {})
        if 0 < args.class_scaling_k < n_classes:
            class_cases[(top, n_classes)] = (ours, (model, subset, cells), {"top_k": args.class_scaling_k})
    if class_cases:
        print(f"\n| classes | official s | ours exact s | x official | {top} s | x official |\n" + "|---" * 6 + "|")
    by_classes = timed_rounds(class_cases, args.repeats)
    results["class_scaling"] = [{"case": case, "classes": n, "cells": args.cells, "wall_s": wall, "cpu_s": cpu}
                                for (case, n), (_, wall, cpu) in by_classes.items()]
    for n_classes in args.class_scaling:
        base, own = by_classes[("official", n_classes)][1], by_classes[("ours exact", n_classes)][1]
        fast = by_classes.get((top, n_classes), (None, None))[1]
        fast_cells = "- | -" if fast is None else f"{fast:.2f} | {base / fast:.2f}"
        print(f"| {n_classes} | {base:.2f} | {own:.2f} | {base / own:.2f} | {fast_cells} |")
    if args.ontology_scaling:
        results["ontology_scaling"] = ontology_scaling(args, model, all_cells[: args.ontology_cells])
    real_files = [path for path in args.real_data if Path(path).is_file()]
    missing = [path for path in args.real_data if path not in real_files]
    if missing:
        print(f"\n# real cells: not found, skipped: {', '.join(missing)}")
    if real_files:
        results["real_cells"] = [row for path in real_files for row in real_cells_curve(
            path, args.real_model, 32, args.repeats, device, args.bf16, args.real_cells)]
        print(f"\n# real cells never seen in pre-training: {', '.join(real_files)} with {args.real_model}")
        print("| dataset | cells | precision | k | seconds | cells/s | x fp32 | agreement with fp32 exact | accuracy "
              "| agreement with fp32 same k | max abs diff p (fp32 same k) |\n" + "|---" * 11 + "|")
        for row in results["real_cells"]:
            print(f"| {row['dataset']} | {row['cells']} | {row['precision']} | {row['k']} | {row['seconds']:.2f} | "
                  f"{row['cells_per_s']:.0f} | {row['speedup_vs_fp32']:.2f} | {row['agreement']:.3f} | "
                  f"{row['accuracy']:.3f} | {row['agreement_fp32_same_k']:.3f} | "
                  f"{row['max_abs_diff_fp32_same_k']:.1e} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(results, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
