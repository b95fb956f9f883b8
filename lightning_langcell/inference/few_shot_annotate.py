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
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.adapters import DEFAULT_ADAPTER
from lightning_langcell.inference.annotate import annotate, load_checkpoint
from lightning_langcell.inference.classes import ClassSpec, candidate_classes
from lightning_langcell.inference.few_shot_cells import (
    FEW_SHOT_PREDICTION_KEY,
    adapter_results,
    check_adapter,
    labelled_codes,
)
from lightning_langcell.inference.output import check_output_path, write_h5ad


def read_cells(adata_or_path: Any, what: str):
    """An AnnData from an AnnData or an existing .h5ad path."""
    import anndata

    if isinstance(adata_or_path, anndata.AnnData):
        return adata_or_path
    if isinstance(adata_or_path, (str, os.PathLike)) and Path(adata_or_path).is_file():
        return anndata.read_h5ad(adata_or_path)
    raise LangCellInputError(f"The {what} is neither an AnnData nor an existing .h5ad file: {adata_or_path!r}.",
                             f"Pass the {what} as an AnnData or a .h5ad path.")


def few_shot_annotate(
    adata_or_path: Any,
    model_or_path: Any,
    reference: Any,
    reference_label_column: str = "cell_type",
    adapter: str = DEFAULT_ADAPTER,
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

    The checkpoint is loaded once, for both. (Labelled cells inside the query itself: use
    ``annotate(..., few_shot_labels=<obs column>)`` instead.)

    Args:
        reference: AnnData or .h5ad path of labelled cells (e.g. k per class) in
            ``obs[reference_label_column]``; unlabelled reference cells are ignored.
        adapter: ``"probe"`` (default: the linear probe pulled toward the class texts) or ``"prototype"``
            (training-free, blend weight by leave-one-out; weight 0 is zero-shot exactly); see
            :mod:`lightning_langcell.inference.adapters`.
        classes: candidate classes as in ``annotate``; None: the reference's labels.
        label_column: the query's ground truth (metrics when present).
        annotate_options: further ``annotate`` settings (alpha, top_k, batch_size, max_length, ...),
            used for both the reference and the query.
    """
    check_adapter(adapter)
    if output is not None:
        check_output_path(output, overwrite,
                          adata_or_path if isinstance(adata_or_path, (str, os.PathLike)) else None)
    reference = read_cells(reference, "reference")
    query = read_cells(adata_or_path, "query")
    candidates = candidate_classes(classes, reference.obs, reference_label_column, type2text,
                                   allow_missing_definitions)
    codes = labelled_codes(reference.obs, reference_label_column, candidates)
    loaded = load_checkpoint(model_or_path, text_tokenizer)
    options = {**annotate_options, "classes": candidates}
    labelled = annotate(reference, loaded, label_column=None, **options)
    result = annotate(query, loaded, label_column=label_column, **options)
    texts = class_text_embeddings(loaded, candidates, annotate_options)
    probabilities = np.concatenate([labelled.obsm["langcell_probabilities"], result.obsm["langcell_probabilities"]])
    embeddings = np.concatenate([labelled.obsm["X_langcell"], result.obsm["X_langcell"]])
    all_codes = np.concatenate([codes, np.full(query.n_obs, -1)])
    obs, obsm, info = adapter_results(adapter, probabilities, embeddings, texts, all_codes, candidates)
    query_rows = slice(reference.n_obs, None)
    for key, values in obs.items():
        result.obs[key] = values[query_rows]
    for key, values in obsm.items():
        result.obsm[key] = values[query_rows]
    info.update(reference_label_column=reference_label_column, n_reference_cells=info.pop("n_labelled_cells"))
    if "metrics" in result.uns["langcell"]:
        from lightning_langcell.inference.classes import obs_labels, truth_indices
        from lightning_langcell.inference.metrics import classification_scores

        target = truth_indices(obs_labels(result.obs, label_column), candidates)
        predicted = result.obs[FEW_SHOT_PREDICTION_KEY].cat.codes.to_numpy()
        info["metrics"] = classification_scores(target[predicted >= 0], predicted[predicted >= 0], len(candidates))
    result.uns["langcell"]["few_shot"] = info
    if output is not None:
        write_h5ad(result, output, overwrite)
    return result


def class_text_embeddings(loaded, candidates, annotate_options: dict[str, Any]) -> torch.Tensor:
    """[C, E] CTC embedding of each class as the zero-shot scorer of ``annotate`` used it (its
    prompts combined; the text embeddings come from the text cache the annotate calls filled)."""
    from lightning_langcell.inference.annotate import build_scorer
    from lightning_langcell.inference.prompts import DEFAULT_PROMPTS

    device = next(loaded.model.parameters()).device
    with torch.no_grad():
        scorer = build_scorer(loaded.model, candidates, loaded.text_tokenizer, device,
                              annotate_options.get("text_cache", True),
                              annotate_options.get("prompts", DEFAULT_PROMPTS),
                              alpha=1.0)  # similarity only: the matcher's text prefix is not needed
    return scorer.class_embedding.float().cpu()
