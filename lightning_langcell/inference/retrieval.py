"""Cell ↔ text retrieval with a LangCell model: recall@k in both directions (pure torch).

Inputs: cell embeddings [N, E], text embeddings [T, E] (both normalised here, so the score is
the cosine similarity), and ``text_of_cell`` [N] int: the index of each cell's true text (many
cells may share one text, e.g. cell-type texts; -1: no true text, the cell is ignored). Give
each distinct text once (:func:`deduplicate_texts`): two copies of the true text tie, and a tie
is not a hit.

Ties are scored in expectation under uniformly random tie-breaking (scores within
``tie_tolerance`` of each other are tied), so a collapsed encoder (all scores equal) gets
recall@1 = 1/T, not 1:

- **cell→text recall@k**: mean over cells of P(true text in the top k). With g texts scoring
  strictly higher and e others tied with it, that is clip((k - g) / (e + 1), 0, 1).
- **text→cell recall@k**: mean over the texts that have cells of P(at least one of its cells in
  the k cells most similar to the text). With g cells strictly above its best own cell and, tied
  with it, m own and e other cells, r = k - g places go to the tied block:
  1 - C(e, r) / C(m + e, r).
- **text→cell precision@k**: mean over those texts of the expected fraction of its own cells
  among the top k (cells tied with the k-th score fill the remaining places at random). With
  shared texts recall@k saturates quickly (any one of hundreds of cells suffices); precision@k
  does not.

Recall@k is left out where it is 1 by construction: cell→text for k ≥ T, text→cell for k ≥ N.
The similarity matrix is never built whole: cells are scored in chunks of at most
``max_elements`` similarities (default 2**25, 128 MB in float32), in two passes (the thresholds
per text, then the counts above and at them).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.langcell import LangCellModel

DEFAULT_KS = (1, 5, 10)
DEFAULT_MAX_ELEMENTS = 1 << 25
DEFAULT_TIE_TOLERANCE = 1e-6


def _as_tensor(values: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(values) if not isinstance(values, torch.Tensor) else values)


def deduplicate_texts(texts: Sequence[str], text_of_cell: Sequence[int] | np.ndarray) -> tuple[list[str], np.ndarray]:
    """(distinct texts in first-seen order, ``text_of_cell`` re-indexed to them; -1 kept).

    Labels that share one Cell Ontology term share one class text; scored as separate rows,
    the copies would tie with each other.
    """
    distinct: dict[str, int] = {}
    new_index = np.array([distinct.setdefault(text, len(distinct)) for text in texts] + [-1], dtype=np.int64)
    return list(distinct), new_index[np.asarray(text_of_cell, dtype=np.int64)]


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


def _running_top(values: torch.Tensor, scores: torch.Tensor, k: int) -> torch.Tensor:
    """The k best values [T, k'] of the kept ``values`` [T, m] and a chunk's ``scores`` [T, c]."""
    merged = torch.cat([values, scores], dim=1)
    return merged.topk(min(k, merged.shape[1]), dim=1).values


def _log_choose(n: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(r + 1) - torch.lgamma(n - r + 1)


def _any_own_in_top(above: torch.Tensor, own_tied: torch.Tensor, other_tied: torch.Tensor, k: int) -> torch.Tensor:
    """P(at least one own cell in the top k) when ``above`` cells beat the best own one and the
    tied block (``own_tied`` own + ``other_tied`` other cells) is ordered at random."""
    places = (k - above).clamp(min=0)
    none_own = torch.exp(_log_choose(other_tied, places.clamp(max=other_tied))
                         - _log_choose(own_tied + other_tied, places.clamp(max=own_tied + other_tied)))
    none_own = torch.where(places > other_tied, torch.zeros_like(none_own), none_own)
    return torch.where(places == 0, torch.zeros_like(none_own), 1.0 - none_own)


def retrieval_metrics(
    cell_embeddings: Any,
    text_embeddings: Any,
    text_of_cell: Sequence[int] | np.ndarray | torch.Tensor,
    ks: Sequence[int] = DEFAULT_KS,
    max_elements: int = DEFAULT_MAX_ELEMENTS,
    tie_tolerance: float = DEFAULT_TIE_TOLERANCE,
) -> dict[str, float]:
    """Retrieval scores (definitions in the module docstring), as a flat dict of floats.

    Keys, for each k in ``ks``: ``cell_to_text_recall_at_{k}`` (k < T), ``text_to_cell_recall_at_{k}``
    (k < N), ``text_to_cell_precision_at_{k}``; plus ``retrieval_n_cells`` and ``retrieval_n_texts``
    (the cells with a true text, and the texts with at least one cell). Cells with text -1 are ignored.
    """
    cells = torch.nn.functional.normalize(_as_tensor(cell_embeddings).double(), dim=1)
    texts = torch.nn.functional.normalize(_as_tensor(text_embeddings).double().to(cells.device), dim=1)
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
    ks = sorted(set(int(k) for k in ks))
    chunk = max(1, max_elements // max(n_texts, 1))
    cell_to_text = {k: torch.empty(n_cells, dtype=torch.float64, device=cells.device) for k in ks}
    best_own = torch.full((n_texts,), -torch.inf, dtype=torch.float64, device=cells.device)
    top_values = texts.new_empty((n_texts, 0))
    for start in range(0, n_cells, chunk):  # pass 1: cell -> text, and each text's thresholds
        sim = cells[start:start + chunk] @ texts.T  # [c, T]
        own = truth[start:start + chunk]
        true_sim = sim.gather(1, own[:, None])
        above = (sim > true_sim + tie_tolerance).sum(dim=1).double()
        tied = ((sim - true_sim).abs() <= tie_tolerance).sum(dim=1).double()  # includes the true text
        for k in ks:
            cell_to_text[k][start:start + chunk] = ((k - above) / tied).clamp(0.0, 1.0)
        best_own.scatter_reduce_(0, own, true_sim[:, 0], reduce="amax")
        top_values = _running_top(top_values, sim.T, min(max(ks), n_cells))
    thresholds = torch.cat([best_own[:, None], top_values[:, [min(k, n_cells) - 1 for k in ks]]], dim=1)  # [T, 1+K]
    above = torch.zeros_like(thresholds)
    tied = torch.zeros_like(thresholds)
    above_own = torch.zeros_like(thresholds)
    tied_own = torch.zeros_like(thresholds)
    text_ids = torch.arange(n_texts, device=cells.device)
    for start in range(0, n_cells, chunk):  # pass 2: cells above / tied with each threshold
        sim = (cells[start:start + chunk] @ texts.T).T  # [T, c]
        own = truth[start:start + chunk][None, :] == text_ids[:, None]
        for column in range(thresholds.shape[1]):
            threshold = thresholds[:, column:column + 1]
            is_above, is_tied = sim > threshold + tie_tolerance, (sim - threshold).abs() <= tie_tolerance
            above[:, column] += is_above.sum(1)
            tied[:, column] += is_tied.sum(1)
            above_own[:, column] += (is_above & own).sum(1)
            tied_own[:, column] += (is_tied & own).sum(1)
    queried = torch.bincount(truth, minlength=n_texts) > 0
    metrics: dict[str, float] = {}
    for column, k in enumerate(ks, start=1):
        if k < n_texts:
            metrics[f"cell_to_text_recall_at_{k}"] = float(cell_to_text[k].mean())
        if k < n_cells:
            hit = _any_own_in_top(above[:, 0], tied_own[:, 0], tied[:, 0] - tied_own[:, 0], k)
            metrics[f"text_to_cell_recall_at_{k}"] = float(hit[queried].mean())
        k_cell = min(k, n_cells)
        places = k_cell - above[:, column]  # left for the cells tied with the k-th score
        own_expected = above_own[:, column] + places * tied_own[:, column] / tied[:, column]
        metrics[f"text_to_cell_precision_at_{k}"] = float((own_expected / k_cell)[queried].mean())
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
