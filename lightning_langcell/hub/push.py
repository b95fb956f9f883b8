"""Upload a checkpoint in our format (the folder ``save_pretrained`` writes) to the Hugging Face Hub.

Only a complete, self-consistent folder is uploaded (config, weights checksum, gene vocabulary and
text tokenizer checked first), and only its format's files. ``load_model("hf://owner/name")``
downloads it again.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.download import HUB_PREFIX
from lightning_langcell.hub.pretrained import _verified_weights, is_pretrained_dir, read_pretrained_parts

UPLOAD_PATTERNS = ["config.json", "model.safetensors", "gene_vocabulary/*", "text_tokenizer/*", "README.md"]


def check_uploadable(folder: Path) -> None:
    """``CheckpointError`` unless ``folder`` is a complete checkpoint in our format."""
    if not is_pretrained_dir(folder):
        raise CheckpointError(
            f"{folder} is not a checkpoint in our format (no config.json naming lightning_langcell).",
            "Write one with model.save_pretrained(folder) or `python -m lightning_langcell convert SRC DST --to ours`.",
        )
    _verified_weights(folder, read_pretrained_parts(folder)[0])


def push_to_hub(
    folder: str,
    repo_id: str,
    revision: str | None = None,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
) -> dict:
    """Upload the checkpoint ``folder`` (our format) to the model repository ``repo_id``.

    Args:
        folder: a folder written by ``save_pretrained``.
        repo_id: ``owner/name`` on the Hub (created if missing).
        revision: branch to commit to (created from main if missing; default main).
        commit_message: the commit's message (default names the folder).
        private: create the repository private (only when it does not exist yet).
        token: Hub token (default: the one ``hf auth login`` stored, or ``$HF_TOKEN``).
    """
    from huggingface_hub import HfApi

    root = Path(folder).expanduser()
    check_uploadable(root)
    api = HfApi(token=token)
    api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    if revision:
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    commit = api.upload_folder(
        repo_id=repo_id, folder_path=os.fspath(root), revision=revision, repo_type="model",
        commit_message=commit_message or f"Upload LangCell checkpoint {root.name}",
        allow_patterns=UPLOAD_PATTERNS,
    )
    hub_id = f"{HUB_PREFIX}{repo_id}" + (f"@{revision}" if revision else "")
    return {"repo_id": repo_id, "revision": revision or "main", "commit": getattr(commit, "commit_url", str(commit)),
            "load_with": f"load_model({hub_id!r})"}
