"""Write tokenized-cell corpora: tokenize .h5ad files, append to or merge corpora, cache keys.

Everything is streamed chunk by chunk into a temporary directory beside the output, which is
renamed into place only when complete (:func:`lightning_langcell.io_utils.atomic_directory`).
Memory is bounded by one chunk plus the distinct values of the categorical columns.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from lightning_langcell.data.corpus import (
    DIGEST,
    FORMAT_NAME,
    FORMAT_VERSION,
    RESERVED_COLUMNS,
    CellCorpus,
    file_digest,
    is_corpus,
)
from lightning_langcell.data.corpus_store import (
    CorpusArraysWriter,
    input_obs_kinds,
    json_default,
    remove_stale_temporaries,
    writer_lock,
)
from lightning_langcell.errors import CorpusError, LangCellInputError, shorten
from lightning_langcell.io_utils import atomic_directory

DEFAULT_OBS_COLUMNS = (
    "cell_type",
    "cell_type_ontology_term_id",
    "tissue",
    "tissue_ontology_term_id",
    "disease",
    "disease_ontology_term_id",
    "development_stage",
    "development_stage_ontology_term_id",
    "batch",
    "donor_id",
    "donor",
)
COPY_CHUNK_CELLS = 8192
# Tokenizer settings that do not change the tokens (excluded from comparisons and cache keys).
NON_SEMANTIC_SETTINGS = ("chunk_size",)
SOMA_QUERY_KEYS = ("census_version", "organism", "value_filter", "measurement", "layer", "var_column")


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _semantic_settings(settings: dict) -> dict:
    """Tokenizer settings as plain JSON, without the keys that do not change tokens."""
    plain = json.loads(json.dumps(settings, sort_keys=True, default=json_default))
    return {key: value for key, value in plain.items() if key not in NON_SEMANTIC_SETTINGS}


_DIGESTS: dict[tuple, str] = {}


def _file_digest(path: str | os.PathLike) -> str:
    """Content digest of a file, remembered for this process while its size and mtime are unchanged."""
    stat = os.stat(path)
    key = (os.path.realpath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = file_digest(path)
    return _DIGESTS[key]


def _input_list(inputs: Any) -> list:
    """Inputs as a list of paths (str) or in-memory AnnData objects; missing files refused."""
    items = [inputs] if isinstance(inputs, (str, os.PathLike)) or hasattr(inputs, "obs") else list(inputs)
    if not items:
        raise LangCellInputError("No input files were given.", "Pass one or more .h5ad files.")
    missing = [str(item) for item in items if not hasattr(item, "obs") and not Path(item).is_file()]
    if missing:
        raise LangCellInputError(f"Input file(s) not found: {missing}.", "Check the paths.")
    return [item if hasattr(item, "obs") else str(item) for item in items]


def corpus_cache_key(inputs: Any, tokenizer: Any, obs_columns: Sequence[str] | str | None = None) -> str:
    """Hex sha256 naming the corpus of ``inputs``: file contents (streamed, in order), the
    tokenizer settings that change tokens, the kept obs columns and the corpus format version."""
    header = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "tokenizer": _semantic_settings(tokenizer.settings()),
        "obs_columns": obs_columns if isinstance(obs_columns, (str, type(None))) else list(obs_columns),
    }
    digest = hashlib.sha256(json.dumps(header, sort_keys=True).encode())
    for item in _input_list(inputs):
        if hasattr(item, "obs"):
            raise LangCellInputError(
                "corpus_cache_key needs file paths, not in-memory AnnData objects.",
                "Save the AnnData with `adata.write_h5ad(path)` first.",
            )
        digest.update(_file_digest(item).encode())
    return digest.hexdigest()


# ------------------------------------------------------------------------ checks
def _check_output_parent(target: Path) -> None:
    """The nearest existing folder above ``target`` must be a writable directory."""
    parent = Path(os.path.abspath(target)).parent
    while not os.path.lexists(parent) and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise CorpusError(
            f"Cannot create output {target}: {parent} is not a directory.",
            "Choose an output path inside a directory (e.g. --output ./corpus).",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise CorpusError(
            f"Cannot create output {target}: directory {parent} is not writable by this user.",
            "Choose an output path in a directory you can write to, or fix its permissions.",
        )


def _existing_output(target: Path, overwrite: bool, append: bool) -> tuple[CellCorpus | None, bool]:
    """(corpus to append to, whether the target is replaced). Refuses to clobber non-corpora."""
    if overwrite and append:
        raise LangCellInputError("overwrite and append were both requested.", "Choose one of them.")
    if not os.path.lexists(target):
        _check_output_parent(target)
        return None, False
    if not target.is_dir():
        raise CorpusError(f"Output {target} exists and is not a directory.", "Choose another output path.")
    if not any(target.iterdir()):
        return None, True
    if not is_corpus(target):
        raise CorpusError(
            f"Output {target} exists and is not a tokenized-cell corpus; it is never overwritten.",
            "Choose another output path, or remove that directory yourself.",
        )
    if append:
        return CellCorpus(target, check_ids=False), True  # every id is checked again on writing
    if not overwrite:
        raise CorpusError(
            f"Corpus {target} already exists.",
            "Pass overwrite=True (--overwrite) to replace it or append=True (--append) to add files.",
        )
    return None, True


def _check_compatible(manifests: Iterable[dict], reference: dict, what: str) -> None:
    """Refuse corpora whose vocabulary or tokenizer settings differ from ``reference``'s."""
    for manifest in manifests:
        if manifest["vocabulary_checksum"] != reference["vocabulary_checksum"]:
            raise CorpusError(
                f"{what}: gene vocabularies differ (checksum {manifest['vocabulary_checksum'][:12]} "
                f"vs {reference['vocabulary_checksum'][:12]}); token ids would not mean the same genes.",
                "Tokenize every input with the same gene vocabulary.",
            )
        ours = _semantic_settings(manifest["tokenizer_settings"])
        theirs = _semantic_settings(reference["tokenizer_settings"])
        if ours != theirs:
            keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            raise CorpusError(
                f"{what}: tokenizer settings differ in {keys}.",
                "Tokenize every input with the same tokenizer settings.",
            )


def _check_no_duplicate_sources(sources: Sequence[dict]) -> None:
    """Refuse sources with the same content digest (sources without a digest are skipped)."""
    seen: dict[str, str] = {}
    for source in sources:
        digest = source.get(DIGEST)
        if digest and digest in seen:
            raise CorpusError(
                f"{source['path']} has the same content as {seen[digest]}: its cells would appear twice.",
                "Give each input file once.",
            )
        if digest:
            seen[digest] = source["path"]


def _merge_kinds(kinds: Sequence[dict[str, str]], wanted: Sequence[str] | None) -> list[tuple[str, str]]:
    """(column, kind) for the ``wanted`` columns present in any input (all when None).

    A column is numeric only when every input that has it stores it as numbers.
    """
    order: list[str] = []
    for table in kinds:
        order += [name for name in table if name not in order]
    names = order if wanted is None else [name for name in dict.fromkeys(wanted) if name in order]
    columns = []
    for name in names:
        if name in RESERVED_COLUMNS:
            continue
        found = {table[name] for table in kinds if name in table}
        columns.append((name, "numeric" if found == {"numeric"} else "categorical"))
    return columns


def _wanted_columns(obs_columns: Sequence[str] | str | None, kinds: Sequence[dict[str, str]]) -> list[str] | None:
    if obs_columns == "all":
        return None
    if isinstance(obs_columns, str):
        obs_columns = [obs_columns]
    extra = list(obs_columns or [])
    reserved = [name for name in extra if name in RESERVED_COLUMNS]
    if reserved:
        raise LangCellInputError(
            f"obs column(s) {reserved} clash with the corpus' own columns {list(RESERVED_COLUMNS)}.",
            "Rename those obs columns before tokenizing.",
        )
    absent = [name for name in extra if not any(name in table for table in kinds)]
    if absent:
        raise LangCellInputError(
            f"obs column(s) {absent} are in none of the inputs (they have: {sorted(set().union(*kinds))[:20]}).",
            "Check the column names in adata.obs; with the data module, name an existing column in "
            "data.label_column, or set it to null when the cells have no labels.",
        )
    return list(DEFAULT_OBS_COLUMNS) + extra


def _token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype("<i2") if vocab_size <= np.iinfo(np.int16).max else np.dtype("<i4")


# ----------------------------------------------------------------------- writing
def _copy_corpus(writer: CorpusArraysWriter, corpus: CellCorpus) -> None:
    """Append every cell of ``corpus`` to ``writer`` in chunks, without re-tokenizing."""
    code_offset = len(writer.sources)
    for source in corpus.sources:
        provenance = {key: value for key, value in source.items() if key not in ("name", "first_cell")}
        writer.add_source(provenance, first_cell=writer.n_cells + source["first_cell"])
    offsets = corpus.offsets
    for start in range(0, len(corpus), COPY_CHUNK_CELLS):
        stop = min(start + COPY_CHUNK_CELLS, len(corpus))
        columns = {name: corpus.column(name, start, stop) for name in writer.obs_columns if name in corpus.columns}
        writer.add_cells(
            corpus.tokens[offsets[start] : offsets[stop]],
            np.diff(np.asarray(offsets[start : stop + 1])),
            columns,
            source_codes=corpus.column("source_file", start, stop).codes.astype(np.int64) + code_offset,
            rows=corpus.column("source_index", start, stop),
            names=corpus.column("obs_name", start, stop),
        )


def _tokenize_source(writer: CorpusArraysWriter, tokenizer: Any, item: Any, scan: dict, chunk_size: int | None) -> None:
    """Tokenize one input chunk by chunk into ``writer`` and record its provenance."""
    code = writer.add_source(scan["provenance"])
    n_cells = 0
    for chunk in tokenizer.iter_chunks(item, chunk_size=chunk_size):
        lengths = getattr(chunk, "lengths", None)
        if lengths is None:  # a tokenizer giving only the per-cell list
            lengths = np.array([len(tokens) for tokens in chunk.tokens], dtype=np.int64)
        flat = getattr(chunk, "flat_tokens", None)
        if flat is None:
            flat = np.concatenate(chunk.tokens) if len(chunk.tokens) else np.zeros(0, dtype=np.int32)
        columns = {name: chunk.obs[name] for name in writer.obs_columns if name in chunk.obs.columns}
        writer.add_cells(
            flat, lengths, columns, np.full(len(lengths), code), np.asarray(chunk.rows), chunk.obs.index
        )
        n_cells += len(lengths)
    report = getattr(tokenizer, "report", None)
    if n_cells == 0 and scan["n_rows"]:
        dropped = getattr(report, "cells_dropped_empty", 0)
        raise LangCellInputError(
            f"No cell of {shorten(scan['provenance'].get('path') or '<AnnData>')} is left to tokenize: "
            f"{scan['n_rows']} cell(s), {dropped} without any vocabulary gene (dropped), the rest skipped by "
            "obs['filter_pass'].",
            "Check obs['filter_pass'], that X holds the counts (not an empty layer), and the gene identifiers.",
        )
    writer.sources[code].update(
        n_cells=n_cells,
        n_skipped=scan["n_rows"] - n_cells,
        tokenized=_now(),
        report=report.as_dict() if hasattr(report, "as_dict") else None,
    )


def _write(target: Path, replace: bool, vocabulary: dict, columns: list[tuple[str, str]], fill) -> CellCorpus:
    """Run ``fill(writer)`` into a fresh corpus at ``target``, atomically."""
    remove_stale_temporaries(target)
    try:
        with atomic_directory(target, overwrite=replace) as tmp, writer_lock(tmp):
            writer = CorpusArraysWriter(tmp, _token_dtype(vocabulary["vocab_size"]), columns, vocabulary["vocab_size"])
            try:
                fill(writer)
            except BaseException:
                writer.discard()
                raise
            writer.finish({"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "created": _now(), **vocabulary})
    except FileExistsError as error:
        raise CorpusError(f"{target} was created by someone else while writing.", "Run again.") from error
    return CellCorpus(target, check_ids=False)  # the writer checked every id


def tokenize_to_corpus(
    inputs: Any,
    output: str | os.PathLike,
    tokenizer: Any = None,
    obs_columns: Sequence[str] | str | None = None,
    overwrite: bool = False,
    append: bool = False,
    chunk_size: int | None = None,
) -> CellCorpus:
    """Tokenize .h5ad files (or AnnData objects) into a corpus directory ``output``.

    ``obs_columns``: extra obs columns to keep besides :data:`DEFAULT_OBS_COLUMNS` (those are
    kept when present), or ``"all"``. ``append=True`` adds the inputs to the existing corpus
    (same tokenizer settings required) in a new directory swapped in atomically.
    """
    if tokenizer is None:
        from lightning_langcell.tokenization import CellTokenizer

        tokenizer = CellTokenizer()
    items = _input_list(inputs)
    target = Path(output)
    existing, replace = _existing_output(target, overwrite, append)
    vocabulary = {
        "vocabulary_checksum": tokenizer.vocabulary.checksum,
        "vocab_size": len(tokenizer.vocabulary),
        "tokenizer_settings": _semantic_settings(tokenizer.settings()),
    }
    scans = [input_obs_kinds(item, index, _file_digest) for index, item in enumerate(items)]
    empty_inputs = [str(item if isinstance(item, str) else "<AnnData>") for item, scan in zip(items, scans)
                    if scan["n_rows"] == 0]
    if empty_inputs:
        raise LangCellInputError(f"Input(s) with 0 cells: {shorten(empty_inputs)}.",
                                 "Pass files that hold cells; check the filtering step that wrote them.")
    kinds = [scan["kinds"] for scan in scans]
    if existing is not None:
        _check_compatible([vocabulary], existing.manifest, f"Appending to {target}")
        kinds.insert(0, {name: existing.column_kind(name) for name in existing.columns})
    wanted = _wanted_columns(obs_columns, kinds)
    if existing is not None and wanted is not None:
        wanted = list(kinds[0]) + wanted
    _check_no_duplicate_sources((existing.sources if existing else []) + [scan["provenance"] for scan in scans])
    columns = _merge_kinds(kinds, wanted)

    def fill(writer: CorpusArraysWriter) -> None:
        if existing is not None:
            _copy_corpus(writer, existing)
        for item, scan in zip(items, scans):
            _tokenize_source(writer, tokenizer, item, scan, chunk_size)

    return _write(target, replace, vocabulary, columns, fill)


def merge_corpora(
    corpus_dirs: Sequence[str | os.PathLike], output: str | os.PathLike, overwrite: bool = False
) -> CellCorpus:
    """Concatenate corpora (in order) into ``output`` without re-tokenizing.

    Refuses corpora with different vocabularies or tokenizer settings, or sharing an input file.
    """
    corpora = [CellCorpus(path) for path in corpus_dirs]
    if not corpora:
        raise LangCellInputError("No corpora to merge.", "Pass one or more corpus directories.")
    _check_compatible([corpus.manifest for corpus in corpora[1:]], corpora[0].manifest, "Merging corpora")
    _check_no_duplicate_sources([source for corpus in corpora for source in corpus.sources])
    target = Path(output)
    _, replace = _existing_output(target, overwrite, append=False)
    kinds = [{name: corpus.column_kind(name) for name in corpus.columns} for corpus in corpora]
    first = corpora[0].manifest
    vocabulary = {key: first[key] for key in ("vocabulary_checksum", "vocab_size", "tokenizer_settings")}

    def fill(writer: CorpusArraysWriter) -> None:
        for corpus in corpora:
            _copy_corpus(writer, corpus)

    return _write(target, replace, vocabulary, _merge_kinds(kinds, None), fill)


def tokenize_command(
    inputs: list[str],
    output: str,
    overwrite: bool = False,
    append: bool = False,
    obs_columns: list[str] | None = None,
    max_genes: int = 2048,
    chunk_size: int | None = None,
    assume_counts: bool = False,
    keep_empty: bool = False,
    min_gene_coverage: float = 0.1,
    split: str | None = None,
    token_column: str | None = None,
    cell_type_column: str | None = None,
    source: str = "auto",
    value_filter: str | None = None,
    measurement: str = "RNA",
    layer: str = "raw",
    var_column: str = "feature_id",
    census_version: str | None = None,
    organism: str = "homo_sapiens",
) -> dict:
    """``python -m lightning_langcell tokenize FILES --output DIR``: tokenize, print and return a summary.

    Cells without any vocabulary gene are dropped (and counted) unless ``keep_empty``;
    inputs with fewer than ``min_gene_coverage`` of their genes in the vocabulary are refused.
    One Hugging Face dataset folder (``save_to_disk``) of Geneformer token ids is imported as is
    (``split``, ``token_column``, ``cell_type_column``; see :mod:`lightning_langcell.data.hf_datasets`).
    One TileDB-SOMA experiment (a local folder, a URI, or ``census`` with ``census_version``; or
    any input with ``source="soma"``) is queried with ``value_filter`` over obs and tokenized from
    ``measurement``/``layer`` with genes from var ``var_column`` (see :mod:`lightning_langcell.data.soma`);
    ``organism`` picks the Census experiment.

    Args:
        source: ``auto`` (detect .h5ad files, a dataset folder or a SOMA experiment) or ``soma``.
        value_filter: SOMA obs filter, e.g. "is_primary_data == True and tissue_general == 'blood'".
        measurement: SOMA measurement to read (Census: RNA).
        layer: SOMA X layer of raw counts (Census: raw).
        var_column: SOMA var column of Ensembl gene ids (Census: feature_id).
        census_version: open the hosted CELLxGENE Census of this version (input ``census``; needs
            the [census] extra and internet).
        organism: Census experiment (homo_sapiens or mus_musculus).
    """
    from lightning_langcell.data.hf_datasets import import_hf_dataset, is_hf_dataset_dir
    from lightning_langcell.tokenization import CellTokenizer

    started = time.perf_counter()
    if source not in ("auto", "soma"):
        raise LangCellInputError(f"--source must be auto or soma, not {source!r}.",
                                 "Use --source auto (detect the input's kind) or --source soma.")
    if source == "soma" or (source == "auto" and (census_version is not None or _is_soma(inputs))):
        return _tokenize_soma_command(inputs, output, started, append, value_filter=value_filter,
                                      measurement=measurement, layer=layer, var_column=var_column,
                                      census_version=census_version, organism=organism, obs_columns=obs_columns,
                                      overwrite=overwrite, chunk_size=chunk_size,
                                      tokenizer=CellTokenizer(max_genes=max_genes, assume_counts=assume_counts,
                                                              keep_empty=keep_empty,
                                                              min_gene_coverage=min_gene_coverage))
    hf_inputs = [path for path in inputs if is_hf_dataset_dir(path)]
    if hf_inputs and (len(inputs) > 1 or append):
        raise LangCellInputError(
            f"{hf_inputs[0]} is a Hugging Face dataset folder: it is imported alone, not with other inputs or --append.",
            "Import it into its own corpus, then combine corpora with `merge_corpora`.",
        )
    if hf_inputs:
        corpus = import_hf_dataset(hf_inputs[0], output, split=split, token_column=token_column,
                                   cell_type_column=cell_type_column, obs_columns=obs_columns or "all",
                                   overwrite=overwrite, chunk_size=chunk_size)
    else:
        tokenizer = CellTokenizer(max_genes=max_genes, assume_counts=assume_counts, keep_empty=keep_empty,
                                  min_gene_coverage=min_gene_coverage)
        corpus = tokenize_to_corpus(
            inputs, output, tokenizer, obs_columns=obs_columns, overwrite=overwrite, append=append,
            chunk_size=chunk_size,
        )
    summary = {
        "output": str(corpus.path),
        "n_cells": len(corpus),
        "n_tokens": int(corpus.manifest["n_tokens"]),
        "columns": corpus.columns,
        "vocabulary_checksum": corpus.vocabulary_checksum,
        "sources": [_source_summary(source) for source in corpus.sources],
        "seconds": round(time.perf_counter() - started, 3),
    }
    print(
        f"Corpus {summary['output']}: {summary['n_cells']:,} cells, {summary['n_tokens']:,} gene tokens "
        f"from {len(summary['sources'])} file(s) in {summary['seconds']:.1f} s"
    )
    for source in summary["sources"]:
        if hf_inputs:
            print(f"  {source['path']}: {source['n_cells']:,} cells imported (token ids as given, <cls> stripped)")
            continue
        print(
            f"  {source['path']}: {source['n_cells']:,} cells kept, {source['n_skipped']:,} skipped "
            f"({source['n_empty_dropped']:,} without any vocabulary gene); "
            f"{source['gene_coverage']:.1%} of its genes in the vocabulary"
        )
    print(f"  metadata columns: {', '.join(summary['columns'])}")
    return summary


def _is_soma(inputs: Sequence[str]) -> bool:
    from lightning_langcell.data.soma import is_soma_input

    return any(is_soma_input(path) for path in inputs)


def _tokenize_soma_command(inputs: Sequence[str], output: str, started: float, append: bool, **options: Any) -> dict:
    """The tokenize command for one SOMA experiment: tokenize, print and return the summary."""
    from lightning_langcell.data.soma import tokenize_soma

    if len(inputs) != 1 or append:
        raise LangCellInputError(
            f"A TileDB-SOMA experiment is tokenized alone, not with other inputs or --append (got {list(inputs)}).",
            "Tokenize it into its own corpus, then combine corpora with `merge_corpora`.",
        )
    corpus = tokenize_soma(inputs[0], output, **options)
    source = corpus.sources[0]
    summary = {"output": str(corpus.path), "n_cells": len(corpus), "n_tokens": int(corpus.manifest["n_tokens"]),
               "columns": corpus.columns, "vocabulary_checksum": corpus.vocabulary_checksum,
               "sources": [_source_summary(source)], "query": {key: source[key] for key in SOMA_QUERY_KEYS},
               "seconds": round(time.perf_counter() - started, 3)}
    print(f"Corpus {summary['output']}: {summary['n_cells']:,} cells, {summary['n_tokens']:,} gene tokens from "
          f"SOMA experiment {source['path']} in {summary['seconds']:.1f} s")
    print(f"  query: {summary['query']}; {source['n_obs_matched']:,} cells matched, {source['n_skipped']:,} "
          "skipped (no vocabulary gene, or filter_pass)")
    print(f"  metadata columns: {', '.join(summary['columns'])}")
    return summary


def _source_summary(source: dict) -> dict:
    """What the tokenize command reports of one input (from its manifest provenance)."""
    report = source.get("report") or {}
    return {
        "path": source["path"],
        "n_cells": source["n_cells"],
        "n_skipped": source["n_skipped"],
        "n_empty_dropped": int(report.get("cells_dropped_empty", 0)),  # imported datasets: no report
        "gene_coverage": float(report.get("gene_coverage", float("nan"))),
    }
