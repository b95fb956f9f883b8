"""LangCell's four pre-training objectives as pure torch functions (no Lightning).

- MGM: :func:`mask_genes` + :func:`masked_gene_modelling_loss`
- C–C: :func:`cell_cell_contrastive_loss`
- CTC: :func:`cell_text_contrastive_loss` (identical texts are shared positives)
- CTM: :func:`sample_hard_negatives` → :func:`build_matching_batch` → :func:`cell_text_matching_loss`

Each objective is also a registered :class:`Objective` (:mod:`~lightning_langcell.objectives.registry`,
built-ins in :mod:`~lightning_langcell.objectives.pretraining`) that ``LangCellPretraining`` loops over.

Contrastive and matching losses gather the world batch across ``torch.distributed`` ranks
(OpenCLIP local loss); see :mod:`lightning_langcell.objectives.distributed` for the scaling.
"""

from lightning_langcell.objectives.contrastive import (
    ContrastiveStats,
    cell_cell_contrastive_loss,
    cell_text_contrastive_loss,
    text_identity_ids,
)
from lightning_langcell.objectives.distributed import (
    GatheredBatch,
    all_gather_no_grad,
    all_gather_with_grad,
    gather_world,
    is_distributed,
    world_mean,
    world_size,
)
from lightning_langcell.objectives.masking import (
    IGNORE_INDEX,
    mask_genes,
    masked_gene_modelling_loss,
    masked_gene_positions,
    masking_generator,
    masking_seed,
)
from lightning_langcell.objectives.matching import (
    HardNegatives,
    MatchingBatch,
    build_matching_batch,
    cell_text_matching_loss,
    hard_negative_probabilities,
    sample_hard_negatives,
)
from lightning_langcell.objectives.pretraining import (
    CellCellContrastive,
    CellTextContrastive,
    CellTextMatching,
    MaskedGeneModelling,
)
from lightning_langcell.objectives.registry import (
    Objective,
    register_objective,
    registered_objectives,
    resolve_loss_weights,
    unregister_objective,
)
from lightning_langcell.objectives.step import PretrainingStep

__all__ = [
    "CellCellContrastive",
    "CellTextContrastive",
    "CellTextMatching",
    "MaskedGeneModelling",
    "Objective",
    "PretrainingStep",
    "register_objective",
    "registered_objectives",
    "resolve_loss_weights",
    "unregister_objective",
    "IGNORE_INDEX",
    "ContrastiveStats",
    "GatheredBatch",
    "HardNegatives",
    "MatchingBatch",
    "all_gather_no_grad",
    "all_gather_with_grad",
    "build_matching_batch",
    "cell_cell_contrastive_loss",
    "cell_text_contrastive_loss",
    "cell_text_matching_loss",
    "gather_world",
    "hard_negative_probabilities",
    "is_distributed",
    "mask_genes",
    "masked_gene_modelling_loss",
    "masked_gene_positions",
    "masking_generator",
    "masking_seed",
    "sample_hard_negatives",
    "text_identity_ids",
    "world_mean",
    "world_size",
]
