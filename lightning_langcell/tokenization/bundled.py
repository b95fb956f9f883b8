"""Bundled gene resources (gzip JSON in ``resources/``), checked by sha256 when loaded.

The checksum of each resource is the sha256 of its *decompressed* bytes. For the three
Geneformer-30M dictionaries these bytes are the upstream JSON files unchanged, so the sums
below equal the table in ``resources/SOURCE.md``. ``scripts/build_gene_resources.py``
rebuilds every file and prints these sums (``--check`` compares without writing).
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from lightning_langcell.errors import LangCellError, LangCellInputError

RESOURCE_DIR = Path(__file__).resolve().parent / "resources"

RESOURCE_SHA256 = {
    "token_dictionary.json.gz": "a24af6551494d0b21d1e3d8977d218efad7238284e89b588c6dd02fe980923c2",
    "gene_median_dictionary.json.gz": "507ba58dafa0ac1f7f6ff97ed321026de1922a5e4cfba22b8b92526e12766fa9",
    "gene_name_id_dict.json.gz": "7a9aaf0682834fd3c19e4941c2db569cccb4838a88a624eb662fe28613190f3c",
    "human_symbol_extra.json.gz": "8b77fa3707e94087ee5179cd4c8773186ac2af40c141440248c42020b25e2ff7",
    "mouse_to_human.json.gz": "9d053f3413ac988a83a430fc4943d49e0bfee55e13926741ea52c55d7d1405a3",
}


class ResourceIntegrityError(LangCellError):
    """A bundled resource is missing or its content differs from the recorded checksum."""


def sha256_hex(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def canonical_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces, ASCII, shortest floats)."""
    return sha256_hex(json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode())


@functools.lru_cache(maxsize=None)
def load_resource(name: str) -> Any:
    """The parsed JSON of bundled resource ``name`` (cached; verified against its sha256)."""
    fix = "Reinstall lightning_langcell, or rebuild with `python scripts/build_gene_resources.py`."
    if name not in RESOURCE_SHA256:
        raise ResourceIntegrityError(f"Unknown bundled resource {name!r}; known: {sorted(RESOURCE_SHA256)}.")
    path = RESOURCE_DIR / name
    try:
        raw = gzip.decompress(path.read_bytes())
    except (OSError, EOFError) as error:
        raise ResourceIntegrityError(f"Bundled resource {path} is missing or unreadable ({error}). Fix: {fix}") from error
    digest = sha256_hex(raw)
    if digest != RESOURCE_SHA256[name]:
        raise ResourceIntegrityError(
            f"Bundled resource {path} is corrupted: sha256 {digest}, expected {RESOURCE_SHA256[name]}. Fix: {fix}"
        )
    return json.loads(raw)


def load_json_mapping(source: Any, what: str) -> dict:
    """A dict from a Mapping or from a JSON file path (``.json`` or ``.json.gz``), cached per file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise LangCellInputError(f"The {what} file {path} does not exist.", f"Pass an existing JSON file or a dict as {what}.")
        stat = path.stat()
        return dict(_read_json_file(str(path.resolve()), stat.st_mtime_ns, stat.st_size, what))
    if hasattr(source, "keys") and hasattr(source, "__getitem__"):
        return dict(source)
    raise LangCellInputError(
        f"{what} must be a dict or a path to a JSON file, got {type(source).__name__}.",
        f"Pass {what} as a dict or as the path of a JSON file.",
    )


@functools.lru_cache(maxsize=16)
def _read_json_file(path: str, mtime_ns: int, size: int, what: str) -> dict:
    raw = Path(path).read_bytes()
    try:
        obj = json.loads(gzip.decompress(raw) if path.endswith(".gz") else raw)
    except (ValueError, OSError, EOFError) as error:
        raise LangCellInputError(f"The {what} file {path} is not valid JSON ({error}).", f"Pass a JSON object file as {what}.") from error
    if not isinstance(obj, dict):
        raise LangCellInputError(f"The {what} file {path} holds a {type(obj).__name__}, not a JSON object.", f"Pass a JSON object file as {what}.")
    return obj
