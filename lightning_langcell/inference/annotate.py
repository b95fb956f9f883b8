"""Zero-shot cell-type annotation of an AnnData in a few lines::

    from lightning_langcell.inference import annotate
    annotated = annotate("pbmc.h5ad", "path/to/checkpoint", output="pbmc.langcell.h5ad")
    annotated.obs["langcell_prediction"], annotated.uns["langcell"]["metrics"]

The input is read into memory, tokenized in memory (no corpus is written), scored in
length-sorted batches and returned as a new AnnData (the input object or file is never
modified); see :mod:`lightning_langcell.inference.output` for what is stored where. For data
that does not fit in memory use ``python -m lightning_langcell predict --config
recipes/zero_shot.yaml``.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.classes import (
    CandidateClasses,
    ClassSpec,
    candidate_classes,
    obs_labels,
    truth_indices,
)
from lightning_langcell.inference.adapters import DEFAULT_ADAPTER
from lightning_langcell.inference.few_shot_cells import FEW_SHOT_PREDICTION_KEY, adapter_results, check_adapter, labelled_codes
from lightning_langcell.inference.hierarchy import (
    DEFAULT_ANCESTOR_THRESHOLD,
    DEFAULT_THRESHOLD,
    check_hierarchy_classes,
    hierarchy_results,
)
from lightning_langcell.inference.metrics import classification_scores
from lightning_langcell.inference.prompts import DEFAULT_PROMPTS, PromptSpec, class_prompts, prompt_templates
from lightning_langcell.inference.open_set import DEFAULT_UNKNOWN_THRESHOLD, check_unknown_threshold
from lightning_langcell.inference.output import ZeroShotAnnotations, check_output_path, write_h5ad
from lightning_langcell.inference.text_cache import cached_class_texts
from lightning_langcell.inference.zero_shot import TextGroups, ZeroShotScorer
from lightning_langcell.models.langcell import LangCellModel
from lightning_langcell.models.zero_shot_scores import OFFICIAL_ALPHA, OFFICIAL_TEMPERATURE


# ------------------------------------------------------------------------ model and tokenizers
@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint loaded once (:func:`load_checkpoint`) and reused by several ``annotate`` calls."""

    model: LangCellModel
    text_tokenizer: Any
    vocabulary: Any
    name: str


def load_checkpoint(model_or_path: Any, text_tokenizer: Any = None) -> LoadedCheckpoint:
    """:func:`load_zero_shot_model` kept together with the name it was loaded from."""
    if isinstance(model_or_path, LoadedCheckpoint):
        return model_or_path
    name = "LangCellModel object" if isinstance(model_or_path, LangCellModel) else str(model_or_path)
    return LoadedCheckpoint(*load_zero_shot_model(model_or_path, text_tokenizer), name=name)


def load_zero_shot_model(model_or_path: LangCellModel | LoadedCheckpoint | str | os.PathLike,
                         text_tokenizer: Any = None):
    """(model in eval mode, its text tokenizer, its gene vocabulary or None when unknown).

    A path goes through :func:`lightning_langcell.hub.loading.load_model` (our format, the
    official layout, a Lightning ``.ckpt``, or a registered name); a :class:`LoadedCheckpoint` is
    reused as it is. ``text_tokenizer``: a path or tokenizer object; None takes the one stored
    with the checkpoint (the bundled one for a model object).
    """
    from lightning_langcell.text import load_text_tokenizer

    from lightning_langcell.hub.loading import load_gene_vocabulary_for, load_model, load_text_tokenizer_for

    if isinstance(model_or_path, LoadedCheckpoint):
        tokenizer = model_or_path.text_tokenizer if text_tokenizer is None else load_text_tokenizer(text_tokenizer)
        return model_or_path.model.eval(), tokenizer, model_or_path.vocabulary
    given = isinstance(model_or_path, LangCellModel)
    if text_tokenizer is not None and not isinstance(text_tokenizer, (str, os.PathLike)):
        tokenizer = text_tokenizer
    elif text_tokenizer is not None or given:
        tokenizer = load_text_tokenizer(text_tokenizer)
    else:
        tokenizer = load_text_tokenizer_for(model_or_path)
    if given:
        return model_or_path.eval(), tokenizer, None
    return load_model(model_or_path), tokenizer, load_gene_vocabulary_for(model_or_path)


def check_gene_vocabulary(model: LangCellModel, data_size: int, data_checksum: str | None,
                          model_vocabulary: Any = None) -> None:
    """The cells must be tokenized with the gene vocabulary the cell encoder was trained with."""
    rows = model.config.cell.vocab_size
    if data_size != rows:
        raise LangCellInputError(
            f"The data's gene vocabulary has {data_size} tokens but the checkpoint's cell encoder has {rows}.",
            "Tokenize the cells with the checkpoint's gene vocabulary (Geneformer-30M + <cls> for LangCell).",
        )
    if model_vocabulary is not None and data_checksum is not None and model_vocabulary.checksum != data_checksum:
        raise LangCellInputError(
            f"The data was tokenized with gene vocabulary {data_checksum[:12]}, the checkpoint expects "
            f"{model_vocabulary.checksum[:12]}: token ids would mean other genes.",
            "Re-tokenize the data with the checkpoint's gene vocabulary (its token_dictionary / gene medians).",
        )


def tokenize_class_texts(texts: list[str], tokenizer: Any, model: LangCellModel) -> dict[str, torch.Tensor]:
    """Class texts → padded ``input_ids``/``attention_mask`` [C, L] (at most the text length the
    model was trained with); refuses ids beyond the text table."""
    from lightning_langcell.text import tokenize_texts

    max_length = min(model.config.text_length(), getattr(tokenizer, "model_max_length", 10**9))
    encoded = tokenize_texts(texts, tokenizer, max_length=max_length)
    rows = int(model.config.text.vocab_size)
    if int(encoded["input_ids"].max()) >= rows:
        raise LangCellInputError(
            f"The text tokenizer produces ids up to {int(encoded['input_ids'].max())}, "
            f"the text encoder has {rows} rows.",
            "Pass the text tokenizer the checkpoint was trained with (text_tokenizer=...).",
        )
    return encoded


def build_scorer(model: LangCellModel, classes: CandidateClasses, text_tokenizer: Any, device: torch.device,
                 text_cache: bool | str | os.PathLike = True, prompts: PromptSpec = DEFAULT_PROMPTS,
                 **settings: Any) -> ZeroShotScorer:
    """A :class:`ZeroShotScorer` on ``device`` for the candidate classes (texts encoded once;
    ``text_cache``: their embeddings through :mod:`lightning_langcell.inference.text_cache`;
    ``prompts``: the class texts, see :mod:`lightning_langcell.inference.prompts`)."""
    written = class_prompts(classes, prompts)
    encoded = tokenize_class_texts(written.texts, text_tokenizer, model)
    ids, mask = encoded["input_ids"].to(device), encoded["attention_mask"].to(device)
    groups = None if written.one_per_class else TextGroups(torch.tensor(written.owner), len(classes))
    return ZeroShotScorer(model, cached_class_texts(model, ids, mask, text_cache), groups=groups, **settings)


# ------------------------------------------------------------------------------------ cells
def tokenize_cells(adata, tokenizer) -> tuple[np.ndarray, list[np.ndarray]]:
    """(rows [n] int64 of the cells kept, their ranked gene tokens); errors when none is left."""
    rows, tokens = [], []
    for chunk in tokenizer.iter_chunks(adata):
        rows.append(chunk.rows)
        tokens.extend(chunk.tokens)
    report = tokenizer.report
    if not tokens:
        raise LangCellInputError(
            f"No cell left to annotate after filtering: {report.cells_seen} cell(s) seen, "
            f"{report.cells_skipped_filter_pass} skipped by obs['filter_pass'], {report.cells_empty} without "
            "any vocabulary gene.",
            "Check obs['filter_pass'] and that X holds raw counts of genes with Ensembl ids (var['ensembl_id']).",
        )
    return np.concatenate(rows).astype(np.int64), tokens


def score_cells(scorer: ZeroShotScorer, tokens: list[np.ndarray], batch_size: int, max_length: int,
                device: torch.device, progress: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Final probabilities [n, C] and cell embeddings [n, E] (float32, input order) of token lists.

    ``progress``: a progress bar over the cells on stderr (None: only when stderr is a terminal).
    """
    from tqdm.auto import tqdm

    from lightning_langcell.data.collate import pad_token_lists
    from lightning_langcell.tokenization import CLS_ID

    order = np.argsort([-len(t) for t in tokens], kind="stable")  # longest first: least padding
    probabilities = np.empty((len(tokens), scorer.n_classes), dtype=np.float32)
    embeddings = np.empty((len(tokens), int(scorer.model.config.embed_dim)), dtype=np.float32)
    show = sys.stderr.isatty() if progress is None else bool(progress)
    with tqdm(total=len(tokens), desc="annotate", unit="cell", disable=not show) as bar:
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            input_ids, attention_mask = pad_token_lists([tokens[i] for i in batch], CLS_ID, max_length)
            out = scorer(input_ids.to(device), attention_mask.to(device))
            probabilities[batch] = out.final_probs.float().cpu().numpy()
            embeddings[batch] = out.cell_embedding.float().cpu().numpy()
            bar.update(len(batch))
    return probabilities, embeddings


def check_several_classes(classes: CandidateClasses) -> None:
    """Refuse fewer than 2 candidate classes: one class would be every cell's answer with
    probability 1, whatever the cells are (no annotation, and no metric can be computed)."""
    if len(classes) < 2:
        raise LangCellInputError(
            f"Zero-shot annotation needs at least 2 candidate classes, got {len(classes)} "
            f"({list(classes.names)}): every cell would get it with probability 1.",
            "Pass classes=[...] (model.init_args.classes) with the cell types the cells could be; the "
            "ground truth may still hold a single label.",
        )


# ------------------------------------------------------------------------------------- API
def annotate(
    adata_or_path: Any,
    model_or_path: LangCellModel | str | os.PathLike,
    classes: ClassSpec = None,
    label_column: str | None = "cell_type",
    alpha: float = OFFICIAL_ALPHA,
    top_k: int | None = None,
    batch_size: int = 8,
    *,
    type2text: Any = None,
    allow_missing_definitions: bool = False,
    text_tokenizer: Any = None,
    temperature: float = OFFICIAL_TEMPERATURE,
    max_length: int | None = None,
    class_chunk_size: int = 32,
    assume_counts: bool = False,
    device: str | torch.device | None = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    hierarchy: bool = False,
    backoff_threshold: float = DEFAULT_THRESHOLD,
    ancestor_threshold: float = DEFAULT_ANCESTOR_THRESHOLD,
    text_cache: bool | str | os.PathLike = True,
    prompts: PromptSpec = DEFAULT_PROMPTS,
    few_shot_labels: str | None = None,
    adapter: str = DEFAULT_ADAPTER,
    unknown_threshold: float | None = DEFAULT_UNKNOWN_THRESHOLD,
):
    """Annotate cells with LangCell zero-shot predictions; returns a new AnnData.

    Args:
        adata_or_path: AnnData or .h5ad path with raw counts and Ensembl gene ids.
        model_or_path: a :class:`LangCellModel`, a checkpoint path, a registered name, or a
            :class:`LoadedCheckpoint` (loaded once, reused).
        classes: candidate classes: None (the labels of ``obs[label_column]``), a list of labels
            or CL ids, a type2text mapping / JSON path (label or id → definition), or a class set:
            ``"CL:all"``, ``"CL:0000988+"`` (a term and its descendants), ``"preset:blood"``
            (see :mod:`lightning_langcell.inference.class_sets`; use ``top_k`` with many classes).
        label_column: obs column of the ground truth (metrics computed when present).
        alpha: CTC weight of the blend (0.1 official; 1.0 = CTC only, no matcher).
        top_k: run the matcher on each cell's k best CTC classes only (None: exact scores).
        batch_size: cells per forward pass. ``max_length``: ``<cls>`` + genes per cell (None: the
            length the checkpoint was trained with; 2048 for the released LangCell).
        type2text: definitions overriding the ontology; ``allow_missing_definitions``: score
            classes without definition instead of raising.
        text_tokenizer: path or tokenizer; None: the checkpoint's.
        output: also write the result to this new .h5ad (atomically; never over the input).
        progress: a progress bar over the cells (None: only when stderr is a terminal).
        hierarchy: also predict a Cell Ontology term per cell, backing off to an ancestor when the
            best class's probability is below ``backoff_threshold`` and an ancestor's aggregated
            probability reaches ``ancestor_threshold`` (obs ``langcell_term_id``,
            ``langcell_term_label``, ``langcell_backoff_level``; settings and ontology-aware
            scores in ``uns["langcell"]["hierarchy"]``; see
            :mod:`lightning_langcell.inference.hierarchy`; the default ``backoff_threshold`` 0 never
            backs off: none helped on the pre-training data, see ``benchmarks/hierarchy_thresholds.py``).
        text_cache: keep the class-text embeddings on disk, keyed by the checkpoint's text weights
            and the tokenized texts (True: under ``$LANGCELL_CACHE``; a directory; False: off), so
            ``classes="CL:all"`` (3,221 texts) is encoded once per checkpoint.
        prompts: the class texts: ``"official"`` (one official text per class), ``"ensemble"``
            (the official text, each ontology synonym, the label alone and each parent as
            context, combined per class), one template or a list of templates; see
            :mod:`lightning_langcell.inference.prompts` (default :data:`DEFAULT_PROMPTS`, chosen on
            the pre-training data by ``benchmarks/prompt_ensembles.py``).
        few_shot_labels: obs column whose non-empty labels (candidate classes) mark a few labelled
            cells: ``adapter`` is fitted on them and every cell also gets obs
            ``langcell_few_shot_prediction``, obsm ``langcell_few_shot_scores`` and
            ``uns["langcell"]["few_shot"]`` (see :mod:`lightning_langcell.inference.few_shot_cells`).
        adapter: ``"probe"`` (default) or ``"prototype"`` (see :mod:`lightning_langcell.inference.adapters`).
        unknown_threshold: obs ``langcell_unknown`` is True where ``langcell_unknown_score`` is
            above it (None: no such column); the default was chosen on the pre-training data
            (:data:`~lightning_langcell.inference.open_set.DEFAULT_UNKNOWN_THRESHOLD`).
    """
    import anndata

    if batch_size < 1 or (max_length is not None and max_length < 2):
        raise LangCellInputError(f"batch_size {batch_size} / max_length {max_length} too small.",
                                 "Use batch_size >= 1 and max_length >= 2 (<cls> + at least one gene; official 2048).")
    prompt_templates(prompts)
    check_unknown_threshold(unknown_threshold)
    source = Path(adata_or_path) if isinstance(adata_or_path, (str, os.PathLike)) else None
    if output is not None:
        check_output_path(output, overwrite, source)
    if source is not None:
        if not source.is_file():
            raise LangCellInputError(f"No .h5ad file at {source}.", "Pass an existing .h5ad path or an AnnData.")
        adata = anndata.read_h5ad(source)
    elif isinstance(adata_or_path, anndata.AnnData):
        adata = adata_or_path
    else:
        raise LangCellInputError(f"Cannot annotate a {type(adata_or_path).__name__}.",
                                 "Pass an AnnData or a .h5ad path.")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    candidates = candidate_classes(classes, adata.obs, label_column, type2text, allow_missing_definitions)
    check_several_classes(candidates)
    class_hierarchy = check_hierarchy_classes(candidates.term_ids, candidates.names) if hierarchy else None
    if few_shot_labels is not None:
        check_adapter(adapter)
        few_shot_codes = labelled_codes(adata.obs, few_shot_labels, candidates)
    loaded = load_checkpoint(model_or_path, text_tokenizer)
    model, text_tok, vocabulary = load_zero_shot_model(loaded, text_tokenizer)
    max_length = max_length or model.config.cell_max_length()
    cell_tokenizer = _cell_tokenizer(vocabulary, max_length, assume_counts)
    check_gene_vocabulary(model, len(cell_tokenizer.vocabulary), cell_tokenizer.vocabulary.checksum, vocabulary)
    has_truth = label_column is not None and label_column in adata.obs.columns
    model = model.to(device)
    scorer = build_scorer(model, candidates, text_tok, device, text_cache, prompts, alpha=alpha, top_k=top_k,
                          temperature=temperature, class_chunk_size=class_chunk_size)
    started = time.perf_counter()
    rows, tokens = tokenize_cells(adata, cell_tokenizer)
    probabilities, embeddings = score_cells(scorer, tokens, batch_size, max_length, device, progress)
    annotations = ZeroShotAnnotations.empty(adata.n_obs, candidates.names, embeddings.shape[1])
    annotations.set_rows(rows, probabilities, embeddings)
    annotations.unknown_threshold = unknown_threshold
    annotations.info = zero_shot_info(candidates, scorer, label_column, rows.size, adata.n_obs, model=loaded.name,
                                      prompts=prompts)
    annotations.info["max_length"] = int(max_length)
    annotations.info["unknown_threshold"] = unknown_threshold
    annotations.info["seconds"] = round(time.perf_counter() - started, 3)
    target = truth_indices(obs_labels(adata.obs, label_column), candidates) if has_truth else None
    if has_truth:
        annotations.info["metrics"] = classification_scores(
            target[annotations.scored], annotations.prediction_codes[annotations.scored], len(candidates))
    if class_hierarchy is not None:
        predictions, annotations.info["hierarchy"] = hierarchy_results(
            class_hierarchy, annotations.probabilities[rows], backoff_threshold, ancestor_threshold,
            None if target is None else target[rows])
        annotations.extra_obs = predictions.obs_columns(adata.n_obs, rows)
    if few_shot_labels is not None:
        obs, obsm, annotations.info["few_shot"] = adapter_results(
            adapter, annotations.probabilities, annotations.embeddings, scorer.class_embedding.float().cpu(),
            few_shot_codes, candidates)
        annotations.info["few_shot"]["label_column"] = few_shot_labels
        annotations.extra_obs.update(obs)
        annotations.extra_obsm.update(obsm)
        if has_truth:
            scored = annotations.scored
            annotations.info["few_shot"]["metrics"] = classification_scores(
                target[scored], obs[FEW_SHOT_PREDICTION_KEY].codes[scored], len(candidates))
    result = adata.copy() if source is None else adata
    annotations.add_to(result)
    if output is not None:
        write_h5ad(result, output, overwrite)
    return result


def _cell_tokenizer(vocabulary: Any, max_length: int, assume_counts: bool):
    from lightning_langcell.tokenization import CellTokenizer, GeneVocabulary

    if vocabulary is None or vocabulary == GeneVocabulary.bundled():
        return CellTokenizer(max_genes=max_length - 1, assume_counts=assume_counts)
    return CellTokenizer(gene_median=dict(vocabulary.gene_median), token_dictionary=dict(vocabulary.token_to_id),
                         max_genes=max_length - 1, assume_counts=assume_counts)


def zero_shot_info(classes: CandidateClasses, scorer: ZeroShotScorer, label_column: str | None,
                   n_scored: int, n_cells: int, model: str, prompts: PromptSpec = DEFAULT_PROMPTS) -> dict[str, Any]:
    """Settings recorded in ``uns["langcell"]``."""
    return {
        "task": "zero_shot",
        "model": model,
        "alpha": scorer.alpha,
        "top_k": scorer.top_k,
        "temperature": scorer.temperature,
        "label_column": label_column,
        "class_texts": list(classes.texts),
        "prompts": list(prompt_templates(prompts)),
        "n_prompt_texts": len(scorer.classes),
        "n_cells_scored": int(n_scored),
        "n_cells_not_scored": int(n_cells - n_scored),
    }
