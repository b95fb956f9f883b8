"""Gene vocabulary (bundled Geneformer-30M dictionaries + ``<cls>``) and the rank-value tokenizer."""

from lightning_langcell.tokenization.bundled import ResourceIntegrityError
from lightning_langcell.tokenization.gene_ids import GeneMapping, resolve_genes, strip_version
from lightning_langcell.tokenization.medians import compute_gene_medians, write_gene_medians
from lightning_langcell.tokenization.rank_value import RankedCells, rank_value_encode, same_ranking
from lightning_langcell.tokenization.tokenizer import CellTokenizer, TokenizationReport, TokenizedChunk
from lightning_langcell.tokenization.vocabulary import CLS_ID, MASK_ID, PAD_ID, GeneVocabulary

__all__ = [
    "CLS_ID",
    "MASK_ID",
    "PAD_ID",
    "CellTokenizer",
    "GeneMapping",
    "GeneVocabulary",
    "RankedCells",
    "ResourceIntegrityError",
    "TokenizationReport",
    "TokenizedChunk",
    "compute_gene_medians",
    "rank_value_encode",
    "resolve_genes",
    "same_ranking",
    "strip_version",
    "write_gene_medians",
]
