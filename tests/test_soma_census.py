"""TileDB-SOMA / CELLxGENE Census input: a local experiment built from bundled cells with
CELLxGENE-schema columns tokenizes to exactly the corpus of the same cells from .h5ad."""

from __future__ import annotations

import builtins
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

tiledbsoma = pytest.importorskip("tiledbsoma")
import tiledbsoma.io  # noqa: E402

from lightning_langcell.data import CellCorpus, tokenize_to_corpus  # noqa: E402
from lightning_langcell.data.corpus import is_corpus  # noqa: E402
from lightning_langcell.data.soma import SomaQuery, is_soma_input, tokenize_soma  # noqa: E402
from lightning_langcell.errors import LangCellInputError  # noqa: E402
from lightning_langcell.text.descriptions import CellTextBuilder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BLOOD = "is_primary_data == True and tissue_general == 'blood'"
TEXT_COLUMNS = ["cell_type", "cell_type_ontology_term_id", "tissue_ontology_term_id", "disease_ontology_term_id",
                "development_stage_ontology_term_id"]


def _census_like(path: Path):
    """pbmc68k_reduced with CELLxGENE-schema columns: Ensembl var names and ``feature_id``, ontology ids."""
    import anndata

    cells = anndata.read_h5ad(REPO / "data/cells/pbmc68k_reduced.h5ad")
    cells.var_names = cells.var["ensembl_id"].astype(str).to_numpy()
    cells.var["feature_id"] = cells.var_names
    row = np.arange(cells.n_obs)
    cells.obs["tissue_ontology_term_id"] = np.where(row % 3 == 0, "UBERON:0000178", "UBERON:0002048")
    cells.obs["tissue_general"] = np.where(row % 3 == 0, "blood", "lung")
    cells.obs["disease_ontology_term_id"] = np.where(row % 5 == 0, "MONDO:0005061", "PATO:0000461")
    cells.obs["development_stage_ontology_term_id"] = "HsapDv:0000087"
    cells.obs["is_primary_data"] = row % 2 == 0
    cells.write_h5ad(path)
    return cells


@pytest.fixture(scope="module")
def census_like(tmp_path_factory):
    """(.h5ad path, SOMA experiment folder, AnnData) of the same cells."""
    root = tmp_path_factory.mktemp("soma")
    cells = _census_like(root / "cells.h5ad")
    tiledbsoma.io.from_h5ad(str(root / "experiment"), str(root / "cells.h5ad"), measurement_name="RNA",
                            X_layer_name="raw")
    return root / "cells.h5ad", root / "experiment", cells


@pytest.fixture(scope="module")
def from_h5ad(census_like, tmp_path_factory):
    return tokenize_to_corpus(census_like[0], tmp_path_factory.mktemp("h5ad") / "corpus")


def _texts(corpus: CellCorpus) -> list[str]:
    obs = {name: np.asarray(corpus.column(name, 0, len(corpus)), dtype=object) for name in TEXT_COLUMNS}
    import pandas as pd

    return CellTextBuilder().texts_for(pd.DataFrame(obs))


def _assert_same_cells(soma: CellCorpus, h5ad: CellCorpus) -> None:
    np.testing.assert_array_equal(np.asarray(soma.offsets), np.asarray(h5ad.offsets))
    np.testing.assert_array_equal(np.asarray(soma.tokens), np.asarray(h5ad.tokens))
    assert [c for c in soma.columns] == [c for c in h5ad.columns]
    for name in soma.columns:
        if name != "source_file":
            np.testing.assert_array_equal(np.asarray(soma.column(name, 0, len(soma)), dtype=object),
                                          np.asarray(h5ad.column(name, 0, len(h5ad)), dtype=object), err_msg=name)
    assert _texts(soma) == _texts(h5ad)


@pytest.mark.parametrize("chunk_size, blocks", [(None, [700]), (97, [97] * 7 + [21])])
def test_soma_experiment_gives_the_h5ad_corpus(census_like, from_h5ad, tmp_path, monkeypatch, chunk_size, blocks):
    original, seen = SomaQuery.blocks, []

    def recorded(self, size, columns):
        for joinids, cells in original(self, size, columns):
            seen.append(cells.n_obs)
            yield joinids, cells

    monkeypatch.setattr(SomaQuery, "blocks", recorded)
    soma = tokenize_soma(census_like[1], tmp_path / "corpus", chunk_size=chunk_size)
    assert len(soma) == 700 and seen == blocks  # X is read one block of cells at a time
    _assert_same_cells(soma, from_h5ad)
    texts = _texts(soma)
    assert texts[0].startswith("cell type: ") and "tissue: blood" in texts[0] and "tissue: lung" in texts[1]
    assert "disease: " in texts[0] and "development stage: " in texts[0]
    assert soma.manifest["tokenizer_settings"] == from_h5ad.manifest["tokenizer_settings"]


def test_value_filter_selects_the_same_subset_as_from_h5ad(census_like, tmp_path):
    h5ad, experiment, cells = census_like
    mask = (cells.obs["is_primary_data"].to_numpy()) & (cells.obs["tissue_general"].to_numpy() == "blood")
    cells[mask].copy().write_h5ad(tmp_path / "blood.h5ad")
    expected = tokenize_to_corpus(tmp_path / "blood.h5ad", tmp_path / "expected")
    soma = tokenize_soma(experiment, tmp_path / "corpus", value_filter=BLOOD, chunk_size=50)
    assert len(soma) == int(mask.sum()) == 117
    np.testing.assert_array_equal(np.asarray(soma.offsets), np.asarray(expected.offsets))
    np.testing.assert_array_equal(np.asarray(soma.tokens), np.asarray(expected.tokens))
    np.testing.assert_array_equal(np.asarray(soma.column("source_index", 0, len(soma))), np.flatnonzero(mask))
    assert _texts(soma) == _texts(expected)
    source = soma.sources[0]
    assert source["format"] == "tiledbsoma" and source["path"] == str(experiment.resolve())
    assert (source["value_filter"], source["measurement"], source["layer"], source["var_column"],
            source["census_version"], source["n_obs_matched"], source["n_cells"]) == (
        BLOOD, "RNA", "raw", "feature_id", None, 117, 117)


def test_interrupted_run_leaves_no_corpus_and_rerun_matches(census_like, tmp_path, monkeypatch):
    clean = tokenize_soma(census_like[1], tmp_path / "clean", chunk_size=64)
    original = SomaQuery.blocks

    def dies_after_two_blocks(self, size, columns):
        for number, block in enumerate(original(self, size, columns)):
            if number == 2:
                raise KeyboardInterrupt("killed")
            yield block

    monkeypatch.setattr(SomaQuery, "blocks", dies_after_two_blocks)
    with pytest.raises(KeyboardInterrupt):
        tokenize_soma(census_like[1], tmp_path / "corpus", chunk_size=64)
    assert not (tmp_path / "corpus").exists() and not is_corpus(tmp_path / "corpus")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean"]  # no temporary left either
    monkeypatch.setattr(SomaQuery, "blocks", original)
    rerun = tokenize_soma(census_like[1], tmp_path / "corpus", chunk_size=64)
    files = {name: info["blake3"] for name, info in rerun.manifest["files"].items()}
    assert files == {name: info["blake3"] for name, info in clean.manifest["files"].items()} and files
    CellCorpus(tmp_path / "corpus", verify_digests=True)


# Tokenizes argv[1] into argv[2] by blocks of 16 cells, printing "block" as each block is read.
CHILD = """
import sys, time
from lightning_langcell.data.soma import SomaQuery, tokenize_soma

original = SomaQuery.blocks
def chatty(self, size, columns):
    for block in original(self, size, columns):
        print("block", flush=True)
        time.sleep(0.05)
        yield block
SomaQuery.blocks = chatty
tokenize_soma(sys.argv[1], sys.argv[2], chunk_size=16)
print("done", flush=True)
"""


def test_sigkilled_run_leaves_no_corpus_and_rerun_matches(census_like, tmp_path):
    import os
    import signal
    import subprocess

    clean = tokenize_soma(census_like[1], tmp_path / "clean", chunk_size=16)
    target = tmp_path / "corpus"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(census_like[1]), str(target)],
                             stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    blocks = 0
    while blocks < 5:
        line = child.stdout.readline()
        assert line, "the child ended before being killed"
        blocks += line.strip() == "block"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert not is_corpus(target)
    rerun = tokenize_soma(census_like[1], target, chunk_size=16)
    assert {n: i["blake3"] for n, i in rerun.manifest["files"].items()} == {
        n: i["blake3"] for n, i in clean.manifest["files"].items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clean", "corpus"]  # the killed run's temporary is gone


def test_cli_detects_a_local_experiment_and_records_the_query(census_like, tmp_path, capsys):
    from lightning_langcell.cli import main

    assert is_soma_input(census_like[1]) and not is_soma_input(census_like[0])
    assert is_soma_input("s3://bucket/census/soma/census_data/homo_sapiens") and is_soma_input("census")
    summary = main(["tokenize", str(census_like[1]), "--output", str(tmp_path / "corpus"), "--value-filter", BLOOD,
                    "--measurement", "RNA", "--layer", "raw"])
    assert summary["n_cells"] == 117 and summary["query"]["value_filter"] == BLOOD
    assert "117 cells matched" in capsys.readouterr().out
    # --source soma reads a folder whatever it looks like (here the same one)
    again = main(["tokenize", str(census_like[1]), "--output", str(tmp_path / "again"), "--source", "soma",
                  "--value-filter", BLOOD])
    np.testing.assert_array_equal(np.asarray(CellCorpus(again["output"]).tokens),
                                  np.asarray(CellCorpus(summary["output"]).tokens))


@pytest.mark.parametrize("options, message", [
    ({"layer": "normalized"}, "no X layer 'normalized'"),
    ({"measurement": "ATAC"}, "no measurement 'ATAC'"),
    ({"var_column": "gene_ids"}, "no column 'gene_ids'"),
    ({"value_filter": "tissue_general == 'heart'"}, "No cell of"),
    ({"value_filter": "no_such_column == 1"}, "could not be applied"),
])
def test_bad_query_is_one_clear_error_and_writes_nothing(census_like, tmp_path, options, message):
    with pytest.raises(LangCellInputError, match=message):
        tokenize_soma(census_like[1], tmp_path / "corpus", **options)
    assert not (tmp_path / "corpus").exists()


def test_census_version_without_cellxgene_census_names_the_extra(census_like, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_census(name, *args, **kwargs):
        if name == "cellxgene_census":
            raise ImportError("No module named 'cellxgene_census'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_census)
    with pytest.raises(LangCellInputError, match=r"pip install 'lightning_langcell\[census\]'"):
        tokenize_soma("census", tmp_path / "corpus", census_version="2025-01-30")
    monkeypatch.setitem(sys.modules, "tiledbsoma", None)
    with pytest.raises(LangCellInputError, match=r"tiledbsoma.*\n?.*lightning_langcell\[census\]"):
        tokenize_soma(census_like[1], tmp_path / "corpus")
    assert not (tmp_path / "corpus").exists()


def test_census_recipe_pretrains_on_the_soma_corpus(census_like, tmp_path, monkeypatch):
    """The recipe's data path offline: query the local experiment, then two stage-2 steps on a tiny model."""
    import torch
    import yaml

    from lightning_langcell.cli import main

    recipe = REPO / "recipes/census_pretrain.yaml"
    assert yaml.safe_load(recipe.read_text())["data"]["data"] == "corpora/census_blood"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LANGCELL_DEBUG", "1")
    main(["tokenize", str(census_like[1]), "--output", "corpora/census_blood", "--value-filter",
          "is_primary_data == True"])
    assert len(CellCorpus("corpora/census_blood")) == 350
    cli = main(["fit", "--config", str(recipe), "--trainer.accelerator", "cpu", "--trainer.devices", "1",
                "--trainer.strategy", "auto", "--trainer.precision", "32-true", "--trainer.max_steps", "2",
                "--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2",
                "--trainer.log_every_n_steps", "1", "--trainer.enable_progress_bar", "false",
                "--model.init_args.model", "tiny", "--model.init_args.init_from", "null",
                "--model.init_args.attn_implementation", "eager", "--data.max_length", "32",
                "--data.text_max_length", "64", "--data.batch_size", "8", "--data.num_workers", "0",
                "--data.split", "[0.9, 0.1, 0.0]"])
    assert cli.trainer.global_step == 2
    metrics = cli.trainer.callback_metrics
    for name in ("train/loss", "val/loss"):
        assert name in metrics and torch.isfinite(metrics[name]), (name, sorted(metrics))
    shutil.rmtree("runs", ignore_errors=True)


def test_unknown_source_is_refused(census_like, tmp_path):
    from lightning_langcell.data.corpus_writer import tokenize_command

    with pytest.raises(LangCellInputError, match="--source must be auto or soma"):
        tokenize_command([str(census_like[1])], str(tmp_path / "corpus"), source="zarr")
    with pytest.raises(LangCellInputError, match="tokenized alone"):
        tokenize_command([str(census_like[1]), str(census_like[0])], str(tmp_path / "corpus"))


def test_hosted_census_is_opened_by_version_through_cellxgene_census(census_like, from_h5ad, tmp_path, monkeypatch):
    """``census --census-version V`` goes through ``cellxgene_census.open_soma(census_version=V)``: here it
    is patched to hand back the local experiment as ``census_data["homo_sapiens"]`` (no network)."""
    cellxgene_census = pytest.importorskip("cellxgene_census")
    opened, closed = [], []

    class FakeCensus(dict):  # the hosted Census is a SOMA collection: a context manager with close()
        def close(self):
            closed.append(True)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.close()

    def open_soma(census_version=None, **kwargs):
        opened.append(census_version)
        return FakeCensus(census_data={"homo_sapiens": tiledbsoma.Experiment.open(str(census_like[1]))})

    monkeypatch.setattr(cellxgene_census, "open_soma", open_soma)
    corpus = tokenize_soma("census", tmp_path / "corpus", census_version="2025-01-30")
    assert opened == ["2025-01-30"] and closed == [True]
    _assert_same_cells(corpus, from_h5ad)
    assert (corpus.sources[0]["census_version"], corpus.sources[0]["organism"]) == ("2025-01-30", "homo_sapiens")
    with pytest.raises(LangCellInputError, match="no experiment 'mus_musculus'"):
        tokenize_soma("census", tmp_path / "mouse", census_version="2025-01-30", organism="mus_musculus")
    assert not (tmp_path / "mouse").exists()
