"""Using a trained model: zero-shot cell-type annotation (scoring engine, AnnData API, output)."""

from lightning_langcell.inference.annotate import annotate, load_zero_shot_model
from lightning_langcell.inference.classes import CandidateClasses, candidate_classes, truth_indices
from lightning_langcell.inference.output import ZeroShotAnnotations, write_annotated_copy, write_h5ad
from lightning_langcell.inference.zero_shot import (
    ClassTexts,
    ZeroShotOutput,
    ZeroShotScorer,
    encode_class_texts,
    fused_match_logits,
    per_class_match_logits,
    top_k_candidates,
)

__all__ = [
    "CandidateClasses",
    "ClassTexts",
    "ZeroShotAnnotations",
    "ZeroShotOutput",
    "ZeroShotScorer",
    "annotate",
    "candidate_classes",
    "encode_class_texts",
    "fused_match_logits",
    "load_zero_shot_model",
    "per_class_match_logits",
    "top_k_candidates",
    "truth_indices",
    "write_annotated_copy",
    "write_h5ad",
]
