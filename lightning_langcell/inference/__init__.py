"""Using a trained model: zero-shot cell-type annotation (scoring engine, AnnData API, output,
the ontology's hierarchy, open-set scores, prompt ensembles, few-shot adapters), cell embeddings' scores and cell ↔ text retrieval."""

from lightning_langcell.inference.annotate import annotate, load_zero_shot_model
from lightning_langcell.inference.classes import CandidateClasses, candidate_classes, truth_indices
from lightning_langcell.inference.embedding_metrics import (
    embedding_scores,
    knn_batch_mixing,
    knn_purity,
    silhouette,
    silhouette_batch,
    silhouette_label,
)
from lightning_langcell.inference.few_shot_annotate import few_shot_annotate
from lightning_langcell.inference.hierarchy import ClassHierarchy, HierarchicalPredictions, hierarchical_scores
from lightning_langcell.inference.open_set import left_out_auroc, unknown_score
from lightning_langcell.inference.output import CellEmbeddings, ZeroShotAnnotations, write_annotated_copy, write_h5ad
from lightning_langcell.inference.prompts import PROMPT_TEMPLATES, PromptTexts, class_prompts
from lightning_langcell.inference.retrieval import deduplicate_texts, embed_texts, retrieval_metrics
from lightning_langcell.inference.zero_shot import (
    ClassTexts,
    TextGroups,
    ZeroShotOutput,
    ZeroShotScorer,
    encode_class_texts,
    fused_match_logits,
    per_class_match_logits,
    top_k_candidates,
)

__all__ = [
    "CandidateClasses",
    "CellEmbeddings",
    "ClassHierarchy",
    "ClassTexts",
    "HierarchicalPredictions",
    "PROMPT_TEMPLATES",
    "PromptTexts",
    "TextGroups",
    "ZeroShotAnnotations",
    "ZeroShotOutput",
    "ZeroShotScorer",
    "annotate",
    "candidate_classes",
    "class_prompts",
    "deduplicate_texts",
    "embed_texts",
    "embedding_scores",
    "encode_class_texts",
    "few_shot_annotate",
    "fused_match_logits",
    "hierarchical_scores",
    "knn_batch_mixing",
    "knn_purity",
    "left_out_auroc",
    "load_zero_shot_model",
    "per_class_match_logits",
    "retrieval_metrics",
    "silhouette",
    "silhouette_batch",
    "silhouette_label",
    "top_k_candidates",
    "truth_indices",
    "unknown_score",
    "write_annotated_copy",
    "write_h5ad",
]
