"""The user-facing catalogue of bad inputs: each gives ONE clear error and leaves nothing behind.

Every case builds its input in ``tmp_path`` (from the 50 real PBMCs of ``tests/data/corpus_pbmc68k``),
runs what a user runs (``tokenize_to_corpus``, the CLI, ``LangCellDataModule.setup``, the text builder,
``load_model``), and checks: the error type, a phrase naming the problem, a phrase of the fix
(``"Fix: ..."`` once in the message; jsonargparse's recipe errors name the offending key instead),
and that ``tmp_path`` is exactly as before the call (no output, no temporary directory, nothing
modified). The area tests (tests/tokenization, tests/data_corpus, tests/hub) check the details; this
file is the catalogue.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Callable

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from lightning_langcell.errors import CheckpointError, CorpusError, LangCellInputError

REPO = Path(__file__).resolve().parents[2]
CELLS = REPO / "tests" / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
CASES: dict[str, tuple[Callable, type, str, str]] = {}


def case(error: type, problem: str, fix: str):
    """Register ``build(tmp) -> action``; ``action()`` must raise ``error`` naming problem and fix."""
    def register(build):
        CASES[build.__name__] = (build, error, problem, fix)
        return build
    return register


# ------------------------------------------------------------------------------- builders
def _cells(**changes) -> ad.AnnData:
    adata = ad.read_h5ad(CELLS)
    for name, value in changes.items():
        setattr(adata, name, value)
    return adata


def _write(tmp: Path, adata: ad.AnnData, name: str = "cells.h5ad") -> Path:
    adata.write_h5ad(tmp / name)
    return tmp / name


def _with_x(tmp: Path, edit: Callable[[np.ndarray], np.ndarray]) -> Path:
    adata = _cells()
    adata.X = sp.csr_matrix(edit(adata.X.toarray()))
    return _write(tmp, adata)


def _tokenize(path: Path, tmp: Path, **kwargs) -> Callable:
    from lightning_langcell.data import tokenize_to_corpus

    return lambda: tokenize_to_corpus(path, tmp / "corpus", **kwargs)


def _corpus(tmp: Path) -> Path:
    from lightning_langcell.data import tokenize_to_corpus

    return tokenize_to_corpus(CELLS, tmp / "corpus").path


def _setup(tmp: Path, data, **kwargs) -> Callable:
    from lightning_langcell.data.datamodule import LangCellDataModule

    module = LangCellDataModule(data=str(data), cache_dir=str(tmp / "cache"), max_length=32, **kwargs)
    return lambda: module.setup("fit")


def _fit_recipe(tmp: Path, edit: Callable[[dict], None]) -> Callable:
    from lightning_langcell.cli import main

    recipe = yaml.safe_load((REPO / "recipes" / "pretrain.yaml").read_text())
    recipe["trainer"]["default_root_dir"] = str(tmp / "run")
    recipe["data"].update(data=[str(CELLS)], cache_dir=str(tmp / "cache"))
    edit(recipe)
    (tmp / "bad.yaml").write_text(yaml.safe_dump(recipe))
    return lambda: main(["fit", "--config", str(tmp / "bad.yaml")])


def _saved_model(tmp: Path) -> Path:
    from lightning_langcell.models import LangCellConfig, LangCellModel
    from lightning_langcell.text import load_text_tokenizer

    config = LangCellConfig.preset("tiny", text={"vocab_size": len(load_text_tokenizer())})
    return LangCellModel(config).save_pretrained(tmp / "model")


def _load(path: Path) -> Callable:
    from lightning_langcell.hub.loading import load_model

    return lambda: load_model(path)


# ----------------------------------------------------------------- tokenizer and corpus
@case(LangCellInputError, "does not look like raw counts", "assume_counts=True")
def log_normalised_x(tmp):
    return _tokenize(_with_x(tmp, np.log1p), tmp)


@case(SystemExit, "does not look like raw counts", "fix: Tokenize raw integer counts")
def normalised_x_through_the_cli(tmp):
    from lightning_langcell.cli import main

    path = _with_x(tmp, lambda x: x / np.maximum(x.sum(1, keepdims=True), 1) * 1e4)
    return lambda: main(["tokenize", str(path), "--output", str(tmp / "corpus")])


@case(LangCellInputError, "None of the 765 genes", "human gene symbols")
def symbols_without_map(tmp):
    adata = _cells(var=pd.DataFrame(index=[f"NOTAGENE{i}" for i in range(765)]))
    return _tokenize(_write(tmp, adata), tmp)


@case(LangCellInputError, "outside the vocabulary 765", "human Ensembl ids")
def no_vocabulary_gene(tmp):
    adata = _cells(var=pd.DataFrame(index=[f"ENSG99{i:09d}" for i in range(765)]))
    return _tokenize(_write(tmp, adata), tmp)


@case(LangCellInputError, "NaN or infinite", "nan_to_num")
def nan_counts(tmp):
    return _tokenize(_with_x(tmp, lambda x: np.where(x == x.max(), np.nan, x)), tmp)


@case(LangCellInputError, "NaN or infinite", "drop those cells")
def infinite_counts(tmp):
    return _tokenize(_with_x(tmp, lambda x: np.where(x == x.max(), np.inf, x)), tmp)


@case(LangCellInputError, "negative values", "non-negative counts")
def negative_counts(tmp):
    return _tokenize(_with_x(tmp, lambda x: x - 1), tmp)


@case(LangCellInputError, "duplicated gene name", "var_names.duplicated()")
def duplicate_genes(tmp):
    adata = _cells()
    adata.var_names = [adata.var_names[0]] * 2 + list(adata.var_names[2:])
    return _tokenize(_write(tmp, adata), tmp)


@case(LangCellInputError, "looks transposed", "adata.T")
def transposed_matrix(tmp):
    adata = _cells()
    flipped = ad.AnnData(sp.csr_matrix(adata.X.T), obs=pd.DataFrame(index=adata.var_names),
                         var=pd.DataFrame(index=adata.obs_names))
    return _tokenize(_write(tmp, flipped), tmp)


@case(LangCellInputError, "truncated", "re-copy or re-download")
def truncated_h5ad(tmp):
    (tmp / "cut.h5ad").write_bytes(CELLS.read_bytes()[: CELLS.stat().st_size // 2])
    return _tokenize(tmp / "cut.h5ad", tmp)


@case(LangCellInputError, "empty", "complete AnnData .h5ad")
def empty_file(tmp):
    (tmp / "empty.h5ad").write_bytes(b"")
    return _tokenize(tmp / "empty.h5ad", tmp)


@case(LangCellInputError, "not found", "Check the paths")
def missing_input_file(tmp):
    return _tokenize(tmp / "nowhere.h5ad", tmp)


@case(LangCellInputError, "obs['n_counts']", "total counts over all genes")
def invalid_library_sizes(tmp):
    adata = _cells()
    adata.obs["n_counts"] = -adata.obs["n_counts"]
    return _tokenize(_write(tmp, adata), tmp)


@case(LangCellInputError, "obs['filter_pass']", "1 for cells to tokenise")
def invalid_filter_pass(tmp):
    adata = _cells()
    adata.obs["filter_pass"] = 2
    return _tokenize(_write(tmp, adata), tmp)


@case(CorpusError, "exists and is not a tokenized-cell corpus", "remove that directory yourself")
def output_is_someone_elses_folder(tmp):
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / "thesis.txt").write_text("do not delete")
    return _tokenize(CELLS, tmp, overwrite=True)


@case(LangCellInputError, "clash with the corpus' own columns", "Rename those obs columns")
def reserved_obs_column(tmp):
    return _tokenize(CELLS, tmp, obs_columns=["source_file"])


# -------------------------------------------------------------------------- data module
@case(LangCellInputError, "Label column 'cell_ontology_class' is not in the corpus", "data.label_column")
def label_column_missing(tmp):
    return _setup(tmp, _corpus(tmp), label_column="cell_ontology_class")


@case(LangCellInputError, "the test split would be empty", "Pick held_out values among")
def held_out_values_absent(tmp):
    return _setup(tmp, _corpus(tmp), split_by="donor_id", held_out=["donor_9"])


@case(LangCellInputError, "k_shot needs labels", "data.label_column")
def k_shot_without_labels(tmp):
    return _setup(tmp, _corpus(tmp), label_column=None, texts=False, k_shot=2)


@case(CorpusError, "tokens.npy has", "Re-create it from its input files")
def corpus_with_tampered_array(tmp):
    corpus = _corpus(tmp)
    with open(corpus / "tokens.npy", "ab") as handle:
        handle.write(b"\x00\x01")
    return _setup(tmp, corpus)


@case(CorpusError, "tokens.npy does not match its blake3 digest", "Re-create it from its input files")
def corpus_with_a_flipped_byte(tmp):
    corpus = _corpus(tmp)
    with open(corpus / "tokens.npy", "r+b") as handle:  # same size: only the digest sees it
        handle.seek(200)
        byte = handle.read(1)[0]
        handle.seek(200)
        handle.write(bytes([byte ^ 0x01]))
    return _setup(tmp, corpus)


@case(LangCellInputError, "Input(s) with 0 cells", "Pass files that hold cells")
def file_with_zero_cells(tmp):
    return _tokenize(_write(tmp, _cells()[:0].copy()), tmp)


@case(LangCellInputError, "below min_gene_coverage=10%", "human orthologs")
def genes_mostly_outside_the_vocabulary(tmp):
    adata = _cells()
    ids = adata.var["ensembl_id"].astype(str).to_numpy().copy()
    ids[: int(0.95 * len(ids))] = [f"NOT_A_GENE_{i}" for i in range(int(0.95 * len(ids)))]
    adata.var["ensembl_id"] = ids
    adata.var_names = ids
    return _tokenize(_write(tmp, adata), tmp)


@case(CorpusError, "/dev/null is not a directory", "Choose an output path inside a directory")
def output_below_a_file(tmp):
    from lightning_langcell.data import tokenize_to_corpus

    return lambda: tokenize_to_corpus(CELLS, "/dev/null/corpus")


@case(LangCellInputError, "Data file(s) not found", "corpus directory")
def data_file_missing(tmp):
    return _setup(tmp, tmp / "cells.h5ad")


# -------------------------------------------------------------------------------- texts
@case(LangCellInputError, "No class text for 'unknown'", "CL id")
def class_with_no_text(tmp):
    from lightning_langcell.text import CellTextBuilder

    return lambda: CellTextBuilder().class_text("unknown")


@case(LangCellInputError, "none of the annotation columns", "columns={'cell_type'")
def no_annotation_or_ontology_id_column(tmp):
    from lightning_langcell.text import CellTextBuilder

    obs = _cells().obs.drop(columns=["cell_type", "tissue", "tissue_ontology_term_id"])
    return lambda: CellTextBuilder().texts_for(obs)


@case(LangCellInputError, "is a full text; values are definitions only", "Drop the leading")
def type2text_with_full_texts(tmp):
    from lightning_langcell.text import CellTextBuilder

    (tmp / "type2text.json").write_text(json.dumps({"B cell": "cell type: B cell. A lymphocyte.; "}))
    return lambda: CellTextBuilder(type2text=tmp / "type2text.json")


# ------------------------------------------------------------------ recipes and tasks
@case(SystemExit, "does not accept option 'data.bogus_key'", "")
def recipe_with_an_unknown_key(tmp):
    return _fit_recipe(tmp, lambda recipe: recipe["data"].update(bogus_key=1))


@case(SystemExit, 'Parser key "data.batch_size"', "Expected a <class 'int'>")
def recipe_with_a_wrong_type(tmp):
    return _fit_recipe(tmp, lambda recipe: recipe["data"].update(batch_size="eight"))


@case(SystemExit, "Option 'bogus_arg' is not accepted", "")
def recipe_with_an_unknown_model_argument(tmp):
    return _fit_recipe(tmp, lambda recipe: recipe["model"]["init_args"].update(bogus_arg=1))


@case(LangCellInputError, "Unknown loss names ['mgn']", "Use ['mgm'")
def misspelt_loss_name(tmp):
    from lightning_langcell.tasks import LangCellPretraining

    return lambda: LangCellPretraining(loss_weights={"mgn": 1.0})


# ---------------------------------------------------------------------------- checkpoints
@case(CheckpointError, "not a checkpoint folder this library knows", "Expected one of: our format")
def checkpoint_of_the_wrong_layout(tmp):
    (tmp / "weights").mkdir()
    (tmp / "weights" / "model.pt.tar").write_bytes(b"\x00" * 16)
    return _load(tmp / "weights")


@case(CheckpointError, "does not match the sha256 recorded", "Copy or download the checkpoint again")
def corrupted_safetensors(tmp):
    path = _saved_model(tmp) / "model.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-100] ^= 0xFF
    path.write_bytes(bytes(raw))
    return _load(path.parent)


@case(CheckpointError, "truncated or not a torch file", "Re-create or re-download")
def ckpt_that_is_not_a_checkpoint(tmp):
    (tmp / "last.ckpt").write_bytes(b"PK\x03\x04 not really a zip")
    return _load(tmp / "last.ckpt")


@case(SystemExit, "not a checkpoint folder this library knows", "fix: Expected one of")
def convert_of_a_wrong_folder_through_the_cli(tmp):
    from lightning_langcell.cli import main

    (tmp / "src").mkdir()
    (tmp / "src" / "notes.md").write_text("# not weights")
    return lambda: main(["convert", str(tmp / "src"), str(tmp / "converted")])


# ------------------------------------------------------------------------------- the test
def _snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: folders by name, files by size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) if p.is_file() else "folder"
            for p in root.rglob("*")}


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gives_one_clear_error_and_leaves_nothing(name, tmp_path, capsys):
    build, error, problem, fix = CASES[name]
    (tmp_path / "in").mkdir()
    action = build(tmp_path / "in")
    before = _snapshot(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # missing definitions, small classes: not what is tested here
        with pytest.raises(error) as caught:
            action()
    assert type(caught.value) is error, f"{type(caught.value).__name__}: {caught.value}"
    if error is SystemExit:
        assert caught.value.code == 2
        message = capsys.readouterr().err
    else:
        message = str(caught.value)
        assert message.count("Fix:") == 1 and caught.value.fix, message
        assert fix in caught.value.fix, message
    assert problem in message, message
    assert fix in message, message
    assert _snapshot(tmp_path) == before, "the failed call left or changed files"


def test_oversize_text_warns_once_and_is_truncated(tmp_path):
    """Not an error: a text longer than text_max_length is truncated, with one warning naming it."""
    corpus = _corpus(tmp_path)
    label = str(ad.read_h5ad(CELLS, backed="r").obs["cell_type"].iloc[0])
    (tmp_path / "type2text.json").write_text(json.dumps({label: " ".join(["lymphocyte"] * 300)}))
    with pytest.warns(UserWarning) as caught:
        _setup(tmp_path, corpus, type2text=str(tmp_path / "type2text.json"), text_max_length=64)()
    truncation = [w for w in caught if "truncated to 64 tokens" in str(w.message)]
    assert len(truncation) == 1 and "1 of " in str(truncation[0].message)


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 20
