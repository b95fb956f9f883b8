"""Zero-shot annotation improved by a few labelled reference cells (frozen model, no fine-tuning)::

    from lightning_langcell.inference.few_shot_annotate import few_shot_annotate
    annotated = few_shot_annotate("query.h5ad", "path/to/checkpoint", reference="labelled.h5ad")
    annotated.obs["langcell_few_shot_prediction"], annotated.uns["langcell"]["few_shot"]

The reference and the query are both annotated by :func:`~lightning_langcell.inference.annotate`
with the same candidate classes (default: the labels of the reference); an adapter of
:mod:`lightning_langcell.inference.adapters` is fitted on the reference cells' embeddings and
applied to the query's. The zero-shot columns stay as ``annotate`` writes them; the adapter adds
``obs["langcell_few_shot_prediction"]``, ``obsm["langcell_few_shot_scores"]`` [N, C] and
``uns["langcell"]["few_shot"]`` (adapter, settings, metrics when the query has labels).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.adapters import ADAPTERS, fit_probe_adapter, fit_prototype_adapter
from lightning_langcell.inference.annotate import annotate, load_zero_shot_model, tokenize_class_texts
from lightning_langcell.inference.classes import CandidateClasses, ClassSpec, candidate_classes, obs_labels, truth_indices
from lightning_langcell.inference.metrics import classification_scores
from lightning_langcell.inference.output import check_output_path, write_h5ad
from lightning_langcell.inference.zero_shot import encode_class_texts

FEW_SHOT_PREDICTION_KEY = "langcell_few_shot_prediction"
FEW_SHOT_SCORES_KEY = "langcell_few_shot_scores"


def read_cells(adata_or_path: Any, what: str):
    """An AnnData from an AnnData or an existing .h5ad path."""
    import anndata

    if isinstance(adata_or_path, anndata.AnnData):
        return adata_or_path
    if isinstance(adata_or_path, (str, os.PathLike)) and Path(adata_or_path).is_file():
        return anndata.read_h5ad(adata_or_path)
    raise LangCellInputError(f"The {what} is neither an AnnData nor an existing .h5ad file: {adata_or_path!r}.",
                             f"Pass the {what} as an AnnData or a .h5ad path.")


def reference_codes(reference, label_column: str, classes: CandidateClasses) -> np.ndarray:
    """Class index [n_reference] of each reference cell (-1: no label); errors on labels outside the classes."""
    labels = obs_labels(reference.obs, label_column)
    codes = truth_indices(labels, classes)
    unknown = sorted(set(labels[(codes < 0) & labels.notna().to_numpy()].astype(str)))
    if unknown:
        raise LangCellInputError(f"Reference labels {unknown} are not among the candidate classes {classes.names}.",
                                 "Add them to classes=[...], or drop those reference cells.")
    if not (codes >= 0).any():
        raise LangCellInputError(f"No reference cell has a label in obs[{label_column!r}].",
                                 "Pass reference_label_column=<the column with the reference labels>.")
    return codes


def class_text_embeddings(model_or_path: Any, classes: CandidateClasses, text_tokenizer: Any) -> torch.Tensor:
    """CTC embeddings [C, E] of the class texts (on CPU)."""
    model, tokenizer, _ = load_zero_shot_model(model_or_path, text_tokenizer)
    encoded = tokenize_class_texts(classes.texts, tokenizer, model.cpu())
    return encode_class_texts(model, encoded["input_ids"], encoded["attention_mask"]).embedding.float()


def few_shot_annotate(
    adata_or_path: Any,
    model_or_path: Any,
    reference: Any,
    reference_label_column: str = "cell_type",
    adapter: str = "prototype",
    classes: ClassSpec = None,
    label_column: str | None = "cell_type",
    *,
    type2text: Any = None,
    allow_missing_definitions: bool = False,
    text_tokenizer: Any = None,
    output: str | os.PathLike | None = None,
    overwrite: bool = False,
    **annotate_options: Any,
):
    """Annotate ``adata_or_path`` zero-shot and with a few-shot adapter fitted on ``reference``.

    Args:
        reference: AnnData or .h5ad path of labelled cells (e.g. k per class) in
            ``obs[reference_label_column]``; unlabelled reference cells are ignored.
        adapter: ``"prototype"`` (training-free, blend weight by leave-one-out; its text term is
            the zero-shot log-probability, so weight 0 is zero-shot exactly) or ``"probe"`` (the
            text-initialised linear probe).
        classes: candidate classes as in ``annotate``; None: the reference's labels.
        label_column: the query's ground truth (metrics when present).
        annotate_options: further ``annotate`` settings (alpha, top_k, batch_size, max_length, ...),
            used for both the reference and the query.
    """
    if adapter not in ADAPTERS:
        raise LangCellInputError(f"Unknown adapter {adapter!r}.", f"Use one of {list(ADAPTERS)}.")
    if output is not None:
        check_output_path(output, overwrite,
                          adata_or_path if isinstance(adata_or_path, (str, os.PathLike)) else None)
    reference = read_cells(reference, "reference")
    query = read_cells(adata_or_path, "query")
    candidates = candidate_classes(classes, reference.obs, reference_label_column, type2text,
                                   allow_missing_definitions)
    codes = reference_codes(reference, reference_label_column, candidates)
    options = {**annotate_options, "text_tokenizer": text_tokenizer, "classes": candidates}
    labelled = annotate(reference, model_or_path, label_column=None, **options)
    result = annotate(query, model_or_path, label_column=label_column, **options)
    embeddings = torch.from_numpy(np.asarray(labelled.obsm["X_langcell"], dtype=np.float32))
    keep = torch.from_numpy(codes >= 0) & ~embeddings.isnan().any(dim=1)
    if not bool(keep.any()):
        raise LangCellInputError("No labelled reference cell could be scored (no vocabulary gene).",
                                 "Check the reference's counts and var['ensembl_id'].")
    texts = class_text_embeddings(model_or_path, candidates, text_tokenizer)
    labels = torch.from_numpy(codes)[keep]
    query_embeddings = torch.from_numpy(np.asarray(result.obsm["X_langcell"], dtype=np.float32))
    scored = ~query_embeddings.isnan().any(dim=1)
    scores = torch.full((query.n_obs, len(candidates)), float("nan"), dtype=torch.float32)
    info: dict[str, Any] = {"adapter": adapter, "reference_label_column": reference_label_column,
                            "n_reference_cells": int(keep.sum())}
    if adapter == "prototype":
        log_probs = torch.from_numpy(np.asarray(labelled.obsm["langcell_probabilities"])).clamp_min(1e-12).log()
        fitted = fit_prototype_adapter(embeddings[keep], labels, texts, text_scores=log_probs[keep])
        query_log_probs = torch.from_numpy(np.asarray(result.obsm["langcell_probabilities"])).clamp_min(1e-12).log()
        scores[scored] = fitted.scores(query_embeddings[scored], query_log_probs[scored]).float()
        info.update(blend_weight=fitted.weight, leave_one_out_accuracy={str(w): a for w, a in fitted.loo_accuracy.items()})
    else:
        fitted = fit_probe_adapter(embeddings[keep], labels, texts)
        scores[scored] = fitted.scores(query_embeddings[scored]).float()
    codes_query = np.where(scored.numpy(), scores.nan_to_num(float("-inf")).argmax(dim=1).numpy(), -1)
    result.obs[FEW_SHOT_PREDICTION_KEY] = pd.Categorical.from_codes(
        codes_query, categories=pd.Index(candidates.names, dtype=object))
    result.obsm[FEW_SHOT_SCORES_KEY] = scores.numpy()
    if label_column is not None and label_column in query.obs.columns:
        target = truth_indices(obs_labels(result.obs, label_column), candidates)
        info["metrics"] = classification_scores(target[scored.numpy()], codes_query[scored.numpy()], len(candidates))
    result.uns["langcell"]["few_shot"] = info
    if output is not None:
        write_h5ad(result, output, overwrite)
    return result
