"""Build the bundled uncased WordPiece vocabulary of the text tokenizer.

Trains a WordPiece model with the HF ``tokenizers`` library on the text of the bundled
ontology subset (labels, definitions, synonyms of CL, UBERON, MONDO; CL weighted 3x since
cell types are what the texts are mostly about), with the BERT uncased normaliser and
pre-tokeniser, and writes ``lightning_langcell/text/resources/text_tokenizer/vocab.txt``:

- ``[PAD]``=0, ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4 (PubMedBERT order);
- then every printable lower-case ASCII character (so ASCII text never maps to ``[UNK]``);
- then the learnt pieces, in a canonical order (the trainer's own id order varies between runs).

The trainer breaks ties between equally frequent merges in hash order, which is random per
process, so the set of pieces is not fully reproducible: about 1 rebuild in 15 swaps a few
pieces near the end of training (8 of the 8,000 measured, e.g. ``q3`` for ``qt``). The bundled
file is the reference; the test checks that a rebuild matches it up to such ties.

Usage::

    python scripts/build_text_vocab.py [--vocab-size 8000] [--output DIR]
"""

from __future__ import annotations

import argparse
import string
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))

from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers  # noqa: E402

from lightning_langcell.io_utils import atomic_file  # noqa: E402
from lightning_langcell.text.descriptions import ASPECT_NAMES  # noqa: E402
from lightning_langcell.text.ontology import BUNDLED_ONTOLOGIES, Ontology  # noqa: E402
from lightning_langcell.text.text_tokenizer import TEXT_SPECIAL_TOKENS, bundled_vocab_dir  # noqa: E402

WEIGHTS = {"CL": 3}  # repeats of each ontology's text in the training corpus (default 1)
EXTRA_TEXT = (*ASPECT_NAMES, "normal", "unknown", "year-old human stage", "mouse stage")
ALPHABET = sorted({c for c in string.printable if c.strip()} - set(string.ascii_uppercase))


def ontology_corpus(ontology: Ontology) -> list[str]:
    """Labels, definitions and synonyms of every bundled term (weighted by ``WEIGHTS``)."""
    corpus = list(EXTRA_TEXT)
    for prefix in BUNDLED_ONTOLOGIES:
        texts = []
        for term in ontology.terms(prefix):
            texts.append(term.label)
            texts.extend(term.synonyms)
            if term.definition:
                texts.append(term.definition)
        corpus.extend(texts * WEIGHTS.get(prefix, 1))
    return corpus


def train_vocab(corpus: list[str], vocab_size: int) -> list[str]:
    """WordPiece pieces, special tokens first, then a canonical order."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=2, special_tokens=list(TEXT_SPECIAL_TOKENS),
        initial_alphabet=ALPHABET, continuing_subword_prefix="##", show_progress=False)
    tokenizer.train_from_iterator(corpus, trainer)
    pieces = set(tokenizer.get_vocab()) - set(TEXT_SPECIAL_TOKENS)
    return [*TEXT_SPECIAL_TOKENS, *sorted(pieces, key=canonical_key)]


def canonical_key(piece: str) -> tuple:
    """Single characters first, then word starts before ``##`` continuations, each alphabetical."""
    stem = piece.removeprefix("##")
    return (len(stem) > 1, piece.startswith("##"), stem, piece)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--output", type=Path, default=bundled_vocab_dir())
    args = parser.parse_args(argv)
    vocab = train_vocab(ontology_corpus(Ontology.bundled()), args.vocab_size)
    target = args.output / "vocab.txt"
    with atomic_file(target, "w") as handle:
        handle.write("".join(f"{piece}\n" for piece in vocab))
    target.chmod(0o644)
    print(f"{len(vocab)} pieces -> {target}")


if __name__ == "__main__":
    main()
