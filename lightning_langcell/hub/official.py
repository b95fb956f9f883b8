"""Load and write the released LangCell checkpoint layout.

```
cell_bert/config.json + weights   # HF BertModel (pytorch_model.bin | model.safetensors | sharded)
text_bert/config.json + weights   # BLIP-"med" BERT with cross-attention (encoder_width = cell width)
cell_proj.bin, text_proj.bin, ctm_head.bin   # nn.Linear state dicts
```
All sizes come from the configs and tensors. Tolerated variations: a ``bert.`` key prefix, extra
``position_ids``/``token_type_ids`` buffers, a text vocabulary with or without the two added
tokens (``[DEC]``, ``[ENC]``), a cell vocabulary without the ``<cls>`` row (added as the mean
embedding). The release holds no gene-prediction head and no temperature: ``mgm_head`` stays
freshly initialised and ``temp`` is set to the released inference constant 0.05.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import torch

from lightning_langcell.errors import CheckpointError, LangCellInputError
from lightning_langcell.hub.formats import CheckpointFormat, bundled_gene_vocabulary
from lightning_langcell.hub.pretrained import (
    ADDED_TEXT_TOKENS,
    TEXT_TOKENIZER_DIR,
    VOCABULARY_DIR,
    check_text_tokenizer_fits,
    read_gene_vocabulary,
)
from lightning_langcell.hub.registry import resolve_pretrained
from lightning_langcell.hub.state_dicts import (
    WORD_EMBEDDINGS,
    LoadReport,
    StateDict,
    load_matching,
    read_json,
    read_tensor_file,
    read_weights_dir,
    save_tensor_file,
    strip_prefix,
)
from lightning_langcell.io_utils import atomic_directory
from lightning_langcell.models.config import CellEncoderConfig, LangCellConfig, TextEncoderConfig
from lightning_langcell.models.langcell import LangCellModel
from lightning_langcell.models.zero_shot_scores import OFFICIAL_TEMPERATURE

logger = logging.getLogger(__name__)

HEADS = ("cell_proj", "text_proj", "ctm_head")
GENEFORMER_GENES = 25426  # <pad>, <mask>, 25,424 genes; LangCell adds <cls> = 25426
IGNORED_BUFFERS = ("embeddings.position_ids", "embeddings.token_type_ids")
OFFICIAL_TOKENIZER_DIRS = (TEXT_TOKENIZER_DIR, "tokenizer")
BIOMEDBERT_ROWS = (30522, 30524)  # without / with [DEC], [ENC]
REQUIRED_CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")


def load_official(directory: str | os.PathLike, attn_implementation: str = "sdpa") -> LangCellModel:
    """A ``LangCellModel`` (eval mode) holding the official-layout checkpoint in ``directory``."""
    return load_official_with_report(directory, attn_implementation)[0]


def load_official_with_report(
    directory: str | os.PathLike, attn_implementation: str = "sdpa"
) -> tuple[LangCellModel, LoadReport]:
    """Like ``load_official``, also returning what was loaded, initialised, unused or adjusted."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"No checkpoint folder at {root}.", "Pass the folder holding cell_bert/ and text_bert/.")
    report = LoadReport()
    cell_config = _bert_config(root / "cell_bert" / "config.json")
    text_config = _bert_config(root / "text_bert" / "config.json")
    cell_state, cell_file = _read_bert(root / "cell_bert", report)
    text_state, text_file = _read_bert(root / "text_bert", report)
    heads = {name: _read_head(root, name) for name in HEADS}

    cell_config["vocab_size"] = _cell_vocab(cell_state, cell_config, cell_file, report)
    text_config["vocab_size"] = _text_vocab(text_state, text_config, text_file, report)
    if "encoder_width" not in text_config:
        text_config["encoder_width"] = cell_config["hidden_size"]
        report.notes.append(f"{root / 'text_bert/config.json'} has no encoder_width; used the cell hidden size.")
    cell_proj = heads["cell_proj"]
    if "weight" not in cell_proj[1]:
        raise CheckpointError(f"{cell_proj[0]} lacks 'weight'.", "Use the nn.Linear state dict of the release.")
    try:
        config = LangCellConfig(
            cell=CellEncoderConfig.from_dict(cell_config),
            text=TextEncoderConfig.from_dict(text_config),
            embed_dim=int(cell_proj[1]["weight"].shape[0]),
            attn_implementation=attn_implementation,
        )
    except LangCellInputError as error:
        raise CheckpointError(f"The configs in {root} do not fit together: {error.problem}", error.fix) from error
    model = LangCellModel(config)
    report.extend(load_matching(model.cell_bert, cell_state, cell_file), "cell_bert.")
    report.extend(load_matching(model.text_bert, text_state, text_file), "text_bert.")
    for name, (path, state) in heads.items():
        report.extend(load_matching(getattr(model, name), state, path), f"{name}.")
    report.initialized += [f"mgm_head.{key}" for key in model.mgm_head.state_dict()]
    with torch.no_grad():
        model.temp.fill_(OFFICIAL_TEMPERATURE)
    report.notes.append(f"temp set to the released inference temperature {OFFICIAL_TEMPERATURE}.")
    logger.info("Loaded official LangCell checkpoint %s:\n%s", root, report)
    return model.eval(), report


def _bert_config(path: Path) -> dict[str, Any]:
    config = read_json(path)
    absent = [key for key in REQUIRED_CONFIG_KEYS if key not in config]
    if absent:
        raise CheckpointError(f"{path} lacks {absent}.", "Use the config.json saved with these weights.")
    return config


def _read_bert(folder: Path, report: LoadReport) -> tuple[StateDict, Path]:
    state, path = read_weights_dir(folder)
    state = strip_prefix(state, "bert.")
    dropped = [key for key in IGNORED_BUFFERS if state.pop(key, None) is not None]
    if dropped:
        report.notes.append(f"{path}: ignored index buffers {dropped} (rebuilt by the model).")
    if WORD_EMBEDDINGS not in state:
        raise CheckpointError(f"{path} lacks {WORD_EMBEDDINGS!r}.", "Point to the folder of a BERT checkpoint.")
    return state, path


def _read_head(root: Path, name: str) -> tuple[Path, StateDict]:
    for suffix in (".bin", ".safetensors", ".pt"):
        path = root / f"{name}{suffix}"
        if path.is_file():
            return path, strip_prefix(read_tensor_file(path), f"{name}.")
    raise CheckpointError(f"Missing {root / (name + '.bin')}.", f"Copy {name}.bin of the release into {root}.")


def _append_mean_rows(state: StateDict, rows: int) -> None:
    table = state[WORD_EMBEDDINGS]
    state[WORD_EMBEDDINGS] = torch.cat([table, table.mean(dim=0, keepdim=True).expand(rows, -1)])


def _cell_vocab(state: StateDict, config: dict[str, Any], path: Path, report: LoadReport) -> int:
    """Cell vocabulary size; a Geneformer table without ``<cls>`` gets a mean-embedding row."""
    rows, size = state[WORD_EMBEDDINGS].shape[0], int(config["vocab_size"])
    if rows == GENEFORMER_GENES and size in (GENEFORMER_GENES, GENEFORMER_GENES + 1):
        _append_mean_rows(state, 1)
        report.notes.append(f"{path}: {rows} gene rows; appended the <cls> row (id {rows}) as the mean embedding.")
        return rows + 1
    if rows == GENEFORMER_GENES + 1 and size == GENEFORMER_GENES:
        report.notes.append(f"{path}: config says {size} genes, the table has the <cls> row too; used {rows}.")
        return rows
    return size


def _text_vocab(state: StateDict, config: dict[str, Any], path: Path, report: LoadReport) -> int:
    """Text vocabulary size; tolerates tables with or without the two added tokens."""
    rows, size = state[WORD_EMBEDDINGS].shape[0], int(config["vocab_size"])
    if rows == size - ADDED_TEXT_TOKENS:
        _append_mean_rows(state, ADDED_TEXT_TOKENS)
        report.notes.append(f"{path}: {rows} word rows, config says {size}; appended [DEC], [ENC] as the mean embedding.")
        return size
    if rows == size + ADDED_TEXT_TOKENS:
        report.notes.append(f"{path}: {rows} word rows (with [DEC], [ENC]), config says {size}; used {rows}.")
        return rows
    return size


def export_official(model: LangCellModel, directory: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``model`` in the released layout (pickled state dicts + HF-style configs).

    ``mgm_head`` and ``temp`` are not part of that layout and are not written. Returns the folder.
    """
    target = Path(directory)
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target} exists.", "Choose a new folder or pass overwrite=True.")
    config = model.config
    if config.cell_pooling != "cls":
        raise CheckpointError(
            f"This model pools cells with {config.cell_pooling!r}; the official layout implies <cls> pooling.",
            "Export it in our format (save_pretrained), which records the pooling.",
        )
    bert_fields = {"architectures": ["BertModel"], "model_type": "bert", "position_embedding_type": "absolute"}
    cell_json = {**bert_fields, **config.cell.to_dict()}
    text_json = {**bert_fields, "type_vocab_size": 2, "add_cross_attention": True, **config.text.to_dict()}
    text_state = dict(model.text_bert.state_dict())
    text_state["embeddings.position_ids"] = model.text_bert.embeddings.position_ids.clone()
    with atomic_directory(target, overwrite=overwrite) as tmp:
        for folder, data, state in (
            ("cell_bert", cell_json, model.cell_bert.state_dict()),
            ("text_bert", text_json, text_state),
        ):
            (tmp / folder).mkdir()
            (tmp / folder / "config.json").write_text(_json(data), encoding="utf-8")
            save_tensor_file(state, tmp / folder / "pytorch_model.bin")
        for name in HEADS:
            save_tensor_file(getattr(model, name).state_dict(), tmp / f"{name}.bin")
    return target


def _json(data: dict[str, Any]) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def is_official_dir(path: Path) -> bool:
    """True for a folder holding ``cell_bert/`` or ``text_bert/``."""
    return path.is_dir() and ((path / "cell_bert").is_dir() or (path / "text_bert").is_dir())


def official_text_tokenizer(path: Path):
    """A ``text_tokenizer/`` or ``tokenizer/`` folder beside the weights, else BiomedBERT's (registry,
    for 30,522/30,524 rows), else the bundled one if it fits the text encoder."""
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


def official_gene_vocabulary(path: Path):
    """The ``gene_vocabulary/`` folder of an official export of ours, else the bundled vocabulary."""
    if (path / VOCABULARY_DIR).is_dir():
        return read_gene_vocabulary(path / VOCABULARY_DIR)
    return bundled_gene_vocabulary(path)


OFFICIAL_FORMAT = CheckpointFormat(
    name="official",
    description="the official layout (cell_bert/, text_bert/, cell_proj.bin, text_proj.bin, ctm_head.bin)",
    detect=is_official_dir,
    load=lambda path, attn_implementation=None: load_official_with_report(path, attn_implementation or "sdpa"),
    text_tokenizer=official_text_tokenizer,
    gene_vocabulary=official_gene_vocabulary,
    expected_gaps=("mgm_head.", "text_bert.pooler."),  # the release holds no MGM head, our encoder no pooler
)
