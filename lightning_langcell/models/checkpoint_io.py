"""``LangCellModel``'s checkpoint methods, resolved through hooks that ``lightning_langcell.hub`` fills.

``models`` sits below ``hub`` and never imports it; ``hub`` registers its loader and writers here
when it is imported (``from lightning_langcell import LangCellModel`` and every ``hub`` import do
that). The documented entry points are ``lightning_langcell.load_model`` and
``lightning_langcell.hub.save_pretrained`` / ``export_official``; these methods are shortcuts.
"""

from __future__ import annotations

from typing import Any, Callable

from lightning_langcell.errors import LangCellInputError

HOOK_NAMES = ("from_pretrained", "save_pretrained", "export_official")
_HOOKS: dict[str, Callable[..., Any]] = {}


def register_checkpoint_hooks(**hooks: Callable[..., Any]) -> None:
    """Install the functions behind ``LangCellModel.from_pretrained`` / ``save_pretrained`` /
    ``export_official`` (keyword = method name)."""
    unknown = sorted(set(hooks) - set(HOOK_NAMES))
    if unknown:
        raise LangCellInputError(f"Unknown checkpoint hooks {unknown}.", f"Use only {list(HOOK_NAMES)}.")
    _HOOKS.update(hooks)


def checkpoint_hook(name: str) -> Callable[..., Any]:
    """The registered function for method ``name``; a clear error when ``hub`` was never imported."""
    if name not in _HOOKS:
        raise LangCellInputError(
            f"LangCellModel.{name} needs the checkpoint code of lightning_langcell.hub, which is not imported.",
            "Import the model as `from lightning_langcell import LangCellModel`, or `import lightning_langcell.hub` "
            "first (or call lightning_langcell.load_model / hub.save_pretrained directly).",
        )
    return _HOOKS[name]


class CheckpointMethods:
    """``from_pretrained`` / ``save_pretrained`` / ``export_official`` for ``LangCellModel``."""

    @classmethod
    def from_pretrained(cls, name_or_path, trust_pickle: bool = False, **kwargs):
        """Load any supported checkpoint or registered name (``lightning_langcell.hub.load_model``);
        returns the model in eval mode."""
        return checkpoint_hook("from_pretrained")(name_or_path, trust_pickle, **kwargs)

    def save_pretrained(self, directory, text_tokenizer=None, gene_vocabulary=None, overwrite: bool = False,
                        model_card: str | None = None):
        """Write our format (config, safetensors, gene vocabulary, text tokenizer); returns the folder
        (``lightning_langcell.hub.save_pretrained``)."""
        return checkpoint_hook("save_pretrained")(self, directory, text_tokenizer, gene_vocabulary, overwrite,
                                                  model_card)

    def export_official(self, directory, overwrite: bool = False):
        """Write the released LangCell layout; returns the folder (``lightning_langcell.hub.export_official``)."""
        return checkpoint_hook("export_official")(self, directory, overwrite)
