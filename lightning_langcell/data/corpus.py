"""Tokenized-cell corpus on disk: memory-mapped, O(1) random access, checked against its manifest.

Layout of a corpus directory (format version 2; no pickle anywhere):

- ``tokens.npy``: every cell's ranked gene token ids (no ``<cls>``), concatenated, shape
  [n_tokens]. ``int16`` when the vocabulary has at most 32,767 ids (the 25,427-id LangCell
  vocabulary does: half the disk of int32), else ``int32``. Readers get int32.
- ``offsets.npy``: int64 [n_cells + 1]; cell ``i`` is ``tokens[offsets[i]:offsets[i + 1]]``.
- ``obs/``: one or two files per metadata column (names listed in the manifest):
  ``numeric`` columns are one float64 (or int64) array; ``categorical`` ones are int32 codes
  (-1 = missing) plus a JSON list of categories; ``text`` (``obs_name``) is UTF-8 bytes + int64
  offsets. Every corpus has ``source_file`` (categorical, the input file of the cell),
  ``source_index`` (int64 row of the cell in that file) and ``obs_name`` (its obs name).
- ``manifest.json``: format, vocabulary checksum, tokenizer settings, counts, per-input
  provenance (path, bytes, BLAKE3 digest of the file, cells kept/skipped, tokenizer report, time)
  and the byte size + BLAKE3 digest of every other file (of an ``.npy`` file: of its data after
  the fixed 128-byte header, ``digest_offset``; dtype and shape are checked from the header).

Digests are BLAKE3 (cryptographic and fast), so hashing a large input costs a small fraction
of tokenizing it.

Opening reads the manifest and the arrays' ``.npy`` headers and compares file sizes, shapes and
dtypes with it, checks that the offsets rise and end at the token count (milliseconds at any
size), and range-checks the token ids against the vocabulary once per corpus (the result is
remembered by the tokens' digest and file stamp, in this process and under the cache root, so a
re-open does not repeat it). ``verify_digests=True`` also re-hashes every file (BLAKE3, one pass
over the corpus) not yet verified at its current stamp (remembered the same way; the ``verify``
CLI always re-hashes). The cost of each check, in reads of the corpus, is measured by
``python -m benchmarks.corpus_verify_benchmark`` (speed suite).
"""

from __future__ import annotations

import errno
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import pandas as pd
from blake3 import blake3

from lightning_langcell.errors import CorpusError
from lightning_langcell.io_utils import atomic_file

FORMAT_NAME = "lightning_langcell.cell_corpus"
FORMAT_VERSION = 2
DIGEST = "blake3"  # manifest key of every content digest
MANIFEST_NAME = "manifest.json"
TOKENS_FILE = "tokens.npy"
OFFSETS_FILE = "offsets.npy"
RESERVED_COLUMNS = ("source_file", "source_index", "obs_name")
MANIFEST_KEYS = (
    "n_cells", "n_tokens", "vocab_size", "vocabulary_checksum", "tokenizer_settings",
    "sources", "columns", "files",
)
TOKEN_DTYPES = (np.dtype("<i2"), np.dtype("<i4"))
ID_CHECK_BLOCK = 1 << 24  # token ids read at once by the range check (32-64 MiB)
_CHECKED_IDS: dict[tuple, tuple[int, int]] = {}  # id-range checks done in this process
_VERIFIED_DIGESTS: set[tuple] = set()  # files whose digest matched in this process (by file stamp)


def cache_root() -> Path:
    """Library cache: ``$LANGCELL_CACHE`` or ``~/.cache/lightning_langcell``."""
    return Path(os.environ.get("LANGCELL_CACHE") or Path.home() / ".cache" / "lightning_langcell")


@dataclass(frozen=True)
class CellRecord:
    """One cell: ``input_ids`` int32 [n_genes] (ranked genes, no ``<cls>``) and its obs values."""

    input_ids: np.ndarray
    metadata: dict[str, Any] = field(default_factory=dict)


def file_digest(path: str | os.PathLike, offset: int = 0, block_size: int = 1 << 22) -> str:
    """Hex BLAKE3 digest of a file's bytes from ``offset`` on, read in blocks (bounded memory)."""
    hasher = blake3()
    buffer = bytearray(block_size)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as handle:
        handle.seek(offset)
        while size := handle.readinto(buffer):
            hasher.update(view[:size])
    return hasher.hexdigest()


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of corpus directory ``path``; :class:`CorpusError` when it is not a corpus."""
    manifest_path = Path(path) / MANIFEST_NAME
    fix = "Write the corpus with `python -m lightning_langcell tokenize FILES --output DIR`."
    if not manifest_path.is_file():
        raise CorpusError(f"{path} is not a tokenized-cell corpus (no {MANIFEST_NAME}).", fix)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as error:
        raise CorpusError(f"Cannot read {manifest_path}: {error}.", fix) from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise CorpusError(f"{manifest_path} is not a {FORMAT_NAME} manifest.", fix)
    if manifest.get("format_version") != FORMAT_VERSION:
        raise CorpusError(
            f"{path} has corpus format version {manifest.get('format_version')}; this library "
            f"reads version {FORMAT_VERSION}.",
            "Re-tokenize the input files with this version of lightning_langcell.",
        )
    missing = [key for key in MANIFEST_KEYS if key not in manifest]
    if missing:
        raise CorpusError(f"{manifest_path} lacks {missing}: the corpus was not written completely.", fix)
    return manifest


def is_corpus(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds a corpus manifest (the arrays are not checked)."""
    try:
        read_manifest(path)
    except CorpusError:
        return False
    return True


class CellCorpus:
    """Read-only view of a corpus directory.

    ``len(corpus)`` cells; ``corpus[i]`` → :class:`CellRecord`; ``corpus.input_ids(i)`` → tokens
    only (the fast path); ``corpus.lengths`` int64 [n_cells]; ``corpus.column(name)`` one
    metadata column for all cells; ``corpus.obs`` all of them as a DataFrame (built once).
    """

    def __init__(self, path: str | os.PathLike, verify_digests: bool = False, check_ids: bool = True):
        """Open and check ``path`` (sizes, dtypes, offsets; ids once per corpus unless
        ``check_ids=False``; every file's digest with ``verify_digests=True``)."""
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._check_files()
        self.tokens = self._load(TOKENS_FILE)
        self.offsets = self._load(OFFSETS_FILE)
        self._check_token_arrays()
        self._columns = {spec["name"]: spec for spec in self.manifest["columns"]}
        self._cache: dict[str, Any] = {}
        if verify_digests:
            self.verify_digests_once()
        if check_ids:
            self.check_token_ids()

    # ------------------------------------------------------------------ checks
    def _fail(self, problem: str) -> CorpusError:
        return CorpusError(
            f"Corpus {self.path} is damaged: {problem}.",
            "Re-create it from its input files (see manifest.json 'sources') with "
            "`python -m lightning_langcell tokenize ... --output DIR --overwrite`.",
        )

    def _check_files(self) -> None:
        for name, info in self.manifest["files"].items():
            file_path = self.path / name
            if not file_path.is_file():
                raise self._fail(f"{name} is missing")
            size = file_path.stat().st_size
            if size != info["bytes"]:
                raise self._fail(f"{name} has {size} bytes, the manifest says {info['bytes']}")

    def _load(self, name: str) -> np.ndarray:
        info = self.manifest["files"].get(name)
        if info is None:
            raise self._fail(f"the manifest does not list {name}")
        try:
            array = np.load(self.path / name, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            if getattr(error, "errno", None) == errno.ENOMEM:  # the file is fine: no address space left
                raise CorpusError(
                    f"Cannot memory-map {self.path / name} ({info['bytes']:,} bytes): the process is out of "
                    f"virtual memory ({error}).",
                    "Raise the address-space limit (`ulimit -v`, the job's virtual-memory request) or free memory; "
                    "the corpus itself does not need to be re-created.",
                ) from error
            raise self._fail(f"{name} is not a readable .npy array ({error})") from error
        if list(array.shape) != info["shape"] or array.dtype != np.dtype(info["dtype"]):
            raise self._fail(
                f"{name} is {array.dtype}{list(array.shape)}, the manifest says "
                f"{info['dtype']}{info['shape']}"
            )
        return array

    def _check_token_arrays(self) -> None:
        n_cells, n_tokens = self.manifest["n_cells"], self.manifest["n_tokens"]
        if self.tokens.dtype not in TOKEN_DTYPES or self.offsets.dtype != np.dtype("<i8"):
            raise self._fail(f"{TOKENS_FILE} must be int16 or int32 and {OFFSETS_FILE} int64; they are "
                             f"{self.tokens.dtype} and {self.offsets.dtype}")
        if self.offsets.shape != (n_cells + 1,) or self.tokens.shape != (n_tokens,):
            raise self._fail(f"arrays do not hold {n_cells} cells / {n_tokens} tokens")
        if int(self.offsets[0]) != 0 or int(self.offsets[-1]) != n_tokens:
            raise self._fail(f"{OFFSETS_FILE} does not span {TOKENS_FILE} (0 to {n_tokens})")
        falls = np.flatnonzero(np.diff(self.offsets) < 0)
        if falls.size:
            raise self._fail(f"{OFFSETS_FILE} decreases at {falls.size} cell(s) (first: cell {int(falls[0])})")

    def digest_problems(self, names: list[str] | None = None) -> list[str]:
        """One line per file (of ``names``; default all) whose BLAKE3 digest differs from the
        manifest's (reads every byte)."""
        files = self.manifest["files"]
        return [
            f"{self.path / name} does not match its {DIGEST} digest in the manifest"
            for name in (files if names is None else names)
            if file_digest(self.path / name, files[name].get("digest_offset", 0)) != files[name][DIGEST]
        ]

    def verify_digests(self) -> None:
        """Re-hash every file and compare with the manifest (:class:`CorpusError` naming the file)."""
        problems = self.digest_problems()
        if problems:
            raise self._fail("; ".join(problems))

    def verify_digests_once(self) -> None:
        """:meth:`verify_digests` for the files not yet verified at their current stamp (digest,
        size, mtime, inode), remembered in this process and under :func:`cache_root`, so every
        rank and every re-open of an unchanged corpus skips the pass; a changed file is re-hashed.
        ``verify``/the ``verify`` CLI always re-hash everything."""
        stamps = {name: self._file_stamp(name) for name in self.manifest["files"]}
        record_dir = cache_root() / "verified_digests"
        todo = [name for name, key in stamps.items() if key not in _VERIFIED_DIGESTS
                and _read_record(record_dir / f"{key[0]}.{key[-1]}.json", key) is None]
        problems = self.digest_problems(todo)
        if problems:
            raise self._fail("; ".join(problems))
        for name in todo:
            _VERIFIED_DIGESTS.add(stamps[name])
            _write_record(record_dir / f"{stamps[name][0]}.{stamps[name][-1]}.json", stamps[name], {})

    def _file_stamp(self, name: str) -> tuple:
        stat = (self.path / name).stat()
        return (self.manifest["files"][name][DIGEST], stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)

    def token_id_range(self) -> tuple[int, int]:
        """(smallest, largest) token id (``(0, -1)`` for no token), read in blocks."""
        low, high = 0, -1
        for start in range(0, len(self.tokens), ID_CHECK_BLOCK):
            block = self.tokens[start : start + ID_CHECK_BLOCK]
            low = int(block.min()) if start == 0 else min(low, int(block.min()))
            high = max(high, int(block.max()))
        return low, high

    def id_range_problem(self, low: int, high: int) -> str | None:
        """What is wrong with ids in ``[low, high]`` for this corpus' vocabulary (None: nothing)."""
        vocab_size = self.manifest["vocab_size"]
        if high >= low and (low < 0 or high >= vocab_size):
            return (f"{self.path / TOKENS_FILE} holds token ids in [{low}, {high}], outside the vocabulary "
                    f"[0, {vocab_size})")
        return None

    def check_token_ids(self) -> None:
        """Range-check the token ids once per corpus: the result is remembered by the tokens'
        digest and file stamp (size, mtime) in this process and under :func:`cache_root`."""
        key, record_path = self._id_check_key()
        found = _CHECKED_IDS.get(key)
        if found is None:
            record = _read_record(record_path, key)
            found = _id_range(record) if record is not None else None
        if found is None:
            found = self.token_id_range()
        problem = self.id_range_problem(*found)
        if problem:
            raise self._fail(problem)
        if key not in _CHECKED_IDS:
            _CHECKED_IDS[key] = found
            _write_record(record_path, key, {"low": found[0], "high": found[1]})

    def _id_check_key(self) -> tuple[tuple, Path]:
        stat = (self.path / TOKENS_FILE).stat()
        digest = self.manifest["files"][TOKENS_FILE][DIGEST]
        key = (digest, self.manifest["vocab_size"], stat.st_size, stat.st_mtime_ns, stat.st_ino)
        return key, cache_root() / "checked_token_ids" / f"{digest}.json"

    def verify(self) -> None:
        """Full check (reads everything): digest of every file, token id and code ranges."""
        self.verify_digests()
        problem = self.id_range_problem(*self.token_id_range())
        if problem:
            raise self._fail(problem)
        for name, spec in self._columns.items():
            if spec["kind"] == "categorical":
                codes = self._array(spec, "codes")
                n_categories = len(self._categories(name))
                if len(codes) and (codes.min() < -1 or codes.max() >= n_categories):
                    raise self._fail(f"codes of column {name!r} outside its {n_categories} categories")

    # ------------------------------------------------------------------ tokens
    def __len__(self) -> int:
        return int(self.manifest["n_cells"])

    def _position(self, index: int) -> int:
        n_cells = len(self)
        position = int(index) + n_cells if int(index) < 0 else int(index)
        if not 0 <= position < n_cells:
            raise IndexError(f"cell {index} out of range for a corpus of {n_cells} cells")
        return position

    def input_ids(self, index: int) -> np.ndarray:
        """Token ids of cell ``index``: int32 [n_genes], ranked, without ``<cls>``."""
        position = self._position(index)
        start, stop = self.offsets[position], self.offsets[position + 1]
        return np.asarray(self.tokens[start:stop], dtype=np.int32)

    def __getitem__(self, index: int) -> CellRecord:
        return CellRecord(self.input_ids(index), self.metadata(index))

    def __iter__(self) -> Iterator[CellRecord]:
        for index in range(len(self)):
            yield self[index]

    @property
    def lengths(self) -> np.ndarray:
        """Gene tokens per cell, int64 [n_cells] (computed once from the offsets)."""
        if "lengths" not in self._cache:
            self._cache["lengths"] = np.diff(np.asarray(self.offsets))
        return self._cache["lengths"]

    # ---------------------------------------------------------------- metadata
    @property
    def columns(self) -> list[str]:
        """Metadata column names (``source_file``, ``source_index``, ``obs_name`` + kept obs)."""
        return list(self._columns)

    def column_kind(self, name: str) -> str:
        """``"numeric"``, ``"categorical"`` or ``"text"``."""
        return self._spec(name)["kind"]

    def _spec(self, name: str) -> dict:
        if name not in self._columns:
            raise KeyError(f"No column {name!r} in corpus {self.path}; columns: {self.columns}")
        return self._columns[name]

    def _array(self, spec: dict, role: str) -> np.ndarray:
        key = f"{spec['name']}\0{role}"
        if key not in self._cache:
            array = self._load(spec["files"][role])
            expected = len(self) + (role == "offsets")
            if role != "utf8" and array.shape != (expected,):
                raise self._fail(f"column {spec['name']!r} has {array.shape[0]} rows, not {expected}")
            self._cache[key] = array
        return self._cache[key]

    def _categories(self, name: str) -> list[str]:
        key = f"{name}\0categories"
        if key not in self._cache:
            relative = self._spec(name)["files"]["categories"]
            with open(self.path / relative, encoding="utf-8") as handle:
                self._cache[key] = json.load(handle)
        return self._cache[key]

    def column(self, name: str, start: int = 0, stop: int | None = None) -> np.ndarray | pd.Categorical:
        """Values of column ``name`` for cells ``start:stop`` (default: all cells).

        numeric → float64/int64 array (NaN = missing); categorical → ``pandas.Categorical``
        (NaN = missing); text → object array of str.
        """
        spec = self._spec(name)
        stop = len(self) if stop is None else stop
        if spec["kind"] == "numeric":
            return np.array(self._array(spec, "values")[start:stop])
        if spec["kind"] == "categorical":
            codes = np.asarray(self._array(spec, "codes")[start:stop])  # as stored (int32); pandas narrows
            return pd.Categorical.from_codes(codes, categories=self._categories(name))
        offsets = np.asarray(self._array(spec, "offsets")[start : stop + 1])
        raw = bytes(self._array(spec, "utf8")[offsets[0] : offsets[-1]])
        relative = offsets - offsets[0]
        return np.array(
            [raw[relative[i] : relative[i + 1]].decode("utf-8") for i in range(len(relative) - 1)],
            dtype=object,
        )

    def value(self, name: str, index: int) -> Any:
        """Column ``name`` of cell ``index`` (str / float / int; None when missing)."""
        spec, position = self._spec(name), self._position(index)
        if spec["kind"] == "numeric":
            number = self._array(spec, "values")[position].item()
            return None if isinstance(number, float) and math.isnan(number) else number
        if spec["kind"] == "categorical":
            code = int(self._array(spec, "codes")[position])
            return None if code < 0 else self._categories(name)[code]
        offsets = self._array(spec, "offsets")
        return bytes(self._array(spec, "utf8")[offsets[position] : offsets[position + 1]]).decode("utf-8")

    def metadata(self, index: int) -> dict[str, Any]:
        """Every column's value for cell ``index``."""
        return {name: self.value(name, index) for name in self._columns}

    @property
    def obs(self) -> pd.DataFrame:
        """One row per cell (RangeIndex = corpus position), one column per metadata column."""
        if "obs" not in self._cache:
            self._cache["obs"] = self.frame(self._columns)
        return self._cache["obs"]

    def frame(self, names) -> pd.DataFrame:
        """Columns ``names`` only, as :attr:`obs` has them (not cached): categorical columns stay
        codes, whereas a ``text`` column is one Python string per cell."""
        return pd.DataFrame({name: self.column(name) for name in names})

    # ----------------------------------------------------------------- summary
    @property
    def vocabulary_checksum(self) -> str:
        return self.manifest["vocabulary_checksum"]

    @property
    def tokenizer_settings(self) -> dict:
        return self.manifest["tokenizer_settings"]

    @property
    def sources(self) -> list[dict]:
        """Provenance of each input file, in corpus order (``first_cell``, ``n_cells``, ...)."""
        return self.manifest["sources"]

    def __repr__(self) -> str:
        return (
            f"CellCorpus({str(self.path)!r}, n_cells={len(self)}, "
            f"n_tokens={self.manifest['n_tokens']}, sources={len(self.sources)})"
        )

    # A corpus is pickled by path (DataLoader workers reopen the memory maps, never copy them).
    def __getstate__(self) -> dict:
        return {"path": str(self.path)}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])  # ids: checked once already (remembered); digests: by the opener


def _read_record(path: Path, key: tuple) -> dict | None:
    """A remembered check result, when its file stamp is the one of ``key`` (else None)."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == list(key) else None


def _id_range(record: dict) -> tuple[int, int] | None:
    try:
        return int(record["low"]), int(record["high"])
    except (KeyError, TypeError, ValueError):  # a damaged record: check again
        return None


def _write_record(path: Path, key: tuple, values: dict) -> None:
    """Remember a check result across processes; a cache that cannot be written is skipped."""
    try:
        with atomic_file(path, "w") as handle:
            handle.write(json.dumps({"key": list(key), **values}))
    except OSError:
        pass
