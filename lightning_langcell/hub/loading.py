"""One entry point for every checkpoint: ``load_model(name_or_path)``.

``name_or_path`` is an existing path (it always wins), a registered name (see
``hub.registry``; ``download=True`` fetches it from its Hugging Face repository when it is not
here) or a hub id ``hf://owner/name[/subfolder][@revision]`` (downloaded, see ``hub.download``). Its layout is found by the registered format handlers (``hub.formats``):

| layout | what is there | handler |
|---|---|---|
| ``ours`` | folder whose ``config.json`` names ``lightning_langcell`` | ``hub.pretrained`` |
| ``official`` | folder with ``cell_bert/``, ``text_bert/``, ``cell_proj.bin``, ``text_proj.bin``, ``ctm_head.bin`` | ``hub.official`` |
| ``geneformer`` | HF BERT folder with Geneformer 30M's 25,426 (or 25,427) tokens: cell encoder only | ``hub.geneformer`` |
| ``lightning`` | ``.ckpt``/``.pt``/``.pth`` file written by one of our Lightning tasks | ``hub.lightning_ckpt`` |
| ``hf_bert`` | another HF BERT folder (a text encoder: use it as ``text_init``/``text_source``) | ``hub.hf_bert`` |

Pickles are read with ``torch.load(weights_only=True)``; ``trust_pickle=True`` unpickles what that
refuses, after a loud warning. Every load returns or logs a ``LoadReport``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.download import download_checkpoint, is_hub_id
from lightning_langcell.hub.formats import detect_format, registered_formats
from lightning_langcell.hub.registry import load_registry, resolve_pretrained
from lightning_langcell.hub.state_dicts import LoadReport, trusted_pickles
from lightning_langcell.models.langcell import LangCellModel

logger = logging.getLogger(__name__)


def resolve_checkpoint(name_or_path: str | os.PathLike, download: bool = False, revision: str | None = None) -> Path:
    """An existing path as given, the downloaded folder of a hub id (``hf://...``), else the local
    folder of a registered name (downloaded from its HF repository only with ``download=True``)."""
    if is_hub_id(name_or_path):
        return download_checkpoint(name_or_path, revision)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return path
    text = str(name_or_path)
    if text not in load_registry() and (os.sep in text or "/" in text or path.suffix or text.startswith(("~", "."))):
        raise CheckpointError(f"No checkpoint at {path} (absolute: {path.resolve()}).",
                              "Check the path, or pass a registered name (list_pretrained()) or a hub id "
                              f"hf://{text.strip('/')} to download it from the Hugging Face Hub.")
    return resolve_pretrained(text, download=download, revision=revision)


def detect_layout(path: str | os.PathLike) -> str:
    """The name of the registered format of ``path`` (``ours``, ``official``, ``geneformer``,
    ``lightning``, ``hf_bert`` or one registered later); ``CheckpointError`` when none claims it."""
    return detect_format(path).name


def load_model_with_report(
    name_or_path: str | os.PathLike, trust_pickle: bool = False, **options: Any
) -> tuple[LangCellModel, LoadReport]:
    """Like :func:`load_model` (the same arguments), also returning the ``LoadReport`` (loaded /
    initialised / unused / notes)."""
    attn_implementation = options.pop("attn_implementation", None)
    path = resolve_checkpoint(name_or_path, options.pop("download", False), options.pop("revision", None))
    handler = detect_format(path)
    options = {key: value for key, value in options.items() if value is not None}
    if set(options) - set(handler.load_options):
        takers = [repr(f.name) for f in registered_formats() if set(options) <= set(f.load_options)]
        raise CheckpointError(
            f"{' / '.join(options)} apply only to checkpoints in format {' or '.join(takers) or '(none)'}; "
            f"{path} is {handler.name!r}.",
            "Drop those arguments.",
        )
    with trusted_pickles(trust_pickle):
        model, report = handler.load(path, attn_implementation=attn_implementation, **options)
    # Like HF, warn when weights were left fresh or were not used, unless the layout never holds them.
    surprising = [key for key in report.initialized + report.unused if not key.startswith(handler.expected_gaps)]
    log = logger.warning if surprising else logger.info
    log("load_model(%s): %s layout at %s\n%s", name_or_path, handler.name, path, report)
    return model, report


def load_model(
    name_or_path: str | os.PathLike,
    trust_pickle: bool = False,
    *,
    attn_implementation: str | None = None,
    download: bool = False,
    revision: str | None = None,
    **options: Any,
) -> LangCellModel:
    """A ``LangCellModel`` (eval mode) from any supported checkpoint path or registered name.

    Args:
        name_or_path: folder or ``.ckpt`` file (see the layouts above), a registered name, or a
            hub id ``hf://owner/name[/subfolder][@revision]`` (downloaded into the HF cache).
        trust_pickle: unpickle files that ``weights_only=True`` refuses (runs their code; warns).
        attn_implementation: cell-encoder attention, ``sdpa`` or ``eager`` (default: the stored one / sdpa).
        download: fetch a registered name missing here from its Hugging Face repository.
        revision: branch, tag or commit of a download (a hub id's ``@revision`` is overridden).
        options: keyword arguments of the checkpoint's format (its handler's ``load_options``; None
            values are dropped): for a Geneformer folder ``text_source`` and ``text_tokenizer``, see
            ``hub.geneformer.load_geneformer``. Others are refused with the formats that take them.
    """
    return load_model_with_report(name_or_path, trust_pickle, attn_implementation=attn_implementation,
                                  download=download, revision=revision, **options)[0]


def load_text_tokenizer_for(name_or_path: str | os.PathLike):
    """The text tokenizer that goes with a checkpoint (path or registered name), found by its format.

    Ours: its ``text_tokenizer/``. Official layout: a ``text_tokenizer/`` or ``tokenizer/`` folder
    beside it, else BiomedBERT's (registry, for 30,522/30,524 rows), else the bundled one if it
    fits. Lightning ``.ckpt``: the task's ``text_tokenizer`` hyper-parameter. HF BERT: its own.
    Geneformer: none (``CheckpointError``).
    """
    path = resolve_checkpoint(name_or_path)
    return detect_format(path).text_tokenizer(path)


def load_gene_vocabulary_for(name_or_path: str | os.PathLike):
    """The ``GeneVocabulary`` of a checkpoint, found by its format: ours (and official exports of
    ours with a ``gene_vocabulary/`` folder) store it; otherwise the bundled Geneformer-30M one."""
    path = resolve_checkpoint(name_or_path)
    return detect_format(path).gene_vocabulary(path)
