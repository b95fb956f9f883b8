"""Downloads from the Hugging Face Hub, only when the user asks for one.

Asking means naming a hub id (``hf://owner/name[/subfolder][@revision]``) or passing
``download=True`` for a registered name that has a Hugging Face repository. Everything goes through
``huggingface_hub.snapshot_download`` into the standard HF cache (``$HF_HUB_CACHE``), with a
revision and ``allow_patterns`` naming only the files the checkpoint needs: for a group of
alternatives (``model.safetensors|pytorch_model.bin``) the first is fetched, the next only when the
repository lacks it. Offline (``HF_HUB_OFFLINE=1`` or no network) only the cache is read, and a
miss raises ``CheckpointError`` naming the exact files and where to put them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from lightning_langcell.errors import CheckpointError, LangCellInputError

HUB_PREFIX = "hf://"
OFFLINE_ENV = "HF_HUB_OFFLINE"
CACHE_ENV = "HF_HUB_CACHE"

# Files per layout: required groups ("a|b": either), then optional ones fetched when present.
OURS_FILES = ("config.json", "model.safetensors", "gene_vocabulary/token_dictionary.json.gz",
              "gene_vocabulary/gene_median_dictionary.json.gz", "text_tokenizer/tokenizer_config.json")
OURS_OPTIONAL = ("text_tokenizer/*", "README.md")
BERT_FILES = ("config.json", "model.safetensors|pytorch_model.bin")
BERT_OPTIONAL = ("vocab.txt", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json")
OFFICIAL_FILES = ("cell_bert/config.json", "cell_bert/model.safetensors|cell_bert/pytorch_model.bin",
                  "text_bert/config.json", "text_bert/model.safetensors|text_bert/pytorch_model.bin",
                  "cell_proj.bin", "text_proj.bin", "ctm_head.bin")


@dataclass(frozen=True)
class HubRef:
    """A repository on the Hugging Face Hub, a folder inside it and a revision (None: ``main``)."""

    repo_id: str
    subfolder: str | None = None
    revision: str | None = None

    def __str__(self) -> str:
        folder = f"/{self.subfolder}" if self.subfolder else ""
        return f"{HUB_PREFIX}{self.repo_id}{folder}" + (f"@{self.revision}" if self.revision else "")

    def in_repo(self, relative: str) -> str:
        """``relative`` (or a group ``a|b``) as paths inside the repository."""
        return "|".join(f"{self.subfolder}/{name}" if self.subfolder else name for name in relative.split("|"))


def is_hub_id(value) -> bool:
    return isinstance(value, str) and value.startswith(HUB_PREFIX)


def parse_hub_id(text: str, revision: str | None = None) -> HubRef:
    """``hf://owner/name[/subfolder...][@revision]`` as a :class:`HubRef`; ``revision`` overrides."""
    body, _, pinned = text[len(HUB_PREFIX):].partition("@")
    parts = body.strip("/").split("/")
    if not is_hub_id(text) or len(parts) < 2 or not all(parts):
        raise LangCellInputError(f"{text!r} is not a hub id.",
                                 "Write hf://owner/name, hf://owner/name/subfolder, optionally with @revision.")
    return HubRef("/".join(parts[:2]), "/".join(parts[2:]) or None, revision or pinned or None)


def hub_offline() -> bool:
    """True when ``$HF_HUB_OFFLINE`` asks for no network (read at each call)."""
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _has_any(folder: Path | None, group: str) -> bool:
    return folder is not None and any((folder / alternative).is_file() for alternative in group.split("|"))


def _where_to_put(ref: HubRef, files: Sequence[str], local_folder: Path | None) -> str:
    names = [ref.in_repo(alternatives.split("|")[0]) for alternatives in files]
    revision = f" --revision {ref.revision}" if ref.revision else ""
    target = local_folder or Path("<folder>")
    fix = (f"On a machine with internet run `hf download {ref.repo_id} {' '.join(names)}{revision} "
           f"--local-dir {target}` (or load {ref} there with HF_HUB_OFFLINE unset: it lands in the HF cache "
           f"{os.environ.get(CACHE_ENV) or '~/.cache/huggingface/hub'}, which can be copied here), then ")
    inner = f"{target}/{ref.subfolder}" if ref.subfolder else str(target)
    if local_folder is not None:
        return fix + f"move the files of {inner} into {local_folder}."
    return fix + f"pass the folder {inner} instead of the hub id."


def _snapshot(ref: HubRef, names: Sequence[str], files: Sequence[str], local_folder: Path | None) -> Path:
    """One ``snapshot_download`` of ``names`` (paths inside ``ref``'s folder); the folder it gives."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError
    except ImportError as error:
        raise CheckpointError("Downloading needs huggingface_hub, which is not installed.",
                              "pip install huggingface_hub (it comes with transformers).") from error
    offline = hub_offline()
    try:
        root = snapshot_download(ref.repo_id, revision=ref.revision, cache_dir=os.environ.get(CACHE_ENV),
                                 allow_patterns=[ref.in_repo(name) for name in names], local_files_only=offline)
    except (OSError, ValueError, HfHubHTTPError) as error:
        state = "HF_HUB_OFFLINE is set" if offline else "the download failed"
        raise CheckpointError(
            f"{ref} needs {[ref.in_repo(group) for group in files]}, which are not in the local Hugging Face "
            f"cache, and {state}: {type(error).__name__}: {error}",
            _where_to_put(ref, files, local_folder),
        ) from error
    return Path(root) / ref.subfolder if ref.subfolder else Path(root)


def download_files(ref: HubRef, files: Sequence[str], optional: Sequence[str] = (),
                   local_folder: Path | None = None) -> Path:
    """The local folder of ``ref`` holding ``files`` (groups ``a|b``: one of them), downloaded if needed.

    ``optional`` patterns come along when the repository has them. ``local_folder`` is where the
    user may put the files by hand instead (named in the offline error).
    """
    folder = None
    for depth in range(max(len(group.split("|")) for group in files)):
        wanted = [group.split("|")[depth] for group in files
                  if depth < len(group.split("|")) and not _has_any(folder, group)]
        if wanted:
            folder = _snapshot(ref, wanted + (list(optional) if depth == 0 else []), files, local_folder)
    missing = [ref.in_repo(group) for group in files if not _has_any(folder, group)]
    if missing:
        problem = ("are not in the local Hugging Face cache and HF_HUB_OFFLINE is set" if hub_offline()
                   else "are not in that repository at this revision")
        raise CheckpointError(f"{ref}: {missing} {problem}.", _where_to_put(ref, files, local_folder))
    return folder


def download_checkpoint(hub_id: str, revision: str | None = None) -> Path:
    """The local folder of the checkpoint ``hub_id`` (``hf://...``), downloading only what its layout
    needs: the config files first, then our format's files, an HF BERT's (Geneformer, BiomedBERT:
    weights and tokenizer files) or, with ``cell_bert/config.json``, the official LangCell layout's."""
    from lightning_langcell.hub.pretrained import is_pretrained_dir

    ref = parse_hub_id(hub_id, revision)
    probe = _snapshot(ref, ["config.json", "cell_bert/config.json"], BERT_FILES, None)
    if is_pretrained_dir(probe):
        return download_files(ref, OURS_FILES, OURS_OPTIONAL)
    if (probe / "config.json").is_file():
        return download_files(ref, BERT_FILES, BERT_OPTIONAL)
    return download_files(ref, OFFICIAL_FILES)
