"""TileDB-SOMA experiments (CELLxGENE Census or a local one) -> corpora, streamed by blocks of cells.

An obs ``value_filter`` selects the cells (their ``soma_joinid``s, in ascending order); X of one
measurement and layer (``raw``: Census' raw counts) is read one block of joinids at a time and
tokenized by the same :class:`~lightning_langcell.tokenization.CellTokenizer` as an .h5ad, with
the genes named by a var column (``feature_id``: Ensembl ids). So the same cells give the same
tokens and obs columns (ontology term ids included, hence the same cell texts) as from .h5ad.
Memory is bounded by one block. The query is recorded in the corpus manifest as the source.

Needs the optional extra ``[census]`` (``tiledbsoma``; ``cellxgene_census`` to open the hosted
Census by version), imported only here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd
import scipy.sparse as sp

from lightning_langcell.data.corpus import DIGEST, CellCorpus
from lightning_langcell.data.corpus_writer import (
    _existing_output,
    _merge_kinds,
    _now,
    _semantic_settings,
    _wanted_columns,
    _write,
)
from lightning_langcell.errors import LangCellInputError

CENSUS_EXTRA = "pip install 'lightning_langcell[census]'"
URI_SCHEMES = ("soma://", "s3://", "tiledb://", "gs://", "az://", "http://", "https://")
CENSUS_INPUT = "census"
FILTER_PASS_COLUMN = "filter_pass"  # obs columns the tokenizer reads besides the kept ones
OBS_NAME_COLUMN = "obs_id"  # where tiledbsoma.io.from_h5ad keeps the obs index
SUMMED_REPORT_FIELDS = ("cells_seen", "cells_tokenized", "cells_skipped_filter_pass", "cells_empty",
                        "cells_dropped_empty", "cells_truncated")


def _tiledbsoma():
    """The ``tiledbsoma`` package, or a clear error naming the extra that installs it."""
    try:
        import tiledbsoma
    except ImportError as error:
        raise LangCellInputError(f"Reading a TileDB-SOMA experiment needs the `tiledbsoma` package ({error}).",
                                 f"Install the extra: {CENSUS_EXTRA}") from error
    return tiledbsoma


def is_soma_input(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a SOMA experiment: a URI, ``census``, or a local TileDB group folder
    with ``obs`` and ``ms`` (checked without importing tiledbsoma)."""
    text = str(path)
    if text == CENSUS_INPUT or text.startswith(URI_SCHEMES):
        return True
    folder = Path(text)
    return folder.is_dir() and (folder / "__tiledb_group.tdb").exists() and (folder / "obs").is_dir() \
        and (folder / "ms").is_dir()


def open_experiment(uri: str, census_version: str | None = None, organism: str = "homo_sapiens") -> tuple[Any, Any]:
    """``(experiment, handle to close)``: a SOMA experiment at ``uri``, or with ``census_version``
    (or ``uri == "census"``) the hosted Census' ``census_data[organism]`` via ``cellxgene_census``."""
    soma = _tiledbsoma()
    if census_version is not None or uri == CENSUS_INPUT:
        try:
            import cellxgene_census
        except ImportError as error:
            raise LangCellInputError(
                f"Opening the hosted CELLxGENE Census (census_version={census_version!r}) needs the "
                f"`cellxgene_census` package ({error}).",
                f"Install the extra: {CENSUS_EXTRA}; or pass the folder or URI of a SOMA experiment without "
                "--census-version.",
            ) from error
        census = cellxgene_census.open_soma(census_version=census_version or "stable")
        data = census["census_data"]
        if organism not in data:
            census.close()
            raise LangCellInputError(f"The Census has no experiment {organism!r} (it has {sorted(data.keys())}).",
                                     "Pass --organism homo_sapiens or --organism mus_musculus.")
        return data[organism], census
    try:
        experiment = soma.Experiment.open(uri)
    except (soma.DoesNotExistError, soma.SOMAError, ValueError, TypeError) as error:
        raise LangCellInputError(f"{uri} could not be opened as a TileDB-SOMA experiment ({error}).",
                                 "Pass the folder or URI of a SOMA Experiment (e.g. written by "
                                 "tiledbsoma.io.from_h5ad), or `census` with --census-version.") from error
    return experiment, experiment


def _arrow_kind(arrow_type: Any) -> str:
    """``numeric`` for numbers and booleans (as from .h5ad obs), else ``categorical``."""
    import pyarrow as pa

    value_type = arrow_type.value_type if pa.types.is_dictionary(arrow_type) else arrow_type
    numeric = pa.types.is_integer(value_type) or pa.types.is_floating(value_type) or pa.types.is_boolean(value_type)
    return "numeric" if numeric and not pa.types.is_dictionary(arrow_type) else "categorical"


def _pick(mapping: Any, name: str, what: str, option: str) -> Any:
    """``mapping[name]``, or an error listing what there is."""
    if name not in mapping:
        raise LangCellInputError(f"The experiment has no {what} {name!r} (it has {sorted(mapping.keys())}).",
                                 f"Pass {option} with one of those.")
    return mapping[name]


class SomaQuery:
    """Cells of an open experiment selected by an obs ``value_filter``, read by blocks of joinids."""

    def __init__(self, experiment: Any, measurement: str = "RNA", layer: str = "raw",
                 value_filter: str | None = None, var_column: str = "feature_id"):
        self.experiment = experiment
        ms = _pick(experiment.ms, measurement, "measurement", "--measurement")
        self.matrix = _pick(ms.X, layer, "X layer", "--layer")
        var_names = ms.var.schema.names
        if var_column not in var_names:
            raise LangCellInputError(f"var of {measurement!r} has no column {var_column!r} (it has {var_names}).",
                                     "Pass --var-column naming the column of Ensembl gene ids.")
        var = ms.var.read(column_names=["soma_joinid", var_column]).concat().to_pandas()
        self.var = pd.DataFrame(index=pd.Index(var[var_column].astype(str).to_numpy(), name=None))
        self.var_position = np.full(int(var["soma_joinid"].max()) + 1 if len(var) else 0, -1, dtype=np.int64)
        self.var_position[var["soma_joinid"].to_numpy()] = np.arange(len(var))
        schema = experiment.obs.schema
        self.obs_kinds = {name: _arrow_kind(schema.field(name).type) for name in schema.names if name != "soma_joinid"}
        try:
            joinids = experiment.obs.read(value_filter=value_filter, column_names=["soma_joinid"]).concat()
        except Exception as error:  # tiledbsoma raises several types for a bad filter
            raise LangCellInputError(
                f"The obs value filter {value_filter!r} could not be applied ({error}).",
                f"Write it over obs columns ({sorted(self.obs_kinds)[:30]}), e.g. "
                "\"is_primary_data == True and tissue_general == 'blood'\".",
            ) from error
        self.joinids = np.sort(joinids.column("soma_joinid").to_numpy())

    def blocks(self, size: int, columns: Sequence[str]) -> Iterator[tuple[np.ndarray, Any]]:
        """``(joinids, AnnData)`` of ``size`` selected cells at a time: X over every var gene, obs
        ``columns`` (those absent are skipped)."""
        import anndata

        name_column = [OBS_NAME_COLUMN] if OBS_NAME_COLUMN in self.obs_kinds else []
        columns = [name for name in columns if name in self.obs_kinds]
        wanted = list(dict.fromkeys(["soma_joinid", *columns, *name_column]))
        for start in range(0, len(self.joinids), size):
            block = self.joinids[start : start + size]
            obs = self.experiment.obs.read(coords=(block,), column_names=wanted).concat().to_pandas()
            obs = obs.sort_values("soma_joinid")
            names = obs[OBS_NAME_COLUMN].astype(str) if name_column else obs["soma_joinid"].astype(str)
            obs.index = pd.Index(names.to_numpy(), name=None)
            table = self.matrix.read(coords=(block,)).tables().concat()
            rows = np.searchsorted(block, table.column("soma_dim_0").to_numpy())
            genes = self.var_position[table.column("soma_dim_1").to_numpy()]
            counts = sp.csr_matrix((table.column("soma_data").to_numpy(), (rows, genes)),
                                   shape=(len(block), len(self.var)))
            del table
            yield block, anndata.AnnData(X=counts, obs=obs[list(columns)], var=self.var)


def _sum_reports(total: dict | None, report: dict) -> dict:
    """Per-block tokenizer reports summed into one (gene mapping fields are the same in every block)."""
    if total is None:
        return dict(report)
    for key in SUMMED_REPORT_FIELDS:
        total[key] += report[key]
    return total


def tokenize_soma(
    uri: str,
    output: str | os.PathLike,
    value_filter: str | None = None,
    census_version: str | None = None,
    organism: str = "homo_sapiens",
    measurement: str = "RNA",
    layer: str = "raw",
    var_column: str = "feature_id",
    tokenizer: Any = None,
    obs_columns: Sequence[str] | str | None = None,
    overwrite: bool = False,
    chunk_size: int | None = None,
) -> CellCorpus:
    """Tokenize the cells of a SOMA experiment matching ``value_filter`` into a corpus at ``output``.

    ``uri``: a local experiment folder or URI, or ``"census"`` (with ``census_version``: the
    hosted Census' ``organism`` experiment). ``obs_columns`` as for :func:`tokenize_to_corpus`.
    Cells are read ``chunk_size`` (default the tokenizer's) at a time, in ``soma_joinid`` order;
    ``source_index`` is the joinid, ``obs_name`` the ``obs_id`` column when present, else the joinid.
    """
    if tokenizer is None:
        from lightning_langcell.tokenization import CellTokenizer

        tokenizer = CellTokenizer()
    target = Path(output)
    _, replace = _existing_output(target, overwrite, append=False)
    experiment, handle = open_experiment(str(uri), census_version, organism)
    with handle:
        query = SomaQuery(experiment, measurement, layer, value_filter, var_column)
        if len(query.joinids) == 0:
            raise LangCellInputError(f"No cell of {uri} matches the obs value filter {value_filter!r}.",
                                     "Loosen the filter (check column names and values in obs).")
        columns = _merge_kinds([query.obs_kinds], _wanted_columns(obs_columns, [query.obs_kinds]))
        settings = {"vocabulary_checksum": tokenizer.vocabulary.checksum, "vocab_size": len(tokenizer.vocabulary),
                    "tokenizer_settings": _semantic_settings(tokenizer.settings())}
        location = uri if census_version is None and str(uri) != CENSUS_INPUT else CENSUS_INPUT
        provenance = {"path": str(Path(uri).resolve()) if Path(str(uri)).is_dir() else str(location),
                      "format": "tiledbsoma", "bytes": None, DIGEST: None, "census_version": census_version,
                      "organism": organism if location == CENSUS_INPUT else None, "value_filter": value_filter,
                      "measurement": measurement, "layer": layer, "var_column": var_column,
                      "n_obs_matched": int(len(query.joinids))}

        def fill(writer) -> None:
            code = writer.add_source(provenance)
            report = None
            read = [name for name, _ in columns] + [tokenizer.n_counts_key, FILTER_PASS_COLUMN]
            for joinids, cells in query.blocks(chunk_size or tokenizer.chunk_size, read):
                for chunk in tokenizer.iter_chunks(cells, chunk_size=len(joinids)):
                    writer.add_cells(chunk.flat_tokens, chunk.lengths,
                                     {name: chunk.obs[name] for name in writer.obs_columns if name in chunk.obs},
                                     np.full(len(chunk.lengths), code), joinids[chunk.rows], chunk.obs.index)
                report = _sum_reports(report, tokenizer.report.as_dict())
            n_cells = report["cells_tokenized"]
            if n_cells == 0:
                raise LangCellInputError(f"None of the {len(query.joinids)} matching cells has a vocabulary gene "
                                         f"in layer {layer!r}.", "Check --layer (raw counts) and --var-column.")
            report["source"] = provenance["path"]
            writer.sources[code].update(n_cells=n_cells, n_skipped=len(query.joinids) - n_cells,
                                        tokenized=_now(), report=report)

        return _write(target, replace, settings, columns, fill)
