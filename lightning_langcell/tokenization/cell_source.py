"""Read a cells x genes counts matrix by chunks of rows, from an AnnData or an .h5ad path.

A path is read with h5py directly: ``obs`` and ``var`` are loaded, ``X`` is never loaded
whole when it is CSR or dense on disk, so memory is bounded by the chunk size (dense rows are
read 2^24 values at a time and kept as CSR). A CSC matrix cannot be read by rows cheaply: an
in-memory one is converted to CSR once; one on disk is loaded and converted (with a warning).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple

import h5py
import numpy as np
import scipy.sparse as sp

from lightning_langcell.errors import LangCellInputError, shorten

try:  # anndata >= 0.11
    from anndata.io import read_elem
except ImportError:  # pragma: no cover - anndata 0.10
    from anndata.experimental import read_elem


DENSE_PIECE = 1 << 24  # values of a dense X read at once (64 MiB of float32)


class RowChunk(NamedTuple):
    """CSR rows ``[start, stop)``: ``data`` (as stored), ``indices`` (gene columns), ``indptr`` (from 0)."""

    data: np.ndarray
    indices: np.ndarray
    indptr: np.ndarray


def _from_scipy(matrix: sp.spmatrix | sp.sparray) -> RowChunk:
    matrix = sp.csr_matrix(matrix)
    return RowChunk(matrix.data, matrix.indices, matrix.indptr.astype(np.int64))


def _without_chunk_cache(group: h5py.Group, name: str) -> h5py.Dataset:
    """``group[name]`` opened without HDF5's chunk cache: rows are read once, in order, so the
    cache would only add a copy."""
    access = h5py.h5p.create(h5py.h5p.DATASET_ACCESS)
    access.set_chunk_cache(0, 0, 1.0)
    return h5py.Dataset(h5py.h5d.open(group.id, name.encode(), dapl=access))


class CellSource:
    """``obs``, ``var``, ``shape`` and ``read_rows(start, stop) -> RowChunk`` of one input.

    Use as a context manager (closes the h5ad file). ``name`` is the path or ``"<AnnData>"``.
    Rows read from a CSR .h5ad land in buffers reused by the next ``read_rows`` call (no fresh
    allocation per chunk): use or copy a chunk before reading the next one.
    """

    def __init__(self, item: Any):
        self._file: h5py.File | None = None
        self._matrix: Any = None
        self._buffers: dict[str, np.ndarray] = {}
        if isinstance(item, (str, os.PathLike)):
            self.name = str(item)
            self._open_path(Path(item))
        elif hasattr(item, "obs") and hasattr(item, "var") and hasattr(item, "X"):
            self.name = "<AnnData>"
            self.obs, self.var = item.obs, item.var
            self._set_matrix(item.X, tuple(item.shape))
        else:
            raise LangCellInputError(
                f"Cannot tokenize a {type(item).__name__}.", "Pass an AnnData object or the path of an .h5ad file."
            )
        if self.shape != (len(self.obs), len(self.var)):
            raise LangCellInputError(
                f"{self.name}: X has shape {self.shape} but obs/var have {len(self.obs)}/{len(self.var)} rows.",
                "Repair the file: X must be cells x genes matching obs and var.",
            )

    # ------------------------------------------------------------------ opening
    def _open_path(self, path: Path) -> None:
        if not path.is_file():
            raise LangCellInputError(f"Input file {path} does not exist.", "Check the path (a .h5ad file).")
        fix = "Pass a complete .h5ad file (AnnData.write_h5ad); re-copy or re-download it if it was cut short."
        try:
            self._file = h5py.File(path, "r")
        except OSError as error:
            raise LangCellInputError(f"{path} is not a readable .h5ad (HDF5) file: truncated or another format ({error}).", fix) from error
        try:
            missing = [key for key in ("X", "obs", "var") if key not in self._file]
            if missing:
                raise LangCellInputError(f"{path} is HDF5 but not an AnnData .h5ad file (no {missing}).", fix)
            self.obs, self.var = read_elem(self._file["obs"]), read_elem(self._file["var"])
            self._set_matrix(self._file["X"], None)
        except LangCellInputError:
            self.close()
            raise
        except UnicodeDecodeError as error:
            where = _undecodable_element(self._file)
            self.close()
            raise LangCellInputError(
                f"{path}: {where} holds a string that is not valid UTF-8 ({shorten(error.object)}: {error.reason} "
                f"at byte {error.start}); .h5ad strings must be UTF-8.",
                "Re-encode that column's strings as UTF-8 and save the file again, e.g. in Python "
                "`raw.decode('latin-1')` for each value, then `adata.write_h5ad(path)`.",
            ) from error
        except (OSError, KeyError, ValueError, TypeError) as error:
            self.close()
            raise LangCellInputError(f"{path} could not be read as .h5ad: truncated or corrupted ({error}).", fix) from error

    def _set_matrix(self, x: Any, shape: tuple[int, int] | None) -> None:
        if x is None:
            raise LangCellInputError(f"{self.name} has no X matrix.", "Store the raw counts in X.")
        encoding = x.attrs.get("encoding-type", "") if isinstance(x, (h5py.Group, h5py.Dataset)) else ""
        if isinstance(x, h5py.Group) and encoding == "csr_matrix":
            self.shape = tuple(int(v) for v in x.attrs["shape"])
            self._indptr = x["indptr"][...].astype(np.int64)
            self._data, self._indices = _without_chunk_cache(x, "data"), _without_chunk_cache(x, "indices")
            self._kind = "h5-csr"
        elif isinstance(x, h5py.Group):
            if encoding != "csc_matrix":
                raise LangCellInputError(f"{self.name}: X has unsupported encoding {encoding!r}.", "Store X as CSR, CSC or dense.")
            warnings.warn(
                f"{self.name}: X is CSC on disk; it is loaded whole to be read by cells (memory not bounded). "
                "Save it as CSR (`adata.X = adata.X.tocsr()`) to stream it.",
                stacklevel=3,
            )
            self._set_matrix(read_elem(x), None)
        elif isinstance(x, h5py.Dataset):
            self.shape, self._matrix, self._kind = tuple(x.shape), x, "dense"
        elif sp.issparse(x):
            self.shape = tuple(x.shape)
            self._matrix, self._kind = (x if x.format == "csr" else sp.csr_matrix(x)), "sparse"
        elif hasattr(x, "format") and hasattr(x, "__getitem__"):  # backed anndata sparse dataset
            self.shape, self._matrix, self._kind = tuple(x.shape), x, "backed"
        else:
            self._matrix = np.asarray(x)
            self.shape, self._kind = tuple(self._matrix.shape), "dense"
        if shape is not None and self.shape != shape:
            raise LangCellInputError(f"{self.name}: X shape {self.shape} differs from the AnnData shape {shape}.", "Repair the AnnData.")
        if len(self.shape) != 2:
            raise LangCellInputError(f"{self.name}: X must be 2-D, got shape {self.shape}.", "Store a cells x genes matrix.")

    # ------------------------------------------------------------------ reading
    def read_rows(self, start: int, stop: int) -> RowChunk:
        """Rows ``[start, stop)`` as CSR arrays (data dtype as stored)."""
        try:
            if self._kind == "h5-csr":
                indptr = self._indptr[start : stop + 1]
                first, last = int(indptr[0]), int(indptr[-1])
                return RowChunk(self._read_into("data", self._data, first, last),
                                self._read_into("indices", self._indices, first, last), indptr - first)
            if self._kind == "sparse":
                block = self._matrix[start:stop]
                return RowChunk(block.data, block.indices, block.indptr.astype(np.int64))
            if self._kind == "backed":
                block = self._matrix[start:stop]
                return _from_scipy(block if sp.issparse(block) else sp.csr_matrix(np.asarray(block)))
            return self._read_dense(start, stop)
        except (OSError, ValueError) as error:
            raise LangCellInputError(
                f"{self.name}: rows {start}-{stop} of X could not be read: the file is truncated or corrupted ({error}).",
                "Pass a complete .h5ad file; re-copy or re-download it.",
            ) from error

    def _read_into(self, name: str, dataset: h5py.Dataset, first: int, last: int) -> np.ndarray:
        """``dataset[first:last]`` read into this source's reusable buffer ``name`` (grown as needed)."""
        size = last - first
        buffer = self._buffers.get(name)
        if buffer is None or buffer.size < size:
            buffer = self._buffers[name] = np.empty(size, dtype=dataset.dtype)
        if size:
            dataset.read_direct(buffer, source_sel=np.s_[first:last], dest_sel=np.s_[0:size])
        return buffer[:size]

    def _read_dense(self, start: int, stop: int) -> RowChunk:
        """Dense rows, densified at most ``DENSE_PIECE`` values at a time, as CSR."""
        step = max(1, DENSE_PIECE // max(1, self.shape[1]))
        pieces = [sp.csr_matrix(np.asarray(self._matrix[i : min(i + step, stop)])) for i in range(start, stop, step)]
        return _from_scipy(sp.vstack(pieces, format="csr") if len(pieces) > 1 else pieces[0])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self._buffers.clear()

    def __enter__(self) -> "CellSource":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()



def _undecodable_element(handle: h5py.File) -> str:
    """Which obs/var column (or index) of an .h5ad holds a string that is not UTF-8."""
    for frame in ("obs", "var"):
        group = handle[frame]
        index_name = group.attrs.get("_index", "_index")
        for name in group:
            try:
                read_elem(group[name])
            except UnicodeDecodeError:
                return f"{frame} index" if name == index_name else f"{frame} column {shorten(name)!r}"
    return "obs or var"
