"""Start a ``LangCellModel`` from a Geneformer 30M folder (HF ``BertForMaskedLM``: config.json + weights).

The cell encoder comes from Geneformer (``bert.`` prefix dropped; a 25,426-row table gets the
``<cls>`` row as the mean embedding); Geneformer's MLM head (``cls.predictions.*``) starts
``mgm_head``. The text side is fresh (``text_config`` over the ``langcell`` preset's text shape,
vocabulary from ``text_tokenizer``) or comes from ``text_source``: an HF BERT folder (text encoder
weights; cross-attention, projections and matching head fresh) or a LangCell checkpoint (its text
encoder, ``text_proj`` and ``ctm_head``). Only the V1 (30M) dictionaries are accepted.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Callable

import torch

from lightning_langcell.errors import CheckpointError, LangCellInputError
from lightning_langcell.hub.bert_init import hf_bert_config, load_bert_into_text_encoder, text_config_from_bert
from lightning_langcell.hub.download import download_checkpoint, is_hub_id
from lightning_langcell.hub.formats import CheckpointFormat, refusal
from lightning_langcell.hub.official import GENEFORMER_GENES, _bert_config, _cell_vocab, _read_bert
from lightning_langcell.hub.state_dicts import LoadReport, StateDict, load_matching
from lightning_langcell.models.config import PRESETS, CellEncoderConfig, LangCellConfig, TextEncoderConfig
from lightning_langcell.models.langcell import LangCellModel

logger = logging.getLogger(__name__)

GENEFORMER_V1_ROWS = (GENEFORMER_GENES, GENEFORMER_GENES + 1)  # without / with <cls>
GENEFORMER_V2_ROWS = 20275  # the later 95M/V2 dictionaries: different ids, not this model's
MLM_PREFIX = "cls.predictions."
TextLoader = Callable[[LangCellModel], LoadReport]


def check_geneformer_vocabulary(config: dict[str, Any], path: Path) -> None:
    """Accept only Geneformer's V1 (30M) token dictionary sizes."""
    rows = int(config["vocab_size"])
    if rows == GENEFORMER_V2_ROWS:
        raise CheckpointError(
            f"{path} is a Geneformer V2 (95M-corpus) model with the 20,275-token dictionary; LangCell uses the "
            "V1 (30M) dictionary, whose ids differ.",
            "Use a 30M model (registry names geneformer-12l-30m, geneformer-6l-30m).",
        )
    if rows not in GENEFORMER_V1_ROWS:
        raise CheckpointError(f"{path} has vocab_size {rows}, not Geneformer 30M's {GENEFORMER_GENES}.",
                              "Point to a Geneformer 30M folder (gf-12L-30M-i2048 or gf-6L-30M-i2048).")


def load_geneformer(
    directory: str | os.PathLike,
    text_source: str | os.PathLike | None = None,
    text_tokenizer: str | os.PathLike | None = None,
    text_config: dict[str, Any] | None = None,
    embed_dim: int | None = None,
    attn_implementation: str = "sdpa",
) -> tuple[LangCellModel, LoadReport]:
    """A ``LangCellModel`` (eval mode) whose cell encoder is the Geneformer 30M model in ``directory``.

    Args:
        text_source: None (fresh text side), an HF BERT folder / registry name (e.g. ``biomedbert``),
            or a LangCell checkpoint (path or registry name) whose text side is copied.
        text_tokenizer: tokenizer fixing the text vocabulary size (None: bundled; for an HF BERT
            source, None keeps the BERT's own vocabulary size).
        text_config: overrides of the fresh text encoder's shape (``TextEncoderConfig`` keys).
        embed_dim: shared embedding size (default 256, or the text source's).
    """
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"No Geneformer folder at {root}.", "Pass the folder holding config.json and weights.")
    report = LoadReport()
    cell_config = _bert_config(root / "config.json")
    check_geneformer_vocabulary(cell_config, root / "config.json")
    state, path = _read_bert(root, report)
    mlm = {key[len(MLM_PREFIX):]: state.pop(key) for key in list(state) if key.startswith(MLM_PREFIX)}
    cell_config["vocab_size"] = _cell_vocab(state, cell_config, path, report)
    width = int(cell_config["hidden_size"])
    text, load_text, source_embed_dim = _text_side(text_source, text_tokenizer, text_config, width)
    if embed_dim is not None and source_embed_dim is not None and embed_dim != source_embed_dim:
        raise CheckpointError(f"embed_dim {embed_dim} differs from the text source's {source_embed_dim}.",
                              "Leave embed_dim unset to use the text source's.")
    try:
        config = LangCellConfig(cell=CellEncoderConfig.from_dict(cell_config), text=text,
                                embed_dim=embed_dim or source_embed_dim or 256, attn_implementation=attn_implementation)
    except LangCellInputError as error:
        raise CheckpointError(f"{root} cannot start a LangCell model: {error.problem}", error.fix) from error
    model = LangCellModel(config)
    report.extend(load_matching(model.cell_bert, state, path), "cell_bert.")
    report.extend(_load_mlm_head(model, mlm, path), "mgm_head.")
    report.extend(load_text(model))
    report.initialized += ["cell_proj.weight", "cell_proj.bias", "temp"]
    logger.info("Started a LangCell model from Geneformer %s:\n%s", root, report)
    return model.eval(), report


def _load_mlm_head(model: LangCellModel, mlm: StateDict, path: Path) -> LoadReport:
    """Geneformer's MLM head into ``mgm_head``; the ``<cls>`` output row starts as the mean row."""
    rows = model.config.cell.vocab_size
    head: StateDict = {}
    for key, tensor in mlm.items():
        if key == "decoder.bias" or (key == "decoder.weight" and model.mgm_head.decoder is None):
            continue  # duplicates of ``bias`` / of the (tied) word embeddings
        if key in ("bias", "decoder.weight") and tensor.shape[0] == rows - 1:
            tensor = torch.cat([tensor, tensor.mean(dim=0, keepdim=True)])
        head[key] = tensor
    report = load_matching(model.mgm_head, head, path, may_initialize=("",))
    if not mlm:
        report.notes.append(f"{path} has no MLM head; mgm_head is freshly initialised.")
    return report


def _fresh_text(model: LangCellModel) -> LoadReport:
    report = LoadReport()
    for name in ("text_bert", "text_proj", "ctm_head"):
        report.initialized += [f"{name}.{key}" for key in getattr(model, name).state_dict()]
    return report


def _text_side(
    text_source: str | os.PathLike | None,
    text_tokenizer: str | os.PathLike | None,
    text_config: dict[str, Any] | None,
    width: int,
) -> tuple[TextEncoderConfig, TextLoader, int | None]:
    """The text encoder config, a function loading the text side into a built model, and the
    source's embedding size (None when it has none)."""
    from lightning_langcell.hub.loading import detect_layout, load_model, resolve_checkpoint
    from lightning_langcell.text import load_text_tokenizer

    if is_hub_id(text_tokenizer):  # e.g. hf://microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract-fulltext
        text_tokenizer = download_checkpoint(text_tokenizer)
    if text_source is None:
        overrides = dict(text_config or {})
        if "vocab_size" not in overrides:
            overrides["vocab_size"] = len(load_text_tokenizer(text_tokenizer))
        data = {**PRESETS["langcell"]["text"], **overrides, "encoder_width": width}
        return TextEncoderConfig.from_dict(data), _fresh_text, None
    source = resolve_checkpoint(text_source)
    layout = detect_layout(source)
    if layout == "hf_bert":
        vocab = None if text_tokenizer is None else len(load_text_tokenizer(text_tokenizer))
        config = text_config_from_bert(source, width, vocab)

        def load_bert(model: LangCellModel) -> LoadReport:
            report = LoadReport()
            report.extend(load_bert_into_text_encoder(model.text_bert, source), "text_bert.")
            for name in ("text_proj", "ctm_head"):
                report.initialized += [f"{name}.{key}" for key in getattr(model, name).state_dict()]
            return report

        return config, load_bert, None
    donor = load_model(source)
    if donor.config.text.encoder_width != width:
        raise CheckpointError(
            f"The text encoder of {source} cross-attends to cells of width {donor.config.text.encoder_width}, "
            f"but this Geneformer's hidden size is {width}.",
            "Take the text side from a checkpoint with the same cell width, or from an HF BERT folder.",
        )

    def copy_donor(model: LangCellModel) -> LoadReport:
        report = LoadReport()
        for name in ("text_bert", "text_proj", "ctm_head"):
            report.extend(load_matching(getattr(model, name), getattr(donor, name).state_dict(), source), f"{name}.")
        return report

    return donor.config.text, copy_donor, donor.config.embed_dim


def is_geneformer_dir(path: Path) -> bool:
    """True for an HF BERT folder with a Geneformer token dictionary size (V1, or V2 to refuse it clearly)."""
    config = hf_bert_config(path)
    return config is not None and (config.get("vocab_size") in GENEFORMER_V1_ROWS
                                   or config.get("vocab_size") == GENEFORMER_V2_ROWS)


def _load(path: Path, attn_implementation: str | None = None, text_source=None, text_tokenizer=None):
    return load_geneformer(path, text_source, text_tokenizer, attn_implementation=attn_implementation or "sdpa")


GENEFORMER_FORMAT = CheckpointFormat(
    name="geneformer",
    description="a Geneformer 30M folder (config.json + pytorch_model.bin/model.safetensors)",
    detect=is_geneformer_dir,
    load=_load,
    text_tokenizer=refusal("{path} is a cell encoder only and holds no text tokenizer.",
                           "Pass the tokenizer of the text encoder you pair it with (e.g. registry 'biomedbert')."),
    load_options=("text_source", "text_tokenizer"),
)
