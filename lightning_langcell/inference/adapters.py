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
- :func:`fit_probe_adapter`: a multinomial logistic regression on embeddings standardised by
  the cells being annotated (``reference``: mean and sd per dimension, no labels used), whose
  weights are pulled toward the class texts instead of toward 0. The text prior is the CTC
  classifier ``cos(cell, text_c) / T`` written as weights on the standardised embeddings
  (:func:`text_prior`), scaled by ``prior_scale``. The fit minimises ``Σ_cells cross-entropy +
  ridge/2 · ‖W − prior‖²`` (bias free, ridge 1 as sklearn's ``C = 1``) by L-BFGS, started at
  the prior: with no labels it is the (scaled) CTC classifier, with many labels a logistic
  regression. ``prior_scale`` 0.5 with ``prior_decay`` 0 (the prior does not shrink with the
  labelled cells per class) was chosen by mean macro-F1 over k ∈ {1, 3, 5, 10} × 5 seeds on the
  shipped checkpoint's four pre-training datasets (0.625, against 0.609 for the previous
  text-initialised probe), among scales {0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1} without decay and
  decays 0.5 (scales 0.5, 0.7, 1) and 1 (scales 0.5, 1, 2); never on the never-seen benchmark
  sets (``benchmarks/few_shot_adapters.py`` measures those).
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
PROBE_PRIOR_SCALE, PROBE_PRIOR_DECAY = 0.5, 0.0  # chosen on the pre-training datasets (module doc)
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
    """Fitted linear probe on standardised embeddings: logits = ((cell − ``mean``) / ``scale``) ·
    ``weight``ᵀ + ``bias``; ``prior_weight`` [C, E] is the text classifier it was pulled toward."""

    mean: torch.Tensor
    scale: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    prior_weight: torch.Tensor
    prior_scale: float
    prior_decay: float

    def scores(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [n, C] of cells [n, E] (``text_scores``: not used, accepted as the prototype's)."""
        return ((embeddings.double() - self.mean) / self.scale) @ self.weight.T + self.bias

    def predict(self, embeddings: torch.Tensor, text_scores: torch.Tensor | None = None) -> torch.Tensor:
        """Class index [n] of each cell."""
        return self.scores(embeddings).argmax(dim=-1)

    def settings(self) -> dict:
        """The text prior's scale and decay the probe was fitted with."""
        return {"prior_scale": self.prior_scale, "prior_decay": self.prior_decay}


def standardisation(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [E], sd [E]) of the reference cells' embeddings (sd of one cell or a constant dimension: 1)."""
    reference = reference.detach().double()
    sd = reference.std(dim=0) if len(reference) > 1 else torch.ones(reference.shape[1], dtype=reference.dtype)
    return reference.mean(dim=0), torch.where(sd > 1e-6, sd, torch.ones_like(sd))


def text_prior(text_embeddings: torch.Tensor, reference: torch.Tensor, scale: torch.Tensor,
               temperature: float) -> torch.Tensor:
    """The CTC classifier ``cos(cell, text_c) / T`` as weights [C, E] on standardised embeddings:
    ``text_c/‖text_c‖ ⊙ sd / (mean ‖cell‖ · T)`` (the same logits up to a per-class constant for
    cells of the reference cells' mean norm)."""
    mean_norm = reference.detach().double().norm(dim=-1).mean().clamp_min(1e-12)
    return F.normalize(text_embeddings.detach().double(), dim=-1) * scale / (mean_norm * temperature)


def ridge_logistic_regression(features: torch.Tensor, labels: torch.Tensor, prior: torch.Tensor,
                              ridge: float, max_iter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight [C, E], bias [C]) minimising ``Σ_cells CE + ridge/2 · ‖weight − prior‖²`` (bias free),
    started at the prior, by L-BFGS in float64."""
    delta = torch.zeros_like(prior, requires_grad=True)
    bias = torch.zeros(prior.shape[0], dtype=prior.dtype, requires_grad=True)
    optimizer = torch.optim.LBFGS([delta, bias], lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12)

    def objective():
        optimizer.zero_grad()
        logits = features @ (prior + delta).T + bias
        loss = F.cross_entropy(logits, labels, reduction="sum") + 0.5 * ridge * delta.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(objective)
    return (prior + delta).detach(), bias.detach()


def fit_probe_adapter(embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                      reference: torch.Tensor | None = None, prior_scale: float = PROBE_PRIOR_SCALE,
                      prior_decay: float = PROBE_PRIOR_DECAY, ridge: float = 1.0, max_iter: int = 200,
                      temperature: float = OFFICIAL_TEMPERATURE) -> ProbeAdapter:
    """Fit the text-prior linear probe on labelled cells [n, E] / ``labels`` [n] (module doc).

    ``reference`` [m, E]: the cells whose mean and sd standardise the embeddings (the cells being
    annotated; None: the labelled cells). A class with ``n_c`` labelled cells is pulled toward
    ``prior_scale · n_c^−prior_decay`` × its text classifier with weight ``ridge``; a class without
    labelled cells keeps that prior (with the mean ``n_c``) and the mean bias.
    """
    labels = torch.as_tensor(labels, dtype=torch.long)
    check_labelled(embeddings, labels, text_embeddings)
    if prior_scale < 0 or prior_decay < 0 or ridge <= 0 or max_iter < 1 or temperature <= 0:
        raise LangCellInputError(f"prior_scale {prior_scale}, prior_decay {prior_decay}, ridge {ridge}, "
                                 f"max_iter {max_iter}, temperature {temperature} out of range.",
                                 "Use prior_scale >= 0, prior_decay >= 0, ridge > 0, max_iter >= 1, temperature > 0.")
    reference = embeddings if reference is None else reference
    if reference.ndim != 2 or reference.shape[1] != embeddings.shape[1] or len(reference) == 0:
        raise LangCellInputError(f"Reference cells {tuple(reference.shape)} do not match the labelled cells' "
                                 f"embeddings {tuple(embeddings.shape)}.", "Pass [m, E] embeddings of the same model.")
    mean, scale = standardisation(reference)
    counts = torch.bincount(labels, minlength=text_embeddings.shape[0])
    labelled = counts > 0
    per_class = torch.where(labelled, counts.double(), counts[labelled].double().mean())
    prior = prior_scale * text_prior(text_embeddings, reference, scale, temperature) / per_class.pow(prior_decay)[:, None]
    fitted_classes = labelled.nonzero().flatten()
    position = torch.full_like(counts, -1)
    position[fitted_classes] = torch.arange(len(fitted_classes))
    features = (embeddings.detach().double() - mean) / scale
    weight, bias = ridge_logistic_regression(features, position[labels], prior[fitted_classes], ridge, max_iter)
    full_weight, full_bias = prior.clone(), bias.mean().expand(len(counts)).clone()
    full_weight[fitted_classes], full_bias[fitted_classes] = weight, bias
    return ProbeAdapter(mean, scale, full_weight, full_bias, prior, float(prior_scale), float(prior_decay))


def fit_adapter(adapter: str, embeddings: torch.Tensor, labels: torch.Tensor, text_embeddings: torch.Tensor,
                text_scores: torch.Tensor | None = None, reference: torch.Tensor | None = None):
    """Fit the named adapter (:data:`ADAPTERS`) with its defaults; the result has ``scores(embeddings,
    text_scores)`` and ``settings()``. ``text_scores``: zero-shot scores of the labelled cells (the
    prototype's text term; predictions then pass the same kind); ``reference``: the cells whose
    embeddings standardise the probe's (the cells being annotated)."""
    if adapter == "prototype":
        return fit_prototype_adapter(embeddings, labels, text_embeddings, text_scores=text_scores)
    if adapter == "probe":
        return fit_probe_adapter(embeddings, labels, text_embeddings, reference=reference)
    raise LangCellInputError(f"Unknown adapter {adapter!r}.", f"Use one of {list(ADAPTERS)}.")
