"""Few-shot adapters on a frozen model: k labelled cells per class improve zero-shot predictions.

Both adapters take tensors the caller computes once with the frozen model: cell embeddings
[n, E] (the CTC space, ``obsm["X_langcell"]``), the class-text embeddings [C, E] and, for the
prototype adapter, optionally the zero-shot scores [n, C] of the same cells. Nothing random is
drawn: each fit is a deterministic function of its inputs.

- :func:`fit_prototype_adapter` (training-free): each class's prototype is the normalised mean
  of its labelled cells' normalised embeddings. Scores are blended, not vectors::

      score[i, c] = (1 − w) · std(text term)[i, c] + w · std(cos(cell_i, prototype_c))[i, c]

  where the text term is ``cos(cell, text_c)`` (CTC) or the caller's zero-shot scores (e.g. log
  final probabilities, so that w = 0 gives exactly the zero-shot prediction), and ``std``
  standardises each cell's row over the classes (mean 0, sd 1): cell–cell and cell–text
  similarities live on different scales (the modality gap), the blend weight w should not
  depend on them. A class without labelled cells keeps its text term in both parts. w comes
  from a grid (0 included) by leave-one-out accuracy on the labelled cells (each cell scored
  against prototypes computed without it; a class left with no cell falls back to its text
  term), ties going to the smallest w: on the labelled cells the adapter is never worse than
  w = 0, i.e. than zero-shot. With one cell per class leave-one-out can only say whether the
  other classes' prototypes pull cells away, so it is conservative at k = 1.
- :func:`fit_probe_adapter`: a linear classifier on the normalised embeddings, logits
  ``cell · (text_c + Δ_c) / T + b_c``, started at Δ = 0, b = 0 (the CTC classifier: same
  predictions as zero-shot with alpha = 1) and trained full-batch with Adam on cross-entropy
  plus ``l2_to_init · Σ Δ²`` (weight decay toward the text embeddings, not toward 0). The
  default ``l2_to_init`` 0.01 (300 steps, Adam lr 0.01) was chosen among {1, 0.1, 0.01, 0.001}
  on the shipped checkpoint's pre-training datasets, never on the never-seen benchmark sets.
- :func:`fit_adapter`: either adapter by name with its defaults (what ``annotate``, the CLI and
  the benchmark call).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models.zero_shot_scores import OFFICIAL_TEMPERATURE

BLEND_GRID = tuple(round(0.1 * i, 1) for i in range(11))
ADAPTERS = ("prototype", "probe")
DEFAULT_ADAPTER = "probe"


def check_labelled(embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor) -> None:
    """Refuse shapes that do not fit: embeddings [n, E], labels [n] in [0, C), texts [C, E]."""
    if embeddings.ndim != 2 or text_embeddings.ndim != 2 or embeddings.shape[1] != text_embeddings.shape[1]:
        raise LangCellInputError(
            f"Cell embeddings {tuple(embeddings.shape)} and class-text embeddings {tuple(text_embeddings.shape)} "
            "must be [n, E] and [C, E] with the same E.", "Embed cells and class texts with the same model.")
    if labels.shape != (embeddings.shape[0],) or embeddings.shape[0] == 0:
        raise LangCellInputError(f"{embeddings.shape[0]} labelled cell(s) but labels of shape {tuple(labels.shape)}.",
                                 "Give one class index per labelled cell (at least one cell).")
    if int(labels.min()) < 0 or int(labels.max()) >= text_embeddings.shape[0]:
        raise LangCellInputError(f"Labels must be class indices in [0, {text_embeddings.shape[0]}).",
                                 "Map each labelled cell's label to its candidate class index.")


def standardize_rows(scores: torch.Tensor, counted: torch.Tensor | None = None) -> torch.Tensor:
    """Each row [.., C] shifted to mean 0 and scaled to sd 1 over the classes (sd 0 rows: just
    shifted); ``counted`` (bool, same shape): the entries the mean and sd are taken over."""
    counted = torch.ones_like(scores, dtype=torch.bool) if counted is None else counted
    n = counted.sum(dim=-1, keepdim=True).clamp_min(1)
    mean = torch.where(counted, scores, 0).sum(dim=-1, keepdim=True) / n
    centred = scores - mean
    sd = (torch.where(counted, centred, 0).pow(2).sum(dim=-1, keepdim=True) / n).sqrt()
    return centred / sd.clamp_min(1e-8)


def class_sums(embeddings: torch.Tensor, labels: torch.Tensor, n_classes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of the normalised embeddings of each class [C, E], cells per class [C])."""
    unit = F.normalize(embeddings.double(), dim=-1)
    sums = torch.zeros(n_classes, unit.shape[1], dtype=unit.dtype).index_add_(0, labels, unit)
    return sums, torch.bincount(labels, minlength=n_classes)


def blend_scores(text_term: torch.Tensor, prototype_term: torch.Tensor, has_prototype: torch.Tensor,
                 weight: float) -> torch.Tensor:
    """``(1 − w)·std(text) + w·std(prototype)``; entries without a prototype (``has_prototype``
    False) take the standardised text term in both parts (the prototype term is standardised
    over the entries with a prototype only)."""
    text_term = standardize_rows(text_term.double())
    prototype_term = torch.where(has_prototype, standardize_rows(prototype_term.double(), has_prototype), text_term)
    return (1.0 - weight) * text_term + weight * prototype_term


@dataclass(frozen=True)
class PrototypeAdapter:
    """Fitted prototype adapter: ``prototypes`` [C, E] (zero rows where ``has_prototype`` is False),
    the class ``text_embeddings`` [C, E], the chosen blend ``weight`` and the leave-one-out
    accuracy of each grid weight (``loo_accuracy``)."""

    prototypes: torch.Tensor
    has_prototype: torch.Tensor
    text_embeddings: torch.Tensor
    weight: float
    loo_accuracy: dict[float, float]

    def scores(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None,
               weight: float | None = None) -> torch.Tensor:
        """Blended scores [n, C] of cells [n, E]; ``text_scores`` [n, C]: the zero-shot scores used at
        fit time (None: cos(cell, text)); ``weight``: override the chosen blend weight."""
        unit = F.normalize(embeddings.double(), dim=-1)
        text_term = text_term_of(unit, self.text_embeddings, text_scores)
        prototype_term = unit @ self.prototypes.T
        chosen = self.weight if weight is None else float(weight)
        return blend_scores(text_term, prototype_term, self.has_prototype.expand_as(prototype_term), chosen)

    def predict(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Class index [n] of each cell."""
        return self.scores(embeddings, text_scores).argmax(dim=-1)

    def settings(self) -> dict:
        """What was chosen: the blend weight and each grid weight's leave-one-out accuracy."""
        return {"blend_weight": self.weight,
                "leave_one_out_accuracy": {str(w): a for w, a in self.loo_accuracy.items()}}


def text_term_of(unit_embeddings: torch.Tensor, text_embeddings: torch.Tensor,
                 text_scores: torch.Tensor | None) -> torch.Tensor:
    """The caller's zero-shot scores [n, C], or cos(cell, text) when there are none."""
    if text_scores is None:
        return unit_embeddings @ F.normalize(text_embeddings.double(), dim=-1).T
    if text_scores.shape != (unit_embeddings.shape[0], text_embeddings.shape[0]):
        raise LangCellInputError(f"text_scores has shape {tuple(text_scores.shape)}, expected "
                                 f"{(unit_embeddings.shape[0], text_embeddings.shape[0])} (cells × classes).",
                                 "Pass the zero-shot scores of the same cells, one column per class.")
    return text_scores.double()


def fit_prototype_adapter(embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                          text_scores: torch.Tensor | None = None,
                          grid: tuple[float, ...] = BLEND_GRID) -> PrototypeAdapter:
    """Prototypes of labelled cells [n, E] with class indices ``labels`` [n], blend weight by
    leave-one-out over ``grid`` (see the module doc). ``text_scores`` [n, C]: zero-shot scores of
    the labelled cells (None: cos(cell, text)); predictions must then pass the same kind."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    check_labelled(embeddings, labels, text_embeddings)
    if not grid or any(not 0.0 <= w <= 1.0 for w in grid):
        raise LangCellInputError(f"Blend weights must lie in [0, 1], got {grid}.", "Use e.g. (0.0, 0.5, 1.0).")
    n_classes = text_embeddings.shape[0]
    sums, counts = class_sums(embeddings, labels, n_classes)
    unit = F.normalize(embeddings.double(), dim=-1)
    prototype_term = unit @ F.normalize(sums, dim=-1).T  # zero rows stay zero
    own_rest = sums[labels] - unit  # leave-one-out: the own class without the cell
    prototype_term[torch.arange(len(labels)), labels] = (unit * F.normalize(own_rest, dim=-1)).sum(-1)
    has_prototype = (counts > 0).expand_as(prototype_term).clone()
    has_prototype[torch.arange(len(labels)), labels] = counts[labels] > 1
    text_term = text_term_of(unit, text_embeddings, text_scores)
    accuracy = {float(w): float((blend_scores(text_term, prototype_term, has_prototype, w).argmax(-1) == labels)
                                .double().mean()) for w in grid}
    best = max(accuracy.values())
    weight = min(w for w, value in accuracy.items() if value == best)
    return PrototypeAdapter(F.normalize(sums, dim=-1), counts > 0, text_embeddings.detach().double(), weight,
                            accuracy)


@dataclass(frozen=True)
class ProbeAdapter:
    """Fitted linear probe: logits = normalised cell · ``weight``ᵀ + ``bias`` (``weight`` [C, E]
    already divided by the temperature)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def scores(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [n, C] of cells [n, E] (``text_scores``: not used, accepted as the prototype's)."""
        return F.normalize(embeddings.float(), dim=-1) @ self.weight.T + self.bias

    def predict(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Class index [n] of each cell."""
        return self.scores(embeddings).argmax(dim=-1)

    def settings(self) -> dict:
        return {}


def fit_probe_adapter(embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                      steps: int = 300, learning_rate: float = 0.01, l2_to_init: float = 0.01,
                      temperature: float = OFFICIAL_TEMPERATURE) -> ProbeAdapter:
    """Train the text-initialised linear probe on labelled cells [n, E] / ``labels`` [n] (module doc).

    ``steps`` full-batch Adam steps (0: the CTC classifier itself); ``l2_to_init``: weight of
    ``Σ Δ²``, the squared distance of the class vectors from their text embeddings.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    check_labelled(embeddings, labels, text_embeddings)
    if steps < 0 or learning_rate <= 0 or l2_to_init < 0 or temperature <= 0:
        raise LangCellInputError(f"steps {steps}, learning_rate {learning_rate}, l2_to_init {l2_to_init}, "
                                 f"temperature {temperature} out of range.",
                                 "Use steps >= 0, learning_rate > 0, l2_to_init >= 0, temperature > 0.")
    unit = F.normalize(embeddings.detach().float(), dim=-1)
    init = F.normalize(text_embeddings.detach().float(), dim=-1)
    delta = torch.zeros_like(init, requires_grad=True)
    bias = torch.zeros(init.shape[0], requires_grad=True)
    optimizer = torch.optim.Adam([delta, bias], lr=learning_rate)
    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            logits = unit @ (init + delta).T / temperature + bias
            loss = F.cross_entropy(logits, labels) + l2_to_init * delta.pow(2).sum()
            loss.backward()
            optimizer.step()
    return ProbeAdapter(((init + delta) / temperature).detach(), bias.detach().clone())


def fit_adapter(adapter: str, embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                text_scores: torch.Tensor | None = None):
    """Fit the named adapter (:data:`ADAPTERS`) with its defaults; the result has ``scores(embeddings,
    text_scores)`` and ``settings()``. ``text_scores``: zero-shot scores of the labelled cells (the
    prototype's text term; predictions then pass the same kind)."""
    if adapter == "prototype":
        return fit_prototype_adapter(embeddings, labels, text_embeddings, text_scores=text_scores)
    if adapter == "probe":
        return fit_probe_adapter(embeddings, labels, text_embeddings)
    raise LangCellInputError(f"Unknown adapter {adapter!r}.", f"Use one of {list(ADAPTERS)}.")
