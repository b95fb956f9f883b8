"""Our checkpoint format: one folder with everything needed to run a model, nothing pickled.

```
config.json                     # format + version, LangCellConfig, weights sha256, vocabulary and tokenizer identity
model.safetensors               # the full LangCellModel state dict (mgm_head and temp included)
gene_vocabulary/token_dictionary.json.gz, gene_vocabulary/gene_median_dictionary.json.gz
text_tokenizer/                 # tokenizer.save_pretrained(...) of the text encoder's tokenizer
README.md                       # optional model card
```
Written atomically (``atomic_directory``). Loading verifies the weights' sha256, that the gene
vocabulary has the recorded checksum and the cell encoder's size, and that the text tokenizer has
the recorded vocabulary and fits the text encoder. ``text_tokenizer/`` is a plain HF tokenizer
folder: pass it as the data module's ``text_tokenizer``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_langcell.errors import CheckpointError, LangCellInputError
from lightning_langcell.hub.formats import CheckpointFormat
from lightning_langcell.hub.registry import sha256_file
from lightning_langcell.hub.state_dicts import LoadReport, load_matching, read_json, read_tensor_file, save_tensor_file
from lightning_langcell.io_utils import atomic_directory
from lightning_langcell.models.config import LangCellConfig
from lightning_langcell.models.langcell import LangCellModel

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT_NAME = "lightning_langcell"
CHECKPOINT_FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
VOCABULARY_DIR = "gene_vocabulary"
TOKEN_FILE = "token_dictionary.json.gz"
MEDIAN_FILE = "gene_median_dictionary.json.gz"
TEXT_TOKENIZER_DIR = "text_tokenizer"
ADDED_TEXT_TOKENS = 2  # [DEC], [ENC]: rows of the text table the plain tokenizer never emits


@dataclass
class PretrainedBundle:
    """A loaded checkpoint: the model (eval mode), its gene vocabulary and text tokenizer, the
    parsed ``config.json`` (``info``) and the ``LoadReport``."""

    model: LangCellModel
    gene_vocabulary: Any
    text_tokenizer: Any
    info: dict[str, Any]
    report: LoadReport


def is_pretrained_dir(path: str | os.PathLike) -> bool:
    """True if ``path`` is a folder in our format (its ``config.json`` names the format)."""
    config = Path(path) / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        return json.loads(config.read_text(encoding="utf-8")).get("format") == CHECKPOINT_FORMAT_NAME
    except (OSError, ValueError, AttributeError):
        return False


# -- parts: gene vocabulary and text tokenizer -----------------------------------------------------
def _canonical_bytes(mapping) -> bytes:
    """Canonical JSON (sorted keys, compact, ASCII): its sha256 is ``GeneVocabulary``'s checksum."""
    return json.dumps(dict(mapping), sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def write_gene_vocabulary(vocabulary, directory: Path) -> None:
    """Token and gene-median dictionaries as gzip canonical JSON (deterministic bytes) in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, mapping in ((TOKEN_FILE, vocabulary.token_to_id), (MEDIAN_FILE, vocabulary.gene_median)):
        (directory / name).write_bytes(gzip.compress(_canonical_bytes(mapping), compresslevel=6, mtime=0))


def read_gene_vocabulary(directory: Path):
    """The ``GeneVocabulary`` stored by :func:`write_gene_vocabulary` (the bundled one, shared, when
    the files hold exactly its content)."""
    from lightning_langcell.tokenization import GeneVocabulary

    raw = []
    for name in (TOKEN_FILE, MEDIAN_FILE):
        path = directory / name
        if not path.is_file():
            raise CheckpointError(f"Missing {path}.", "Copy the complete checkpoint folder, or re-save it.")
        try:
            raw.append(gzip.decompress(path.read_bytes()))
        except (OSError, EOFError) as error:
            raise CheckpointError(f"Cannot read {path}: {error}.", "Re-save or re-download the checkpoint.") from error
    bundled = GeneVocabulary.bundled()
    if [hashlib.sha256(part).hexdigest() for part in raw] == [bundled.checksum, bundled.median_checksum]:
        return bundled
    try:
        return GeneVocabulary(*(json.loads(part) for part in raw))
    except ValueError as error:  # JSON errors and LangCellInputError (invalid dictionaries)
        problem = getattr(error, "problem", str(error))
        raise CheckpointError(f"{directory} holds an invalid gene vocabulary: {problem}",
                              "Re-save or re-download the checkpoint.") from error


def text_tokenizer_identity(tokenizer) -> dict[str, Any]:
    """Size and sha256 of the tokenizer's vocabulary (token -> id), recorded in ``config.json``."""
    from lightning_langcell.tokenization.bundled import canonical_sha256

    return {"size": len(tokenizer), "vocab_sha256": canonical_sha256(tokenizer.get_vocab())}


def check_text_tokenizer_fits(size: int, rows: int, where: str, strict: bool) -> None:
    """A tokenizer of ``size`` tokens must index a text table of ``rows`` rows.

    Larger than the table: error. Equal, or 2 smaller (``[DEC]``/``[ENC]`` rows unused): fine.
    Otherwise an error when ``strict`` (the tokenizer was guessed), else a warning.
    """
    if size > rows:
        raise CheckpointError(
            f"{where}: the text tokenizer has {size} tokens but the text encoder only {rows} rows.",
            "Pass the tokenizer the text encoder was trained with.",
        )
    if size not in (rows, rows - ADDED_TEXT_TOKENS):
        message = f"{where}: the text tokenizer has {size} tokens, the text encoder {rows} rows."
        if strict:
            raise CheckpointError(message, "Pass the tokenizer the text encoder was trained with (text_tokenizer=...).")
        warnings.warn(message + " Make sure it is the tokenizer this model was trained with.", stacklevel=3)


def _text_tokenizer(text_tokenizer, rows: int):
    from lightning_langcell.text import load_text_tokenizer

    if text_tokenizer is None or isinstance(text_tokenizer, (str, os.PathLike)):
        tokenizer = load_text_tokenizer(text_tokenizer)
        check_text_tokenizer_fits(len(tokenizer), rows, f"text tokenizer {text_tokenizer or '(bundled)'}",
                                  strict=text_tokenizer is None)
        return tokenizer
    check_text_tokenizer_fits(len(text_tokenizer), rows, "the given text tokenizer", strict=False)
    return text_tokenizer


def _gene_vocabulary(gene_vocabulary, rows: int):
    from lightning_langcell.tokenization import GeneVocabulary

    vocabulary = GeneVocabulary.bundled() if gene_vocabulary is None else gene_vocabulary
    if len(vocabulary) != rows:
        raise CheckpointError(
            f"The gene vocabulary has {len(vocabulary)} tokens but the cell encoder {rows} embedding rows.",
            "Pass the gene vocabulary the cell encoder was trained with (gene_vocabulary=...).",
        )
    return vocabulary


# -- save ------------------------------------------------------------------------------------------
def save_pretrained(
    model: LangCellModel,
    directory: str | os.PathLike,
    text_tokenizer: Any = None,
    gene_vocabulary: Any = None,
    overwrite: bool = False,
    model_card: str | None = None,
    source: str | None = None,
) -> Path:
    """Write ``model`` in our format to ``directory`` (atomically) and return the folder.

    Args:
        text_tokenizer: the tokenizer object, a local tokenizer path, or None for the bundled one
            (which must then fit the text encoder's vocabulary).
        gene_vocabulary: ``GeneVocabulary`` of the cell encoder (None: the bundled 30M one).
        model_card: text written as ``README.md``.
        source: where the weights came from (recorded in ``config.json``).
    """
    from lightning_langcell import __version__

    target = Path(directory)
    if target.exists() and not overwrite:
        raise CheckpointError(f"{target} exists.", "Choose a new folder or pass overwrite=True.")
    config = model.config
    vocabulary = _gene_vocabulary(gene_vocabulary, config.cell.vocab_size)
    tokenizer = _text_tokenizer(text_tokenizer, config.text.vocab_size)
    with atomic_directory(target, overwrite=overwrite) as tmp:
        save_tensor_file(model.state_dict(), tmp / WEIGHTS_FILE)
        write_gene_vocabulary(vocabulary, tmp / VOCABULARY_DIR)
        tokenizer.save_pretrained(str(tmp / TEXT_TOKENIZER_DIR))
        info = {
            "format": CHECKPOINT_FORMAT_NAME,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "library_version": __version__,
            "model": config.to_dict(),
            "weights": {"file": WEIGHTS_FILE, "sha256": sha256_file(tmp / WEIGHTS_FILE)},
            "gene_vocabulary": {
                "directory": VOCABULARY_DIR, "size": len(vocabulary),
                "checksum": vocabulary.checksum, "median_checksum": vocabulary.median_checksum,
            },
            "text_tokenizer": {"directory": TEXT_TOKENIZER_DIR, **text_tokenizer_identity(tokenizer)},
            "source": source,
        }
        (tmp / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        if model_card:
            (tmp / "README.md").write_text(model_card, encoding="utf-8")
    logger.info("Saved LangCell checkpoint to %s", target)
    return target


# -- load ------------------------------------------------------------------------------------------
def read_pretrained_info(directory: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of our format, checked for format name, version and sections."""
    root = Path(directory)
    path = root / CONFIG_FILE
    info = read_json(path)
    if info.get("format") != CHECKPOINT_FORMAT_NAME:
        raise CheckpointError(f"{path} is not a {CHECKPOINT_FORMAT_NAME} checkpoint config.",
                              "Load official or Geneformer folders with load_model(), which detects them.")
    version = info.get("format_version")
    if not isinstance(version, int) or version > CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(f"{path} has format_version {version!r}; this library reads <= {CHECKPOINT_FORMAT_VERSION}.",
                              "Upgrade lightning_langcell.")
    absent = [key for key in ("model", "weights", "gene_vocabulary", "text_tokenizer") if key not in info]
    if absent:
        raise CheckpointError(f"{path} lacks {absent}.", "Re-save the checkpoint with save_pretrained().")
    return info


def _verified_weights(root: Path, info: dict[str, Any]) -> Path:
    path = root / info["weights"].get("file", WEIGHTS_FILE)
    if not path.is_file():
        raise CheckpointError(f"Missing weight file {path}.", "Copy the complete checkpoint folder.")
    expected = info["weights"].get("sha256")
    if expected and sha256_file(path) != expected:
        raise CheckpointError(
            f"{path} does not match the sha256 recorded in {root / CONFIG_FILE} (corrupted or replaced).",
            "Copy or download the checkpoint again, or re-save it with save_pretrained().",
        )
    return path


def _checked_vocabulary(root: Path, info: dict[str, Any], config: LangCellConfig):
    recorded = info["gene_vocabulary"]
    folder = root / recorded.get("directory", VOCABULARY_DIR)
    vocabulary = read_gene_vocabulary(folder)
    if recorded.get("checksum") not in (None, vocabulary.checksum):
        raise CheckpointError(
            f"The gene vocabulary in {folder} differs from the one the checkpoint was saved with "
            f"(checksum {vocabulary.checksum[:12]} vs {str(recorded['checksum'])[:12]}).",
            "Restore the checkpoint's own gene_vocabulary/ files.",
        )
    _gene_vocabulary(vocabulary, config.cell.vocab_size)
    return vocabulary


def _checked_tokenizer(root: Path, info: dict[str, Any], config: LangCellConfig):
    from lightning_langcell.text import load_text_tokenizer

    recorded = info["text_tokenizer"]
    folder = root / recorded.get("directory", TEXT_TOKENIZER_DIR)
    if not folder.is_dir():
        raise CheckpointError(f"Missing the text tokenizer folder {folder}.", "Copy the complete checkpoint folder.")
    try:
        tokenizer = load_text_tokenizer(folder)
    except LangCellInputError as error:
        raise CheckpointError(f"Cannot load the text tokenizer in {folder}: {error.problem}",
                              "Copy the complete checkpoint folder.") from error
    identity = text_tokenizer_identity(tokenizer)
    if any(recorded.get(key) not in (None, value) for key, value in identity.items()):
        raise CheckpointError(
            f"The text tokenizer in {folder} ({identity['size']} tokens) is not the one the checkpoint was "
            f"saved with ({recorded.get('size')} tokens, vocabulary sha256 {str(recorded.get('vocab_sha256'))[:12]}).",
            "Restore the checkpoint's own text_tokenizer/ folder.",
        )
    check_text_tokenizer_fits(len(tokenizer), config.text.vocab_size, str(folder), strict=False)
    return tokenizer


def read_pretrained_parts(directory: str | os.PathLike, attn_implementation: str | None = None):
    """``(info, config, gene_vocabulary, text_tokenizer)`` of a folder in our format, all checked
    against each other; the weights are not read."""
    root = Path(directory)
    if not root.is_dir():
        raise CheckpointError(f"No checkpoint folder at {root}.", "Pass the folder written by save_pretrained().")
    info = read_pretrained_info(root)
    try:
        config = LangCellConfig.from_dict(info["model"])
        if attn_implementation is not None:
            config = LangCellConfig.from_dict({**config.to_dict(), "attn_implementation": attn_implementation})
    except (LangCellInputError, TypeError) as error:
        raise CheckpointError(f"{root / CONFIG_FILE} holds an invalid model config: {error}",
                              "Re-save the checkpoint with this library version.") from error
    return info, config, _checked_vocabulary(root, info, config), _checked_tokenizer(root, info, config)


def load_pretrained(directory: str | os.PathLike, attn_implementation: str | None = None) -> PretrainedBundle:
    """Load a folder in our format: model (eval mode), gene vocabulary, text tokenizer, info, report."""
    root = Path(directory)
    info, config, vocabulary, tokenizer = read_pretrained_parts(root, attn_implementation)
    weights = _verified_weights(root, info)
    model = LangCellModel(config)
    report = load_matching(model, read_tensor_file(weights), weights)
    logger.info("Loaded LangCell checkpoint %s:\n%s", root, report)
    return PretrainedBundle(model.eval(), vocabulary, tokenizer, info, report)


def _load_ours(path: Path, attn_implementation: str | None = None) -> tuple[LangCellModel, LoadReport]:
    bundle = load_pretrained(path, attn_implementation)
    return bundle.model, bundle.report


OURS_FORMAT = CheckpointFormat(
    name="ours",
    description="our format (config.json naming lightning_langcell + model.safetensors)",
    detect=is_pretrained_dir,
    load=_load_ours,
    text_tokenizer=lambda path: read_pretrained_parts(path)[3],
    gene_vocabulary=lambda path: read_pretrained_parts(path)[2],
)
