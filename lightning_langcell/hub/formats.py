"""The registry of checkpoint formats: one handler per layout, one module per handler.

A :class:`CheckpointFormat` says how to recognise its layout (``detect``), build the model from it
(``load``), and find the text tokenizer and the gene vocabulary that go with it. ``load_model``,
``load_text_tokenizer_for`` and ``load_gene_vocabulary_for`` (``hub.loading``) dispatch through
:func:`detect_format`. A new format is one module defining its handler plus one
:func:`register_format` call; the built-in ones are registered in ``lightning_langcell/hub/__init__.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.state_dicts import LoadReport
from lightning_langcell.models.langcell import LangCellModel

Loader = Callable[..., "tuple[LangCellModel, LoadReport]"]


def bundled_gene_vocabulary(path: Path):
    """The bundled Geneformer-30M ``GeneVocabulary`` (for layouts that store none)."""
    from lightning_langcell.tokenization import GeneVocabulary

    return GeneVocabulary.bundled()


def refusal(problem: str, fix: str) -> Callable[..., Any]:
    """A ``load`` / ``text_tokenizer`` for a part a layout does not have: raises ``CheckpointError``
    (``problem`` may name ``{path}``)."""

    def refuse(path: Path, *args: Any, **kwargs: Any) -> Any:
        raise CheckpointError(problem.format(path=path), fix)

    return refuse


@dataclass(frozen=True)
class CheckpointFormat:
    """One checkpoint layout.

    - ``name``: short id (``load_model`` logs it, registry entries name it as ``layout``).
    - ``description``: what is on disk, for the "unknown layout" message.
    - ``detect(path) -> bool``: True if ``path`` (file or folder) is in this layout.
    - ``load(path, attn_implementation=None, **options) -> (LangCellModel, LoadReport)``, eval mode;
      ``attn_implementation`` None means the stored one (or ``"sdpa"``).
    - ``text_tokenizer(path)`` / ``gene_vocabulary(path)``: the parts that go with the model.
    - ``load_options``: extra keyword arguments ``load`` accepts (e.g. Geneformer's ``text_source``).
    - ``expected_gaps``: key prefixes this layout never holds (left fresh by design; logged at INFO).
    """

    name: str
    description: str
    detect: Callable[[Path], bool]
    load: Loader
    text_tokenizer: Callable[[Path], Any]
    gene_vocabulary: Callable[[Path], Any] = bundled_gene_vocabulary
    load_options: tuple[str, ...] = ()
    expected_gaps: tuple[str, ...] = ()


_FORMATS: dict[str, CheckpointFormat] = {}


def register_format(handler: CheckpointFormat) -> CheckpointFormat:
    """Add ``handler`` (detected after the ones registered before it); returns it."""
    if handler.name in _FORMATS:
        raise CheckpointError(f"A checkpoint format named {handler.name!r} is already registered.",
                              "Choose another name, or unregister_format() the old one first.")
    _FORMATS[handler.name] = handler
    return handler


def unregister_format(name: str) -> None:
    """Remove the format ``name`` (KeyError if it is not registered)."""
    del _FORMATS[name]


def registered_formats() -> tuple[CheckpointFormat, ...]:
    """Every registered format, in detection order."""
    return tuple(_FORMATS.values())


def get_format(name: str) -> CheckpointFormat:
    if name not in _FORMATS:
        raise CheckpointError(f"Unknown checkpoint format {name!r}.", f"Use one of {sorted(_FORMATS)}.")
    return _FORMATS[name]


def layout_help() -> str:
    return "Expected one of: " + "; ".join(handler.description for handler in _FORMATS.values()) + "."


def detect_format(path: str | os.PathLike) -> CheckpointFormat:
    """The first registered format whose ``detect`` accepts ``path``; ``CheckpointError`` otherwise."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}.", layout_help())
    for handler in _FORMATS.values():
        if handler.detect(path):
            return handler
    if path.is_file():
        raise CheckpointError(f"{path} is a file of a kind this library does not load alone.", layout_help())
    found = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())[:12]
    raise CheckpointError(f"{path} is not a checkpoint folder this library knows (it holds {found}).", layout_help())
