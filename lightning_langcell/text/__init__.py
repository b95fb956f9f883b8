"""Cell texts from ontology terms (CL, UBERON, MONDO) and the text tokenizer."""

from lightning_langcell.text.descriptions import (
    ASPECT_NAMES,
    ASPECTS,
    CellTextBuilder,
    TextAspect,
    text_segment,
)
from lightning_langcell.text.ontology import Ontology, OntologyTerm, normalize_label, normalize_term_id
from lightning_langcell.text.text_tokenizer import (
    BLIP_BOS_TOKEN,
    BLIP_ENCODER_TOKEN,
    TEXT_SPECIAL_TOKENS,
    TEXT_MAX_LENGTH,
    load_text_tokenizer,
    text_length_check,
    tokenize_texts,
)

__all__ = [
    "ASPECTS", "ASPECT_NAMES", "BLIP_BOS_TOKEN", "BLIP_ENCODER_TOKEN", "CellTextBuilder",
    "Ontology", "OntologyTerm", "TEXT_SPECIAL_TOKENS", "TEXT_MAX_LENGTH", "TextAspect",
    "load_text_tokenizer", "normalize_label", "normalize_term_id", "text_length_check",
    "text_segment", "tokenize_texts",
]
