"""Hugging Face ``datasets`` folders <-> corpora, without re-tokenizing.

Import: a folder written by ``Dataset.save_to_disk`` (or one split of a ``DatasetDict`` folder)
whose token column holds Geneformer-30M token ids becomes a corpus. Its Arrow shards are read
record batch by record batch (never memory-mapped whole), so memory stays bounded by one chunk.
Ids are checked against the gene vocabulary; a leading ``<cls>`` (LangCell's tokenized sets) is
stripped, since a corpus stores genes only and the collator adds ``<cls>``; cells longer than the
model maximum are kept whole (truncated at batch time). Every scalar column becomes an obs
column; the cell-type column is stored as ``cell_type`` so texts are built as from .h5ad obs.

Export: a corpus becomes a ``save_to_disk`` folder (``input_ids``, ``length``, obs columns),
written beside the target and renamed into place when complete.

Needs the optional extra ``[hf]`` (``datasets``, ``pyarrow``), imported only here.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from lightning_langcell.data.corpus import DIGEST, FORMAT_NAME, FORMAT_VERSION, RESERVED_COLUMNS, CellCorpus
from lightning_langcell.data.corpus_writer import (
    DEFAULT_OBS_COLUMNS,
    _existing_output,
    _file_digest,
    _now,
    _write,
)
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.io_utils import atomic_directory

HF_EXTRA = "pip install 'lightning_langcell[hf]'"
DATASET_FILES = ("state.json", "dataset_info.json")
DATASET_DICT_FILE = "dataset_dict.json"
TOKEN_COLUMNS = ("input_ids",)
CELL_TYPE_COLUMNS = ("cell_type", "celltype", "str_labels")
LENGTH_COLUMN = "length"
IMPORT_CHUNK_CELLS = 4096
IMPORT_ALGORITHM = "hf_dataset_import"


def _hf():
    """The ``datasets`` package, or a clear error naming the extra that installs it."""
    try:
        import datasets
    except ImportError as error:
        raise LangCellInputError(
            f"Reading or writing Hugging Face datasets needs the `datasets` package ({error}).",
            f"Install the extra: {HF_EXTRA}",
        ) from error
    return datasets


def is_hf_dataset_dir(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a ``save_to_disk`` folder (a ``Dataset`` or a ``DatasetDict``)."""
    folder = Path(path)
    return folder.is_dir() and (
        (folder / DATASET_DICT_FILE).is_file() or all((folder / name).is_file() for name in DATASET_FILES)
    )


def dataset_folder(path: str | os.PathLike, split: str | None = None) -> Path:
    """The ``Dataset`` folder of ``path``: itself, or split ``split`` of a ``DatasetDict`` folder."""
    folder = Path(path)
    if not is_hf_dataset_dir(folder):
        raise LangCellInputError(
            f"{path} is not a Hugging Face dataset folder (no {DATASET_DICT_FILE}, or no {' and '.join(DATASET_FILES)}).",
            "Pass a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`.",
        )
    if not (folder / DATASET_DICT_FILE).is_file():
        if split is not None:
            raise LangCellInputError(f"{path} is a single dataset, not a DatasetDict: it has no split {split!r}.",
                                     "Leave the split option out.")
        return folder
    splits = json.loads((folder / DATASET_DICT_FILE).read_text())["splits"]
    if split is None and len(splits) == 1:
        split = splits[0]
    if split not in splits:
        raise LangCellInputError(
            f"{path} is a DatasetDict with splits {splits}; "
            + ("choose one." if split is None else f"it has no split {split!r}."),
            f"Pass --split NAME to tokenize, or point `data` at {folder}/<split>.",
        )
    return dataset_folder(folder / split)


class HFDatasetSource:
    """One ``Dataset`` folder read from its Arrow shards: features, row count, record batches."""

    def __init__(self, folder: Path):
        self.folder = folder
        state = json.loads((folder / "state.json").read_text())
        self.files = [folder / entry["filename"] for entry in state["_data_files"]]
        info = json.loads((folder / "dataset_info.json").read_text())
        self.features = _hf().Features.from_dict(info["features"])
        if state.get("_indexes") or any(not path.is_file() for path in self.files):
            raise LangCellInputError(f"{folder} lists Arrow files that are missing or has an index mapping.",
                                     "Re-save the dataset with `Dataset.save_to_disk` (it writes flat shards).")

    @property
    def columns(self) -> list[str]:
        return list(self.features)

    def batches(self, rows: int) -> Iterator[tuple[int, Any]]:
        """``(first row, pyarrow.RecordBatch)`` of at most ``rows`` rows, shard by shard."""
        import pyarrow as pa

        first = 0
        for path in self.files:
            with pa.OSFile(str(path)) as handle:
                for batch in pa.ipc.open_stream(handle):
                    for start in range(0, batch.num_rows, rows):
                        piece = batch.slice(start, rows)
                        yield first, piece
                        first += piece.num_rows

    def digests(self) -> list[str]:
        """Content digests of the shards and the two JSON files (for cache keys and provenance)."""
        return [_file_digest(path) for path in [*self.files, *(self.folder / name for name in DATASET_FILES)]]


# ---------------------------------------------------------------------- columns
def _resolve(wanted: str | None, candidates: Sequence[str], columns: Sequence[str], what: str, option: str,
             required: bool) -> str | None:
    if wanted is not None:
        if wanted not in columns:
            raise LangCellInputError(f"The dataset has no {what} column {wanted!r} (columns: {list(columns)}).",
                                     f"Pass {option} with one of those columns.")
        return wanted
    found = next((name for name in candidates if name in columns), None)
    if found is None and required:
        raise LangCellInputError(
            f"No {what} column found among {list(candidates)} (the dataset's columns: {list(columns)}).",
            f"Name it with {option}.",
        )
    return found


def _column_kind(feature: Any) -> str | None:
    """``numeric``/``categorical`` for a scalar feature; None for nested ones (not kept)."""
    datasets = _hf()
    if isinstance(feature, datasets.ClassLabel):
        return "categorical"
    if isinstance(feature, datasets.Value):
        kind = np.dtype(feature.pa_type.to_pandas_dtype()).kind if feature.dtype not in ("string", "large_string") else "U"
        return "numeric" if kind in "biuf" else "categorical"
    return None


def import_plan(source: HFDatasetSource, token_column: str | None = None, cell_type_column: str | None = None,
                obs_columns: Sequence[str] | str | None = "all") -> dict:
    """Which column holds tokens, which is the cell type, and the obs columns (name, kind, stored as)."""
    columns = source.columns
    tokens = _resolve(token_column, TOKEN_COLUMNS, columns, "token", "--token-column", required=True)
    if not isinstance(source.features[tokens], (_hf().Sequence, getattr(_hf(), "List", ()), _hf().LargeList)):
        raise LangCellInputError(f"Column {tokens!r} is {source.features[tokens]}, not a list of token ids.",
                                 "Name the column of Geneformer token ids with --token-column.")
    cell_type = _resolve(cell_type_column, CELL_TYPE_COLUMNS, columns, "cell type", "--cell-type-column",
                         required=False)
    if cell_type and cell_type != "cell_type" and "cell_type" in columns:
        raise LangCellInputError(f"Both {cell_type!r} and 'cell_type' are columns; {cell_type!r} would be stored "
                                 "as 'cell_type'.", "Rename or drop one of them before importing.")
    keep = None if obs_columns in ("all", None) else set([obs_columns] if isinstance(obs_columns, str) else obs_columns)
    if keep is not None:
        keep |= set(DEFAULT_OBS_COLUMNS) | {cell_type}
    obs, skipped = [], []
    for name in columns:
        if name in (tokens, LENGTH_COLUMN, "obs_name") or (keep is not None and name not in keep):
            continue
        kind = _column_kind(source.features[name])
        if kind is None or name in RESERVED_COLUMNS:
            skipped.append(name)
            continue
        obs.append({"column": name, "kind": kind, "stored_as": "cell_type" if name == cell_type else name})
    return {"token_column": tokens, "cell_type_column": cell_type, "obs": obs, "skipped_columns": skipped,
            "length_column": LENGTH_COLUMN if LENGTH_COLUMN in columns else None,
            "obs_name_column": "obs_name" if "obs_name" in columns else None}


# ---------------------------------------------------------------------- import
def _chunk_tokens(batch: Any, plan: dict, first_row: int, vocabulary: Any) -> tuple[np.ndarray, np.ndarray]:
    """(flat gene tokens, lengths) of one record batch: ``<cls>`` stripped, ids and lengths checked."""
    import pyarrow.compute as pc

    lists = batch.column(plan["token_column"])
    if lists.null_count:
        row = first_row + int(np.flatnonzero(lists.is_null().to_numpy(zero_copy_only=False))[0])
        raise LangCellInputError(f"Row {row} has no token list (null in {plan['token_column']!r}).",
                                 "Drop the rows without tokens before importing.")
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = lists.flatten().to_numpy(zero_copy_only=False)
    if flat.dtype.kind not in "iu":
        raise LangCellInputError(f"Column {plan['token_column']!r} holds {lists.type.value_type}, not integer ids.",
                                 "Pass a column of Geneformer token ids (--token-column).")
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    if plan["length_column"]:
        stated = batch.column(plan["length_column"]).to_numpy(zero_copy_only=False)
        wrong = np.flatnonzero(stated != lengths)
        if wrong.size:
            row = int(wrong[0])
            raise LangCellInputError(
                f"Row {first_row + row}: 'length' says {stated[row]} but {plan['token_column']!r} holds {lengths[row]} ids.",
                "Recompute the 'length' column (or drop it; it is optional).",
            )
    nonempty = lengths > 0
    firsts = np.where(nonempty, flat[np.minimum(starts, len(flat) - 1)] if len(flat) else -1, -1)
    lasts = np.where(nonempty, flat[np.maximum(starts + lengths - 1, 0)] if len(flat) else -1, -1)
    if (lengths > 1).any() and (firsts[nonempty] == 2).all() and (lasts[nonempty] == 3).all():
        raise LangCellInputError(
            f"Rows {first_row}-{first_row + len(lengths) - 1} all start with id 2 and end with id 3: <cls>/<eos> of "
            "Geneformer's later 20,275-token dictionary, whose ids mean other genes than the 30M dictionary's.",
            "Tokenize the cells again from counts with `python -m lightning_langcell tokenize FILE.h5ad`, or import "
            "a dataset tokenized with the Geneformer-30M dictionary.",
        )
    has_cls = firsts == vocabulary.cls_id
    keep = np.ones(len(flat), dtype=bool)
    keep[starts[has_cls]] = False
    genes = flat[keep]
    gene_lengths = lengths - has_cls
    special = np.isin(genes, [vocabulary.pad_id, vocabulary.mask_id, vocabulary.cls_id])
    bad = np.flatnonzero((genes < 0) | (genes >= len(vocabulary)) | special)
    if bad.size:
        cell = int(np.searchsorted(np.cumsum(gene_lengths), bad[0], side="right"))
        raise LangCellInputError(
            f"Row {first_row + cell} holds token id {int(genes[bad[0]])}, which is no gene of the vocabulary "
            f"({len(vocabulary)} ids; genes are the ids other than <pad> {vocabulary.pad_id}, <mask> "
            f"{vocabulary.mask_id} and <cls> {vocabulary.cls_id}, which may only come first).",
            "Import datasets tokenized with the Geneformer-30M token dictionary (the one bundled here); "
            "datasets of Geneformer's later 20,275-token dictionary use other ids.",
        )
    return genes, gene_lengths


def _chunk_obs(batch: Any, plan: dict, features: Any) -> dict[str, Any]:
    """Obs values of one record batch by stored name (ClassLabel ids become their names)."""
    datasets = _hf()
    values = {}
    for entry in plan["obs"]:
        column = batch.column(entry["column"]).to_pandas()
        feature = features[entry["column"]]
        if isinstance(feature, datasets.ClassLabel):
            names = np.array(feature.names + [None], dtype=object)
            column = names[column.fillna(-1).astype(np.int64).to_numpy()]
        values[entry["stored_as"]] = column
    return values


def import_settings(vocabulary: Any) -> dict:
    """The corpus' ``tokenizer_settings``: ids taken as given (two imports merge; .h5ad corpora do not)."""
    return {"algorithm": IMPORT_ALGORITHM, "vocabulary_checksum": vocabulary.checksum,
            "vocab_size": len(vocabulary), "cls": "stripped"}


def hf_cache_key(path: str | os.PathLike, split: str | None = None, token_column: str | None = None,
                 cell_type_column: str | None = None) -> str:
    """Hex sha256 naming the corpus imported from a dataset folder (contents, options, format)."""
    folder = dataset_folder(path, split)
    header = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "algorithm": IMPORT_ALGORITHM,
              "token_column": token_column, "cell_type_column": cell_type_column}
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for part in HFDatasetSource(folder).digests():
        digest.update(part.encode())
    return digest.hexdigest()


def import_hf_dataset(
    path: str | os.PathLike,
    output: str | os.PathLike,
    split: str | None = None,
    token_column: str | None = None,
    cell_type_column: str | None = None,
    obs_columns: Sequence[str] | str | None = "all",
    overwrite: bool = False,
    vocabulary: Any = None,
    chunk_size: int | None = None,
) -> CellCorpus:
    """Import a ``save_to_disk`` folder of Geneformer token ids as a corpus at ``output``.

    ``split`` picks one split of a DatasetDict folder; ``token_column`` / ``cell_type_column``
    default to the first of :data:`TOKEN_COLUMNS` / :data:`CELL_TYPE_COLUMNS` present;
    ``obs_columns`` limits the kept columns (``"all"``: every scalar column).
    """
    from lightning_langcell.tokenization import GeneVocabulary

    vocabulary = vocabulary or GeneVocabulary.bundled()
    folder = dataset_folder(path, split)
    source = HFDatasetSource(folder)
    plan = import_plan(source, token_column, cell_type_column, obs_columns)
    target = Path(output)
    _, replace = _existing_output(target, overwrite, append=False)
    shards = [{"path": str(p.resolve()), "bytes": p.stat().st_size, DIGEST: _file_digest(p)} for p in source.files]
    provenance = {"path": str(folder.resolve()), "format": "huggingface_datasets", "split": split,
                  "shards": shards, "bytes": sum(s["bytes"] for s in shards), DIGEST: None,
                  "features": source.features.to_dict(), **{k: plan[k] for k in
                  ("token_column", "cell_type_column", "length_column", "skipped_columns")}}
    settings = {"vocabulary_checksum": vocabulary.checksum, "vocab_size": len(vocabulary),
                "tokenizer_settings": import_settings(vocabulary)}
    columns = [(entry["stored_as"], entry["kind"]) for entry in plan["obs"]]

    def fill(writer) -> None:
        code = writer.add_source(provenance)
        n_rows = 0
        for first, batch in source.batches(chunk_size or IMPORT_CHUNK_CELLS):
            genes, lengths = _chunk_tokens(batch, plan, first, vocabulary)
            rows = np.arange(first, first + batch.num_rows, dtype=np.int64)
            names = (batch.column(plan["obs_name_column"]).to_pandas().astype(str).tolist()
                     if plan["obs_name_column"] else [str(row) for row in rows])
            writer.add_cells(genes, lengths, _chunk_obs(batch, plan, source.features),
                             np.full(batch.num_rows, code), rows, names)
            n_rows += batch.num_rows
        if n_rows == 0:
            raise LangCellInputError(f"{folder} holds 0 rows.", "Import a dataset that holds cells.")
        writer.sources[code].update(n_cells=n_rows, n_skipped=0, tokenized=_now(), report=None)

    return _write(target, replace, settings, columns, fill)


# ---------------------------------------------------------------------- export
def _export_features(corpus: CellCorpus, columns: Sequence[str]) -> Any:
    """Features of the exported dataset: the imported dataset's own where it came from one."""
    datasets = _hf()
    original = {}
    if len(corpus.sources) == 1 and corpus.sources[0].get("features"):
        original = datasets.Features.from_dict(corpus.sources[0]["features"])
    renamed = _original_names(corpus)
    token_name = renamed.get("input_ids", "input_ids")
    features = {"input_ids": original.get(token_name, datasets.Sequence(datasets.Value("int32"))),
                "length": original.get(LENGTH_COLUMN, datasets.Value("int64"))}
    for name in columns:
        own = original.get(renamed.get(name, name))
        if own is None:
            kind = corpus.column_kind(name)
            own = datasets.Value("float64") if kind == "numeric" else datasets.Value("string")
        features[name] = own
    return datasets.Features(features)


def _original_names(corpus: CellCorpus) -> dict[str, str]:
    """Corpus name → the column name of the one imported dataset it came from (else empty)."""
    if len(corpus.sources) != 1 or corpus.sources[0].get("format") != "huggingface_datasets":
        return {}
    source = corpus.sources[0]
    names = {"input_ids": source["token_column"]}
    if source.get("cell_type_column"):
        names["cell_type"] = source["cell_type_column"]
    return names


def _cls_id(corpus: CellCorpus) -> int:
    """The ``<cls>`` id of the corpus' vocabulary (the bundled one's; another is refused)."""
    from lightning_langcell.tokenization import GeneVocabulary

    vocabulary = GeneVocabulary.bundled()
    if corpus.vocabulary_checksum != vocabulary.checksum:
        raise LangCellInputError(
            f"Corpus {corpus.path} uses another gene vocabulary than the bundled one: its <cls> id is not known here.",
            "Export without <cls> (with_cls=False, the default).",
        )
    return vocabulary.cls_id


def _export_table(corpus: CellCorpus, start: int, stop: int, columns: Sequence[str], with_cls: bool,
                  features: Any) -> Any:
    """One pyarrow table of cells ``start:stop`` in the exported schema."""
    import pyarrow as pa

    offsets = np.asarray(corpus.offsets[start : stop + 1])
    tokens = np.asarray(corpus.tokens[offsets[0] : offsets[-1]], dtype=np.int64)
    lengths = np.diff(offsets)
    relative = offsets - offsets[0]
    if with_cls:
        tokens = np.insert(tokens, relative[:-1], _cls_id(corpus))
        relative = relative + np.arange(len(relative))
        lengths = lengths + 1
    lists = pa.ListArray.from_arrays(pa.array(relative.astype(np.int32)), pa.array(tokens))
    arrays = {"input_ids": lists, "length": pa.array(lengths)}
    for name in columns:
        values = corpus.column(name, start, stop)
        arrays[name] = pa.array(np.asarray(values, dtype=object) if corpus.column_kind(name) != "numeric" else values,
                                from_pandas=True)
    table = pa.table(arrays)
    return _hf().table.table_cast(table, features.arrow_schema) if features is not None else table


def export_hf_dataset(
    corpus: str | os.PathLike | CellCorpus,
    output: str | os.PathLike,
    with_cls: bool = False,
    provenance: bool = False,
    original_names: bool = True,
    overwrite: bool = False,
    chunk_size: int = 8192,
    max_shard_size: str = "500MB",
) -> Path:
    """Write a corpus as a ``save_to_disk`` folder that ``datasets.load_from_disk`` opens.

    Columns: ``input_ids`` (gene token ids; with ``with_cls`` prefixed by ``<cls>`` as in
    LangCell's tokenized sets; default without, as in Geneformer's datasets and Genecorpus-30M),
    ``length`` (ids per cell, ``<cls>`` included when present) and every obs column.
    ``provenance`` adds ``source_file``, ``source_index`` and ``obs_name``. ``original_names``:
    a corpus imported from one dataset gets that dataset's column names and features back.
    """
    datasets = _hf()
    import pyarrow as pa

    corpus = corpus if isinstance(corpus, CellCorpus) else CellCorpus(corpus)
    target = Path(output)
    if os.path.lexists(target) and not (overwrite and is_hf_dataset_dir(target)) and any(Path(target).iterdir()):
        raise LangCellInputError(
            f"Output {target} exists" + (" and is not a Hugging Face dataset folder." if overwrite else "."),
            "Choose another output path" + ("." if overwrite else ", or pass --overwrite to replace a dataset folder."),
        )
    columns = [name for name in corpus.columns if provenance or name not in RESERVED_COLUMNS]
    renamed = _original_names(corpus) if original_names else {}
    features = _export_features(corpus, columns) if original_names else None
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.arrow-", dir=target.parent if target.parent.exists() else None))
    try:
        arrow_path = staging / "cells.arrow"
        schema = features.arrow_schema if features is not None else None
        writer = None
        with pa.OSFile(str(arrow_path), "wb") as sink:
            for start in range(0, len(corpus), chunk_size):
                table = _export_table(corpus, start, min(start + chunk_size, len(corpus)), columns, with_cls, features)
                if writer is None:
                    writer = pa.ipc.new_stream(sink, schema or table.schema)
                writer.write_table(table)
            writer.close()
        dataset = datasets.Dataset.from_file(str(arrow_path))
        if renamed:
            dataset = dataset.rename_columns({k: v for k, v in renamed.items() if k != v and k in dataset.column_names})
        with atomic_directory(target, overwrite=True) as tmp:
            dataset.save_to_disk(str(tmp), max_shard_size=max_shard_size)
        del dataset
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def export_command(corpus: str, output: str, with_cls: bool = False, provenance: bool = False,
                   original_names: bool = True, overwrite: bool = False) -> dict:
    """``python -m lightning_langcell export CORPUS OUTPUT``: a corpus as a Hugging Face dataset folder.

    Args:
        corpus: corpus directory (written by ``tokenize``).
        output: folder to write with ``save_to_disk`` (opens with ``datasets.load_from_disk``).
        with_cls: prefix every ``input_ids`` with ``<cls>`` (LangCell's tokenized sets); default
            without (Geneformer-style, Genecorpus-30M).
        provenance: also write ``source_file``, ``source_index`` and ``obs_name``.
        original_names: a corpus imported from one dataset gets its column names and features back.
        overwrite: replace an existing dataset folder.
    """
    started = time.perf_counter()
    written = export_hf_dataset(corpus, output, with_cls=with_cls, provenance=provenance,
                                original_names=original_names, overwrite=overwrite)
    summary = {"written": str(written), "n_cells": len(CellCorpus(corpus)), "with_cls": with_cls,
               "seconds": round(time.perf_counter() - started, 3)}
    print(f"Hugging Face dataset {written}: {summary['n_cells']:,} cells in {summary['seconds']:.1f} s")
    return summary
