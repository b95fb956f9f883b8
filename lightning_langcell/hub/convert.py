"""Convert checkpoints: any loadable source → our format or the official LangCell layout.

``python -m lightning_langcell convert SRC DST --to ours|official`` calls :func:`convert_command`.
Converting to ours carries the source's text tokenizer and gene vocabulary along (see
``load_text_tokenizer_for`` / ``load_gene_vocabulary_for``). Converting to official writes the
released layout plus a ``tokenizer/`` folder (and ``gene_vocabulary/`` when it is not the bundled
one), which the official loader ignores and a later conversion back to ours picks up, so round
trips keep every part. ``mgm_head`` and ``temp`` are not part of the official layout.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Sequence

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.loading import (
    detect_layout,
    load_gene_vocabulary_for,
    load_model,
    load_text_tokenizer_for,
    resolve_checkpoint,
)
from lightning_langcell.hub.official import export_official
from lightning_langcell.hub.pretrained import VOCABULARY_DIR, load_pretrained, save_pretrained, write_gene_vocabulary
from lightning_langcell.io_utils import atomic_directory

TARGETS = ("ours", "official")


def convert_command(
    src: str,
    dst: str,
    to: str = "ours",
    overwrite: bool = False,
    trust_pickle: bool = False,
    text_tokenizer: str | None = None,
    text_source: str | None = None,
) -> Path:
    """Convert checkpoint ``src`` (path or registered name) to ``dst`` in format ``to``; returns ``dst``.

    Args:
        to: ``ours`` (safetensors folder with config, vocabulary and tokenizer) or ``official``.
        overwrite: replace an existing ``dst`` (only once the new one is complete).
        trust_pickle: unpickle source files that ``weights_only=True`` refuses (runs their code).
        text_tokenizer: local tokenizer folder to store with the model (default: the source's).
        text_source: for a Geneformer source, where the text side comes from (see ``load_geneformer``).
    """
    from lightning_langcell.text import load_text_tokenizer

    if to not in TARGETS:
        raise CheckpointError(f"Unknown target format {to!r}.", f"Use --to one of {TARGETS}.")
    target = Path(dst)
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target} exists.", "Choose a new folder or pass --overwrite.")
    source = resolve_checkpoint(src)
    if detect_layout(source) == "ours" and text_source is None:
        bundle = load_pretrained(source)
        model, vocabulary, tokenizer = bundle.model, bundle.gene_vocabulary, bundle.text_tokenizer
    else:
        geneformer_args = {"text_source": text_source} if text_source is not None else {}
        model = load_model(source, trust_pickle, **geneformer_args)
        vocabulary = load_gene_vocabulary_for(source)
        tokenizer = None if text_tokenizer is not None else load_text_tokenizer_for(source)
    if text_tokenizer is not None:
        tokenizer = load_text_tokenizer(text_tokenizer)
    if to == "ours":
        return save_pretrained(model, target, tokenizer, vocabulary, overwrite=overwrite, source=str(src))
    return export_official_with_parts(model, target, tokenizer, vocabulary, overwrite)


def export_official_with_parts(model, directory: str | os.PathLike, text_tokenizer, gene_vocabulary=None,
                               overwrite: bool = False) -> Path:
    """``export_official`` plus ``tokenizer/`` (and ``gene_vocabulary/`` unless bundled), atomically."""
    from lightning_langcell.tokenization import GeneVocabulary

    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        # export_official writes its own atomic folder; pointing it at our (empty) temporary
        # folder with overwrite=True swaps that folder in place, still inside this transaction.
        export_official(model, tmp, overwrite=True)
        text_tokenizer.save_pretrained(str(tmp / "tokenizer"))
        if gene_vocabulary is not None and gene_vocabulary != GeneVocabulary.bundled():
            write_gene_vocabulary(gene_vocabulary, tmp / VOCABULARY_DIR)
    return target


def convert_main(argv: Sequence[str]) -> dict:
    """``python -m lightning_langcell convert`` (argparse front end of :func:`convert_command`)."""
    parser = argparse.ArgumentParser(
        prog="python -m lightning_langcell convert",
        description="Convert a checkpoint (our format, official layout, Geneformer 30M folder, Lightning .ckpt "
                    "or registered name) to our format or to the official LangCell layout.",
    )
    parser.add_argument("src", help="checkpoint folder, .ckpt file or registered name")
    parser.add_argument("dst", help="folder to write")
    parser.add_argument("--to", choices=TARGETS, default="ours", help="target format (default: ours)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="unpickle files that weights_only=True refuses (RUNS THEIR CODE; trusted files only)")
    parser.add_argument("--text-tokenizer", default=None, help="tokenizer folder to store (default: the source's)")
    parser.add_argument("--text-source", default=None, help="Geneformer source only: text encoder to pair it with")
    ns = parser.parse_args(list(argv))
    written = convert_command(ns.src, ns.dst, ns.to, ns.overwrite, ns.trust_pickle, ns.text_tokenizer, ns.text_source)
    return {"written": str(written), "format": ns.to}


def pretrained_main(argv: Sequence[str]) -> list:
    """``python -m lightning_langcell pretrained``: print the registry and what is available here;
    returns the rows of ``list_pretrained``."""
    from lightning_langcell.hub.registry import list_pretrained

    argparse.ArgumentParser(prog="python -m lightning_langcell pretrained",
                            description="List the registered checkpoints.").parse_args(list(argv))
    return list_pretrained(verbose=True)
