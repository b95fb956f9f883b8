"""Cell ↔ text retrieval with a LangCell model: recall@k in both directions (pure torch).

Inputs: cell embeddings [N, E], text embeddings [T, E] (both normalised here, so the score is
the cosine similarity), and ``text_of_cell`` [N] int: the index of each cell's true text (many
cells may share one text, e.g. cell-type texts; -1: no true text, the cell is ignored).

- **cell→text recall@k**: fraction of cells whose true text is among the k texts most similar
  to the cell (k capped at T). Ties count in the cell's favour: the true text is in the top k
  when fewer than k texts score strictly higher.
- **text→cell recall@k**: fraction of the texts that have at least one cell for which at least
  one of the k cells most similar to the text is one of its cells (k capped at N); ties as
  above (its best cell is in the top k when fewer than k cells score strictly higher).
- **text→cell precision@k**: mean over those texts of the fraction of the k most similar cells
  that are its cells (ties broken by ``torch.topk``). With shared texts recall@k saturates
  quickly (any one of hundreds of cells suffices); precision@k does not.

The similarity matrix is never built whole: cells are scored in chunks of at most
``max_elements`` similarities (default 2**25, 128 MB in float32), keeping a running top-k per text.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.langcell import LangCellModel

DEFAULT_KS = (1, 5, 10)
DEFAULT_MAX_ELEMENTS = 1 << 25


def _as_tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)


def _check_inputs(cells: torch.Tensor, texts: torch.Tensor, text_of_cell: torch.Tensor) -> None:
    if cells.ndim != 2 or texts.ndim != 2 or cells.shape[1] != texts.shape[1]:
        raise LangCellInputError(
            f"Cell embeddings {tuple(cells.shape)} and text embeddings {tuple(texts.shape)} do not match.",
            "Pass cell embeddings [N, E] and text embeddings [T, E] from the same model.",
        )
    if text_of_cell.shape != (cells.shape[0],):
        raise LangCellInputError(f"text_of_cell has shape {tuple(text_of_cell.shape)}, expected ({cells.shape[0]},).",
                                 "Give one text index per cell (-1: none).")
    if texts.shape[0] == 0 or bool((text_of_cell >= texts.shape[0]).any()) or bool((text_of_cell < -1).any()):
        raise LangCellInputError(
            f"text_of_cell must hold indices in [-1, {texts.shape[0] - 1}] of the {texts.shape[0]} texts.",
            "Map every cell to the row of its true text (-1: none).")


def _running_top(values: torch.Tensor, cells: torch.Tensor, scores: torch.Tensor, start: int,
                 k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k best of the kept (``values``, ``cells``) [T, m] and the chunk ``scores`` [T, c] of
    cells ``start ... start + c - 1``: (values [T, k'], cell indices [T, k']), best first."""
    chunk_cells = torch.arange(start, start + scores.shape[1], device=scores.device).expand(scores.shape[0], -1)
    merged = torch.cat([values, scores], dim=1)
    values, order = merged.topk(min(k, merged.shape[1]), dim=1)
    return values, torch.cat([cells, chunk_cells], dim=1).gather(1, order)


def retrieval_metrics(
    cell_embeddings: Any,
    text_embeddings: Any,
    text_of_cell: Sequence[int] | np.ndarray | torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
) -> dict[str, float]:
    """Retrieval scores (definitions in the module docstring), as a flat dict of floats.

    Keys, for each k in ``ks``: ``cell_to_text_recall_at_{k}``, ``text_to_cell_recall_at_{k}``,
    ``text_to_cell_precision_at_{k}``; plus ``retrieval_n_cells`` and ``retrieval_n_texts`` (the
    cells with a true text, and the texts with at least one cell). Cells with text -1 are ignored.
    """
    cells = torch.nn.functional.normalize(_as_tensor(cell_embeddings).float(), dim=1)
    texts = torch.nn.functional.normalize(_as_tensor(text_embeddings).float().to(cells.device), dim=1)
    truth = _as_tensor(text_of_cell).long().to(cells.device)
    _check_inputs(cells, texts, truth)
    if not ks or min(ks) < 1:
        raise LangCellInputError(f"ks={list(ks)} must be positive integers.", "Use e.g. ks=(1, 5, 10).")
    keep = truth >= 0
    cells, truth = cells[keep], truth[keep]
    n_cells, n_texts = cells.shape[0], texts.shape[0]
    if n_cells == 0:
        raise LangCellInputError("No cell has a true text: retrieval cannot be scored.",
                                 "Give each labelled cell the index of its text in text_of_cell.")
    k_cells = min(max(ks), n_cells)
    chunk = max(1, max_elements // max(n_texts, 1))
    cell_rank = torch.empty(n_cells, dtype=torch.long, device=cells.device)  # texts scoring above the true one
    best_own = torch.full((n_texts,), -torch.inf, device=cells.device)  # best similarity of a text's own cell
    top_values = texts.new_empty((n_texts, 0))
    top_cells = torch.empty((n_texts, 0), dtype=torch.long, device=cells.device)
    for start in range(0, n_cells, chunk):
        sim = cells[start:start + chunk] @ texts.T  # [c, T]
        own = truth[start:start + chunk]
        true_sim = sim.gather(1, own[:, None])
        cell_rank[start:start + chunk] = (sim > true_sim).sum(dim=1)
        best_own.scatter_reduce_(0, own, true_sim[:, 0], reduce="amax")
        top_values, top_cells = _running_top(top_values, top_cells, sim.T, start, k_cells)
    queried = torch.bincount(truth, minlength=n_texts) > 0
    top_own = truth[top_cells] == torch.arange(n_texts, device=cells.device)[:, None]  # [T, k_cells]
    metrics: dict[str, float] = {}
    for k in ks:
        k_text, k_cell = min(k, n_texts), min(k, n_cells)
        metrics[f"cell_to_text_recall_at_{k}"] = float((cell_rank < k_text).double().mean())
        # the best own cell is in the top k ⇔ fewer than k cells score strictly higher ⇔ it ≥ the k-th score
        hit = best_own >= top_values[:, k_cell - 1]
        metrics[f"text_to_cell_recall_at_{k}"] = float(hit[queried].double().mean())
        metrics[f"text_to_cell_precision_at_{k}"] = float(top_own[queried, :k_cell].double().mean())
    metrics["retrieval_n_cells"] = int(n_cells)
    metrics["retrieval_n_texts"] = int(queried.sum())
    return metrics


@torch.no_grad()
def embed_texts(model: LangCellModel, texts: Sequence[str], tokenizer: Any, batch_size: int = 64,
                device: torch.device | str | None = None) -> torch.Tensor:
    """L2-normalised text embeddings [T, E] (float32, on ``device``) of ``texts``.

    Tokenized and checked like zero-shot class texts
    (:func:`lightning_langcell.inference.annotate.tokenize_class_texts`), embedded with
    :func:`lightning_langcell.inference.zero_shot.encode_class_texts` ``batch_size`` texts at a time.
    """
    from lightning_langcell.inference.annotate import tokenize_class_texts
    from lightning_langcell.inference.zero_shot import encode_class_texts

    if not texts:
        raise LangCellInputError("No texts to embed.", "Give at least one text.")
    if batch_size < 1:
        raise LangCellInputError(f"batch_size must be positive, got {batch_size}.", "Use e.g. batch_size=64.")
    device = torch.device(device) if device is not None else next(model.parameters()).device
    parts = []
    for start in range(0, len(texts), batch_size):
        encoded = tokenize_class_texts(list(texts[start:start + batch_size]), tokenizer, model)
        parts.append(encode_class_texts(model, encoded["input_ids"].to(device),
                                        encoded["attention_mask"].to(device)).embedding.float())
    return torch.cat(parts)
