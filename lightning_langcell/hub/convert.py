"""Convert checkpoints: any loadable source → our format or the official LangCell layout.

``python -m lightning_langcell convert SRC DST --to ours|official`` calls :func:`convert_command`.
Converting to ours carries the source's text tokenizer and gene vocabulary along (see
``load_text_tokenizer_for`` / ``load_gene_vocabulary_for``). Converting to official writes the
released layout plus a ``tokenizer/`` folder (and ``gene_vocabulary/`` when it is not the bundled
one), which the official loader ignores and a later conversion back to ours picks up, so round
trips keep every part. ``mgm_head`` and ``temp`` are not part of the official layout.

The destination is written in a temporary folder beside it and renamed into place. An existing
destination is replaced only when it holds nothing but a checkpoint this tool writes (see
:func:`check_destination`); anything else is refused, never deleted.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.loading import (
    detect_layout,
    load_gene_vocabulary_for,
    load_model,
    load_text_tokenizer_for,
    resolve_checkpoint,
)
from lightning_langcell.hub.official import HEADS, export_official
from lightning_langcell.hub.pretrained import (
    CONFIG_FILE,
    MEDIAN_FILE,
    TEXT_TOKENIZER_DIR,
    TOKEN_FILE,
    VOCABULARY_DIR,
    WEIGHTS_FILE,
    is_pretrained_dir,
    load_pretrained,
    save_pretrained,
    write_gene_vocabulary,
)
from lightning_langcell.io_utils import atomic_directory

TARGETS = ("ours", "official")
OFFICIAL_TOKENIZER_DIR = "tokenizer"
TOWERS = ("cell_bert", "text_bert")
MODEL_CARD = "README.md"
# What each layout may hold: top-level names, and for sub-folders the files they may hold
# (None: any plain files, as a text tokenizer's folder varies with its kind).
TOWER_FILES = frozenset({"config.json", "pytorch_model.bin", "model.safetensors"})
VOCABULARY_FILES = frozenset({TOKEN_FILE, MEDIAN_FILE})
LAYOUT_FILES = {
    "ours": {CONFIG_FILE: (), WEIGHTS_FILE: (), MODEL_CARD: (), VOCABULARY_DIR: VOCABULARY_FILES,
             TEXT_TOKENIZER_DIR: None},
    "official": {**{f"{head}.bin": () for head in HEADS}, **{tower: TOWER_FILES for tower in TOWERS},
                 MODEL_CARD: (), VOCABULARY_DIR: VOCABULARY_FILES, OFFICIAL_TOKENIZER_DIR: None,
                 TEXT_TOKENIZER_DIR: None},
}


def convert_command(
    src: str,
    dst: str,
    to: Literal["ours", "official"] = "ours",
    text_tokenizer: str | None = None,
    text_source: str | None = None,
    trust_pickle: bool = False,
    overwrite: bool = False,
) -> Path:
    """Convert a checkpoint to our format or to the official LangCell layout; returns the folder written.

    Args:
        src: checkpoint folder (our format, official layout, Geneformer), Lightning .ckpt file or
            registered name.
        dst: folder to write (a new one, or with ``overwrite`` a checkpoint folder this tool wrote).
        to: ``ours`` (safetensors folder with config, vocabulary and tokenizer) or ``official``.
        text_tokenizer: local tokenizer folder to store with the model (default: the source's).
        text_source: for a Geneformer source, the text encoder to pair it with (see ``load_geneformer``).
        trust_pickle: unpickle source files that ``weights_only=True`` refuses (RUNS THEIR CODE;
            trusted files only).
        overwrite: replace an existing checkpoint folder at ``dst`` (only once the new one is complete).
    """
    from lightning_langcell.text import load_text_tokenizer

    if to not in TARGETS:
        raise CheckpointError(f"Unknown target format {to!r}.", f"Use --to one of {TARGETS}.")
    target = Path(dst)
    replace = check_destination(target, Path(src).expanduser(), overwrite)
    source = resolve_checkpoint(src)  # a registered name may be fetched: only once the destination is fine
    check_not_the_source(target, source)
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
        return save_pretrained(model, target, tokenizer, vocabulary, overwrite=replace, source=str(src))
    return export_official_with_parts(model, target, tokenizer, vocabulary, replace)


NEW_FOLDER_FIX = "Name a new folder for the converted checkpoint, e.g. `convert SRC my-model-ours`."


def check_destination(target: Path, source: Path, overwrite: bool) -> bool:
    """Refuse a destination that is not safe to write; returns whether an existing folder is replaced.

    Refused: the current folder or one holding it, the source (see :func:`check_not_the_source`),
    a file, and an existing folder that is not a checkpoint this tool writes (those are never
    deleted). An existing checkpoint folder needs ``overwrite``; an empty folder does not.
    """
    where, here = target.resolve(), Path.cwd().resolve()
    if where == here or where in here.parents:
        raise CheckpointError(f"The destination {target} is the current folder or holds it; "
                              "converting there would replace that folder.", NEW_FOLDER_FIX)
    check_not_the_source(target, source)
    if not os.path.lexists(target):
        return False
    if target.is_symlink() or not target.is_dir():
        raise CheckpointError(f"The destination {target} exists and is a file or a link, not a folder; "
                              "it is never overwritten.",
                              "Choose another destination.")
    if not any(target.iterdir()):
        return True
    unexpected = unexpected_entries(target)
    if unexpected:
        raise CheckpointError(
            f"The destination {target} exists and is not a checkpoint folder this tool writes (it holds "
            f"{unexpected[:8]}, which neither our format nor the official layout has); it is never overwritten.",
            "Choose another destination, or remove that folder yourself.",
        )
    if not overwrite:
        raise CheckpointError(f"{target} exists.", "Choose a new folder or pass --overwrite.")
    return True


def check_not_the_source(target: Path, source: Path) -> None:
    """Refuse a destination that is the source, holds it or lies inside it."""
    where, origin = target.resolve(), source.resolve()
    if where == origin or where in origin.parents:
        raise CheckpointError(f"The destination {target} is the source {source} or holds it; "
                              "converting there would replace the source.", NEW_FOLDER_FIX)
    if origin in where.parents:
        raise CheckpointError(f"The destination {target} is inside the source {source}.", NEW_FOLDER_FIX)


def unexpected_entries(folder: Path) -> list[str]:
    """What keeps ``folder`` from being a checkpoint in our format or the official layout: the names
    (``sub/name`` inside sub-folders) the closest layout does not have; empty if it is one."""
    layout = "ours" if is_pretrained_dir(folder) else "official"
    allowed = LAYOUT_FILES[layout]
    if layout == "official" and not all((folder / tower).is_dir() for tower in TOWERS):
        return sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    found = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        contents = allowed.get(entry.name, ())
        if entry.name not in allowed or entry.is_symlink() or entry.is_dir() != (contents != ()):
            found.append(entry.name + ("/" if entry.is_dir() else ""))
        elif entry.is_dir():
            found.extend(f"{entry.name}/{inner.name}" for inner in sorted(entry.iterdir(), key=lambda p: p.name)
                         if inner.is_symlink() or not inner.is_file()
                         or (contents is not None and inner.name not in contents))
    return found


def export_official_with_parts(model, directory: str | os.PathLike, text_tokenizer, gene_vocabulary=None,
                               overwrite: bool = False) -> Path:
    """``export_official`` plus ``tokenizer/`` (and ``gene_vocabulary/`` unless bundled), atomically."""
    from lightning_langcell.tokenization import GeneVocabulary

    target = Path(directory)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        # export_official writes its own atomic folder; pointing it at our (empty) temporary
        # folder with overwrite=True swaps that folder in place, still inside this transaction.
        export_official(model, tmp, overwrite=True)
        text_tokenizer.save_pretrained(str(tmp / OFFICIAL_TOKENIZER_DIR))
        if gene_vocabulary is not None and gene_vocabulary != GeneVocabulary.bundled():
            write_gene_vocabulary(gene_vocabulary, tmp / VOCABULARY_DIR)
    return target
