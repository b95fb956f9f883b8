"""Data: the tokenized-cell corpus on disk, datasets, collation and the data module."""

from lightning_langcell.data.corpus import CellCorpus, CellRecord
from lightning_langcell.data.corpus_writer import merge_corpora, tokenize_to_corpus

__all__ = [
    "CellCorpus",
    "CellRecord",
    "merge_corpora",
    "tokenize_to_corpus",
]
