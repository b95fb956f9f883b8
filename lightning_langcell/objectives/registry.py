"""The registry of pre-training objectives: a new objective is one ``Objective`` subclass in one
file, registered with :func:`register_objective`, plus a recipe line ``loss_weights: {name: w}``.

``LangCellPretraining`` computes every registered objective whose weight is > 0, in registration
order, and adds ``weight x loss`` to the total (logged as ``loss_<name>``).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from lightning_langcell.errors import LangCellInputError


class Objective:
    """One pre-training loss.

    Subclasses set ``name`` (the ``loss_weights`` key and the ``loss_<name>`` metric), ``weight``
    (used when the recipe gives none), ``batch_fields`` (batch keys the loss reads), ``outputs``
    (shared model outputs it reads, names of :class:`PretrainingStep` outputs) and ``fix`` (how a
    user makes the batch carry those fields), and implement :meth:`compute`.
    """

    name: str = ""
    weight: float = 1.0
    batch_fields: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    fix: str = ""

    def compute(self, step: Any) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(loss, statistics to log) of one batch; ``step`` is a :class:`PretrainingStep`."""
        raise NotImplementedError

    def missing_fields(self, available: Any) -> list[str]:
        """The ``batch_fields`` not in ``available`` (a batch dict or a set of field names)."""
        return [field for field in self.batch_fields if field not in available]

    def check_fields(self, available: Any, where: str) -> None:
        """Raise one ``LangCellInputError`` naming this objective and its missing fields."""
        missing = self.missing_fields(available)
        if missing:
            raise LangCellInputError(
                f"Objective {self.name!r} (weight > 0) needs batch field(s) {missing}, which {where} does not provide.",
                f"{self.fix} Or switch it off with `loss_weights: {{{self.name}: 0}}`.".lstrip(),
            )


_REGISTRY: dict[str, Objective] = {}


def register_objective(objective: Objective) -> Objective:
    """Add ``objective`` to the registry (after the ones already there); returns it."""
    if not objective.name or objective.name in _REGISTRY:
        raise LangCellInputError(
            f"Cannot register objective {objective.name!r}: the name is empty or already taken.",
            f"Pick a name not in {list(_REGISTRY)}.",
        )
    _REGISTRY[objective.name] = objective
    return objective


def unregister_objective(name: str) -> None:
    """Remove a registered objective (plugins and tests that register one for a while)."""
    _REGISTRY.pop(name, None)


def registered_objectives() -> dict[str, Objective]:
    """Every registered objective by name, in registration order."""
    return dict(_REGISTRY)


def resolve_loss_weights(loss_weights: Mapping[str, float] | None) -> dict[str, float]:
    """Each registered objective's weight: its default, overridden by ``loss_weights``."""
    unknown = set(loss_weights or {}) - set(_REGISTRY)
    if unknown:
        raise LangCellInputError(f"Unknown loss names {sorted(unknown)}.", f"Use {list(_REGISTRY)}.")
    return {name: float((loss_weights or {}).get(name, objective.weight)) for name, objective in _REGISTRY.items()}
