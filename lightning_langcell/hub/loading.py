"""One entry point for every checkpoint: ``load_model(name_or_path)``.

``name_or_path`` is an existing path (it always wins) or a registered name (see
``hub.registry``). The layout is detected:

| layout | what is there |
|---|---|
| ``ours`` | folder whose ``config.json`` names ``lightning_langcell`` (``hub.pretrained``) |
| ``official`` | folder with ``cell_bert/``, ``text_bert/``, ``cell_proj.bin``, ``text_proj.bin``, ``ctm_head.bin`` |
| ``geneformer`` | HF BERT folder with Geneformer 30M's 25,426 (or 25,427) tokens: cell encoder only |
| ``lightning`` | ``.ckpt``/``.pt``/``.pth`` file written by one of our Lightning tasks |
| ``hf_bert`` | another HF BERT folder (a text encoder: use it as ``text_init``/``text_source``) |

Pickles are read with ``torch.load(weights_only=True)``; ``trust_pickle=True`` unpickles what that
refuses, after a loud warning. Every load returns or logs a ``LoadReport``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.pretrained import (
    TEXT_TOKENIZER_DIR,
    VOCABULARY_DIR,
    check_text_tokenizer_fits,
    is_pretrained_dir,
    load_pretrained,
    read_gene_vocabulary,
    read_pretrained_parts,
)
from lightning_langcell.hub.registry import load_registry, resolve_pretrained
from lightning_langcell.hub.state_dicts import LoadReport, read_json, trusted_pickles
from lightning_langcell.models.langcell import LangCellModel

logger = logging.getLogger(__name__)

LIGHTNING_SUFFIXES = (".ckpt", ".pt", ".pth")
OFFICIAL_TOKENIZER_DIRS = (TEXT_TOKENIZER_DIR, "tokenizer")
BIOMEDBERT_ROWS = (30522, 30524)  # without / with [DEC], [ENC]
#: Parts a layout never holds (fresh or unused by design): logged at INFO, not WARNING.
EXPECTED_GAPS = {"official": ("mgm_head.", "text_bert.pooler.")}
LAYOUT_HELP = (
    "Expected one of: our format (config.json naming lightning_langcell + model.safetensors), the official "
    "layout (cell_bert/, text_bert/, cell_proj.bin, text_proj.bin, ctm_head.bin), a Geneformer 30M folder "
    "(config.json + pytorch_model.bin/model.safetensors), or a Lightning .ckpt of our tasks."
)


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """An existing path as given, else the local folder of a registered name."""
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if text not in load_registry() and (os.sep in text or "/" in text or path.suffix or text.startswith(("~", "."))):
        raise CheckpointError(f"No checkpoint at {path} (absolute: {path.resolve()}).",
                              "Check the path, or pass a registered name (list_pretrained()).")
    return resolve_pretrained(text)


def detect_layout(path: str | os.PathLike) -> str:
    """``ours``, ``official``, ``geneformer``, ``lightning`` or ``hf_bert`` (see the module docstring)."""
    from lightning_langcell.hub.geneformer import GENEFORMER_V1_ROWS, GENEFORMER_V2_ROWS

    path = Path(path)
    if path.is_file():
        if path.suffix in LIGHTNING_SUFFIXES:
            return "lightning"
        raise CheckpointError(f"{path} is a file of a kind this library does not load alone.", LAYOUT_HELP)
    if not path.is_dir():
        raise CheckpointError(f"No checkpoint at {path}.", LAYOUT_HELP)
    if is_pretrained_dir(path):
        return "ours"
    if (path / "cell_bert").is_dir() or (path / "text_bert").is_dir():
        return "official"
    config_path = path / "config.json"
    if config_path.is_file():
        config = read_json(config_path)
        architectures = " ".join(config.get("architectures") or [])
        if config.get("model_type") == "bert" or "Bert" in architectures:
            rows = config.get("vocab_size")
            return "geneformer" if rows in GENEFORMER_V1_ROWS or rows == GENEFORMER_V2_ROWS else "hf_bert"
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:12]
    raise CheckpointError(f"{path} is not a checkpoint folder this library knows (it holds {found}).", LAYOUT_HELP)


def load_model_with_report(
    name_or_path: str | os.PathLike,
    trust_pickle: bool = False,
    *,
    text_source: str | os.PathLike | None = None,
    text_tokenizer: str | os.PathLike | None = None,
    attn_implementation: str | None = None,
) -> tuple[LangCellModel, LoadReport]:
    """Like :func:`load_model`, also returning the ``LoadReport`` (loaded / initialised / unused / notes)."""
    path = resolve_checkpoint(name_or_path)
    layout = detect_layout(path)
    if layout != "geneformer" and (text_source is not None or text_tokenizer is not None):
        raise CheckpointError(f"text_source / text_tokenizer only apply to Geneformer folders; {path} is {layout!r}.",
                              "Drop those arguments.")
    if layout == "hf_bert":
        raise CheckpointError(
            f"{path} is a BERT without LangCell parts (a text encoder such as BiomedBERT), not a LangCell model.",
            "Use it as text_init= of a task, or as text_source= when loading a Geneformer cell encoder.",
        )
    with trusted_pickles(trust_pickle):
        if layout == "ours":
            bundle = load_pretrained(path, attn_implementation)
            model, report = bundle.model, bundle.report
        elif layout == "official":
            from lightning_langcell.hub.official import load_official_with_report

            model, report = load_official_with_report(path, attn_implementation or "sdpa")
        elif layout == "geneformer":
            from lightning_langcell.hub.geneformer import load_geneformer

            model, report = load_geneformer(path, text_source, text_tokenizer,
                                            attn_implementation=attn_implementation or "sdpa")
        else:
            from lightning_langcell.hub.lightning_ckpt import load_lightning_checkpoint

            model, report = load_lightning_checkpoint(path, attn_implementation)
    # Like HF, warn when weights were left fresh or were not used, unless the layout never holds them.
    expected = EXPECTED_GAPS.get(layout, ())
    surprising = [key for key in report.initialized + report.unused if not key.startswith(expected)]
    log = logger.warning if surprising else logger.info
    log("load_model(%s): %s layout at %s\n%s", name_or_path, layout, path, report)
    return model, report


def load_model(
    name_or_path: str | os.PathLike,
    trust_pickle: bool = False,
    *,
    text_source: str | os.PathLike | None = None,
    text_tokenizer: str | os.PathLike | None = None,
    attn_implementation: str | None = None,
) -> LangCellModel:
    """A ``LangCellModel`` (eval mode) from any supported checkpoint path or registered name.

    Args:
        name_or_path: folder or ``.ckpt`` file (see the layouts above), or a registered name.
        trust_pickle: unpickle files that ``weights_only=True`` refuses (runs their code; warns).
        text_source, text_tokenizer: for a Geneformer folder only, see ``hub.geneformer.load_geneformer``.
        attn_implementation: cell-encoder attention, ``sdpa`` or ``eager`` (default: the stored one / sdpa).
    """
    return load_model_with_report(name_or_path, trust_pickle, text_source=text_source,
                                  text_tokenizer=text_tokenizer, attn_implementation=attn_implementation)[0]


def _official_text_tokenizer(path: Path):
    from lightning_langcell.text import load_text_tokenizer

    for name in OFFICIAL_TOKENIZER_DIRS:
        if (path / name).is_dir():
            return load_text_tokenizer(path / name)
    rows = int(read_json(path / "text_bert" / "config.json").get("vocab_size", 0))
    if rows in BIOMEDBERT_ROWS:
        return load_text_tokenizer(resolve_pretrained("biomedbert"))
    tokenizer = load_text_tokenizer()
    where = f"{path} (no tokenizer/ folder; tried the bundled one)"
    check_text_tokenizer_fits(len(tokenizer), rows, where, strict=True)
    return tokenizer


def load_text_tokenizer_for(name_or_path: str | os.PathLike):
    """The text tokenizer that goes with a checkpoint (path or registered name).

    Ours: its ``text_tokenizer/``. Official layout: a ``text_tokenizer/`` or ``tokenizer/`` folder
    beside it, else BiomedBERT's (registry, for 30,522/30,524 rows), else the bundled one if it
    fits. Lightning ``.ckpt``: the task's ``text_tokenizer`` hyper-parameter. HF BERT: its own.
    """
    from lightning_langcell.text import load_text_tokenizer

    path = resolve_checkpoint(name_or_path)
    layout = detect_layout(path)
    if layout == "ours":
        return read_pretrained_parts(path)[3]
    if layout == "official":
        return _official_text_tokenizer(path)
    if layout == "hf_bert":
        return load_text_tokenizer(path)
    if layout == "lightning":
        from lightning_langcell.hub.lightning_ckpt import read_lightning_checkpoint

        hparams: dict[str, Any] = read_lightning_checkpoint(path).get("hyper_parameters") or {}
        return load_text_tokenizer(hparams.get("text_tokenizer"))
    raise CheckpointError(f"{path} is a cell encoder only and holds no text tokenizer.",
                          "Pass the tokenizer of the text encoder you pair it with (e.g. registry 'biomedbert').")


def load_gene_vocabulary_for(name_or_path: str | os.PathLike):
    """The ``GeneVocabulary`` of a checkpoint: ours (and official exports of ours with a
    ``gene_vocabulary/`` folder) store it; otherwise the bundled Geneformer-30M one."""
    from lightning_langcell.tokenization import GeneVocabulary

    path = resolve_checkpoint(name_or_path)
    layout = detect_layout(path)
    if layout == "ours":
        return read_pretrained_parts(path)[2]
    if layout == "official" and (path / VOCABULARY_DIR).is_dir():
        return read_gene_vocabulary(path / VOCABULARY_DIR)
    return GeneVocabulary.bundled()
