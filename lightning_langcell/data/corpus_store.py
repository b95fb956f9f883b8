"""Low-level corpus storage: streaming ``.npy`` appenders, metadata columns, writer locks.

The arrays of a corpus (see :mod:`lightning_langcell.data.corpus` for the layout) are written
by appending each chunk to open files; the ``.npy`` header is reserved up front and filled in
with the final length on close, so nothing is held in memory but the current chunk.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
from blake3 import blake3

from lightning_langcell.data.corpus import DIGEST, MANIFEST_NAME, OFFSETS_FILE, TOKENS_FILE, file_digest
from lightning_langcell.errors import CorpusError, LangCellInputError

LOCK_NAME = ".writer.json"
STALE_UNLOCKED_SECONDS = 3600
_NPY_HEADER_BYTES = 128  # magic (6) + version (2) + length (2) + padded header dict


class NpyAppender:
    """A 1-D ``.npy`` file written by appending; :meth:`close` writes its final shape.

    The data is hashed as it is written (no second read): the manifest entry's digest covers the
    bytes after the fixed-size header (``digest_offset``).
    """

    def __init__(self, path: Path, dtype: Any):
        self.path = Path(path)
        self.dtype = np.dtype(dtype).newbyteorder("<")
        self.count = 0
        self._hasher = blake3()
        self._file = open(self.path, "wb")
        self._file.write(self._header())

    def _header(self) -> bytes:
        fields = {"descr": self.dtype.str, "fortran_order": False, "shape": (self.count,)}
        text = repr(fields).ljust(_NPY_HEADER_BYTES - 11) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")

    def append(self, values: Any) -> None:
        array = np.ascontiguousarray(values, dtype=self.dtype).reshape(-1)
        data = memoryview(array).cast("B")
        self._file.write(data)
        self._hasher.update(data)
        self.count += array.size

    def discard(self) -> None:
        """Close the file unfinished (the corpus is abandoned; its folder is removed by the caller)."""
        self._file.close()

    def close(self) -> dict:
        """Finish the file; returns its manifest entry (bytes, digest of the data, dtype, shape)."""
        self._file.seek(0)
        self._file.write(self._header())
        self._file.close()
        return {
            "bytes": self.path.stat().st_size,
            DIGEST: self._hasher.hexdigest(),
            "digest_offset": _NPY_HEADER_BYTES,
            "dtype": self.dtype.str,
            "shape": [self.count],
        }


def as_text(value: Any) -> str:
    """Category text of an obs value; whole floats print as integers (3.0 → "3")."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


class ColumnWriter:
    """One metadata column: ``numeric`` (float64/int64), ``categorical`` (int32 codes + JSON
    categories in first-seen order) or ``text`` (UTF-8 bytes + int64 offsets)."""

    def __init__(self, root: Path, slot: int, name: str, kind: str, dtype: Any = np.float64):
        self.root, self.name, self.kind = root, name, kind
        base = f"obs/{slot:03d}"
        self.files: dict[str, str] = {}
        if kind == "numeric":
            self._values = self._appender("values", f"{base}.values.npy", dtype)
        elif kind == "categorical":
            self._codes = self._appender("codes", f"{base}.codes.npy", np.int32)
            self.files["categories"] = f"{base}.categories.json"
            self.categories: list[str] = []
            self._lookup: dict[str, int] = {}
        else:
            self._utf8 = self._appender("utf8", f"{base}.utf8.npy", np.uint8)
            self._offsets = self._appender("offsets", f"{base}.offsets.npy", np.int64)
            self._offsets.append([0])
            self._n_bytes = 0

    def _appender(self, role: str, relative: str, dtype: Any) -> NpyAppender:
        self.files[role] = relative
        return NpyAppender(self.root / relative, dtype)

    def code(self, text: str) -> int:
        if text not in self._lookup:
            self._lookup[text] = len(self.categories)
            self.categories.append(text)
        return self._lookup[text]

    def add(self, values: Any, n: int) -> None:
        """Append ``n`` values (a Series/array/Categorical; None = all missing)."""
        if self.kind == "numeric":
            self._values.append(self._numbers(values, n))
        elif self.kind == "categorical":
            if values is None:
                self._codes.append(np.full(n, -1, dtype=np.int32))
                return
            codes, uniques = pd.factorize(pd.Series(values), use_na_sentinel=True)
            lookup = np.array([self.code(as_text(u)) for u in uniques] + [-1], dtype=np.int32)
            self._codes.append(lookup[codes])
        else:
            encoded = [str(value).encode("utf-8") for value in values]
            ends = self._n_bytes + np.cumsum([len(part) for part in encoded], dtype=np.int64)
            self._utf8.append(np.frombuffer(b"".join(encoded), dtype=np.uint8))
            self._offsets.append(ends)
            self._n_bytes = int(ends[-1]) if len(ends) else self._n_bytes

    def _numbers(self, values: Any, n: int) -> np.ndarray:
        dtype = self._values.dtype
        if values is None:
            return np.full(n, np.nan if dtype.kind == "f" else -1, dtype=dtype)
        if dtype.kind != "f":
            return np.asarray(values, dtype=dtype)
        try:
            return pd.to_numeric(pd.Series(values)).to_numpy(dtype=np.float64, na_value=np.nan)
        except (TypeError, ValueError) as error:
            raise CorpusError(
                f"obs column {self.name!r} mixes numbers and text across inputs ({error}).",
                f"Give {self.name!r} the same dtype in every input file.",
            ) from error

    def close(self) -> tuple[dict, dict]:
        """(column spec for the manifest, {relative path: file entry})."""
        entries = {}
        for role, appender in self._appenders().items():
            entries[self.files[role]] = appender.close()
        if self.kind == "categorical":
            path = self.root / self.files["categories"]
            path.write_text(json.dumps(self.categories, ensure_ascii=False), encoding="utf-8")
            entries[self.files["categories"]] = {"bytes": path.stat().st_size, DIGEST: file_digest(path)}
        return {"name": self.name, "kind": self.kind, "files": dict(self.files)}, entries

    def _appenders(self) -> dict[str, NpyAppender]:
        names = {"values": "_values", "codes": "_codes", "utf8": "_utf8", "offsets": "_offsets"}
        return {role: getattr(self, attr) for role, attr in names.items() if role in self.files}


class CorpusArraysWriter:
    """Streams cells into a corpus directory ``root``; :meth:`finish` writes the manifest last."""

    def __init__(self, root: Path, token_dtype: np.dtype, columns: Sequence[tuple[str, str]], vocab_size: int):
        self.root = Path(root)
        (self.root / "obs").mkdir()
        self.vocab_size = vocab_size
        self.tokens = NpyAppender(self.root / TOKENS_FILE, token_dtype)
        self.offsets = NpyAppender(self.root / OFFSETS_FILE, np.int64)
        self.offsets.append([0])
        self.n_cells = self.n_tokens = 0
        self.source_file = ColumnWriter(self.root, 0, "source_file", "categorical")
        self.source_index = ColumnWriter(self.root, 1, "source_index", "numeric", np.int64)
        self.obs_name = ColumnWriter(self.root, 2, "obs_name", "text")
        self.obs_columns = {
            name: ColumnWriter(self.root, 3 + slot, name, kind) for slot, (name, kind) in enumerate(columns)
        }
        self.sources: list[dict] = []

    def add_source(self, provenance: dict, first_cell: int | None = None) -> int:
        """Register an input (its ``name`` is made unique); returns its ``source_file`` code.

        ``first_cell``: corpus position of its first cell (default: the next cell written).
        """
        base = provenance.get("path") or f"<AnnData {len(self.sources)}>"
        name, suffix = base, 2
        while name in self.source_file._lookup:
            name, suffix = f"{base} ({suffix})", suffix + 1
        code = self.source_file.code(name)
        first_cell = self.n_cells if first_cell is None else first_cell
        self.sources.append({"name": name, **provenance, "first_cell": first_cell})
        return code

    def add_cells(
        self,
        flat_tokens: np.ndarray,
        lengths: np.ndarray,
        columns: Mapping[str, Any],
        source_codes: np.ndarray,
        rows: np.ndarray,
        names: Sequence[str],
    ) -> None:
        """Append cells: their concatenated tokens, token counts, obs values and provenance."""
        n = len(lengths)
        if n == 0:
            return
        flat_tokens = np.asarray(flat_tokens)
        if len(flat_tokens) != int(np.sum(lengths)):
            raise CorpusError("Token lengths do not add up to the chunk's tokens.", "Report this bug.")
        if len(flat_tokens) and (flat_tokens.min() < 0 or flat_tokens.max() >= self.vocab_size):
            raise CorpusError(
                f"Token ids outside the vocabulary [0, {self.vocab_size}).",
                "Use a tokenizer whose vocabulary matches its settings.",
            )
        self.tokens.append(flat_tokens)
        self.offsets.append(self.n_tokens + np.cumsum(lengths, dtype=np.int64))
        self.n_tokens += len(flat_tokens)
        self.n_cells += n
        self.source_file._codes.append(np.asarray(source_codes, dtype=np.int32))
        self.source_index.add(rows, n)
        self.obs_name.add(names, n)
        for name, column in self.obs_columns.items():
            column.add(columns.get(name), n)

    def discard(self) -> None:
        """Close every open file without finishing it (writing failed; no handle is leaked)."""
        columns = [self.source_file, self.source_index, self.obs_name, *self.obs_columns.values()]
        for appender in [self.tokens, self.offsets, *(a for c in columns for a in c._appenders().values())]:
            appender.discard()

    def finish(self, fields: dict) -> dict:
        """Close every array, write ``manifest.json`` (last) and return it."""
        files = {TOKENS_FILE: self.tokens.close(), OFFSETS_FILE: self.offsets.close()}
        specs = []
        for column in [self.source_file, self.source_index, self.obs_name, *self.obs_columns.values()]:
            spec, entries = column.close()
            specs.append(spec)
            files.update(entries)
        manifest = {
            **fields,
            "n_cells": self.n_cells,
            "n_tokens": self.n_tokens,
            "token_dtype": self.tokens.dtype.str,
            "sources": self.sources,
            "columns": specs,
            "files": files,
        }
        text = json.dumps(manifest, indent=1, sort_keys=False, default=json_default)
        (self.root / MANIFEST_NAME).write_text(text, encoding="utf-8")
        return manifest


def json_default(value: Any) -> Any:
    """JSON encoder fallback for numpy scalars, tuples/sets and anything else (as str)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


# ----------------------------------------------------------------- inputs
_NUMERIC_ENCODINGS = ("nullable-integer", "nullable-boolean", "nullable-float")


def input_obs_kinds(item: Any, index: int, digest: Callable[[str], str]) -> dict:
    """Row count, obs column kinds and provenance of one input, without reading X or obs values.

    Returns ``{"n_rows", "kinds": {column: "numeric"|"categorical"}, "provenance": {...}}``.
    """
    if hasattr(item, "obs"):
        kinds = {
            str(name): "numeric"
            if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype)
            else "categorical"
            for name, dtype in item.obs.dtypes.items()
        }
        provenance = {"path": None, "bytes": None, DIGEST: None}
        return {"n_rows": item.n_obs, "kinds": kinds, "provenance": provenance}
    import h5py

    path = os.path.abspath(item)
    try:
        with h5py.File(path, "r") as handle:
            obs = handle["obs"]
            index_name = obs.attrs.get("_index", "_index")
            n_rows = obs[index_name].shape[0]
            kinds = {}
            for name in obs.attrs.get("column-order", [n for n in obs if n != index_name]):
                element = obs[name]
                encoding = element.attrs.get("encoding-type", "")
                numeric = encoding in _NUMERIC_ENCODINGS or (
                    isinstance(element, h5py.Dataset) and element.dtype.kind in "biuf"
                )
                kinds[str(name)] = "numeric" if numeric else "categorical"
    except (OSError, KeyError) as error:
        raise LangCellInputError(
            f"Cannot read {item} as an .h5ad file: truncated, empty or another format ({error}).",
            "Pass complete AnnData .h5ad files (anndata >= 0.8); re-copy or re-download a file that was cut short.",
        ) from error
    provenance = {"path": path, "bytes": os.path.getsize(path), DIGEST: digest(path)}
    return {"n_rows": int(n_rows), "kinds": kinds, "provenance": provenance}


# ------------------------------------------------------------ crash safety
def _pid_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill would terminate the process there: assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def writer_lock(directory: Path) -> Iterator[None]:
    """Mark a temporary corpus directory with this process' id while it is being written."""
    lock = Path(directory) / LOCK_NAME
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}))
    yield
    lock.unlink()


def remove_stale_temporaries(target: Path) -> list[Path]:
    """Delete ``.<name>.tmp-*`` directories left beside ``target`` by writers that died.

    A directory is stale when its lock names a dead process on this host, or when it has no
    lock and is older than an hour. Returns the removed paths.
    """
    removed = []
    for candidate in Path(target).parent.glob(f".{Path(target).name}.tmp-*"):
        lock, stale = candidate / LOCK_NAME, False
        try:
            owner = json.loads(lock.read_text())
            stale = owner.get("host") == socket.gethostname() and not _pid_alive(int(owner["pid"]))
        except (OSError, ValueError, KeyError, TypeError):
            with contextlib.suppress(OSError):
                stale = time.time() - candidate.stat().st_mtime > STALE_UNLOCKED_SECONDS
        if candidate.is_dir() and stale:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
    return removed
