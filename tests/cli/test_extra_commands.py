"""The library's subcommands (tokenize, convert, pretrained, verify) through jsonargparse: options from
the signature of the one function each calls (defaults written once), the documented option forms,
``--config file.yaml`` and ``--help``."""

from __future__ import annotations

import inspect

import anndata as ad
import numpy as np
import pytest
import yaml

from lightning_langcell.cli import EXTRA_COMMANDS, build_parser, main
from lightning_langcell.data.corpus import CellCorpus

CELLS = "tests/data/corpus_pbmc68k/pbmc_50cells.h5ad"


@pytest.fixture()
def cells(repo_root):
    return str(repo_root / CELLS)


@pytest.fixture()
def parts(repo_root, tmp_path) -> list[str]:
    """The 50 cells as two files: the first 30 and the last 20."""
    adata = ad.read_h5ad(repo_root / CELLS)
    paths = [str(tmp_path / "first.h5ad"), str(tmp_path / "last.h5ad")]
    adata[:30].copy().write_h5ad(paths[0])
    adata[30:].copy().write_h5ad(paths[1])
    return paths


def _summary(result: dict) -> dict:
    return {key: value for key, value in result.items() if key not in ("output", "seconds")}


@pytest.mark.parametrize("name", list(EXTRA_COMMANDS))
def test_defaults_are_the_function_s_own(name):
    command = EXTRA_COMMANDS[name]
    try:
        function = command.load()
    except ImportError:
        pytest.skip(f"{command.function} is not in this tree")
    defaults = build_parser(name, command, function).get_defaults()
    for parameter in inspect.signature(function).parameters.values():
        if parameter.default is not inspect.Parameter.empty and parameter.name not in command.hidden:
            assert defaults[parameter.name] == parameter.default, parameter.name


def test_tokenize_documented_options_and_the_same_run_from_a_config(cells, parts, tmp_path, capsys):
    flags = main(["tokenize", *parts, "--output", str(tmp_path / "flags"), "--obs-columns", "donor_id", "batch",
                  "--max-genes", "16", "--chunk-size", "7", "--drop-empty"])
    corpus = CellCorpus(tmp_path / "flags")
    assert {"donor_id", "batch"} <= set(flags["columns"]) and len(flags["sources"]) == 2
    assert int(np.diff(corpus.offsets).max()) == 16 and flags["n_cells"] == len(corpus)
    config = {"inputs": parts, "output": str(tmp_path / "config"), "obs_columns": ["donor_id", "batch"],
              "max_genes": 16, "chunk_size": 7, "drop_empty": True}
    (tmp_path / "tokenize.yaml").write_text(yaml.safe_dump(config))
    from_config = main(["tokenize", "--config", str(tmp_path / "tokenize.yaml")])
    assert _summary(from_config) == _summary(flags)
    first = main(["tokenize", parts[0], "--output", str(tmp_path / "appended"), "--max-genes", "16",
                  "--obs_columns", "donor_id", "batch", "--drop-empty"])
    appended = main(["tokenize", parts[1], "--output", str(tmp_path / "appended"), "--append", "--max-genes", "16",
                     "--obs_columns", "donor_id", "batch", "--drop-empty"])
    assert first["n_cells"] < appended["n_cells"] == flags["n_cells"]
    replaced = main(["tokenize", parts[0], "--output", str(tmp_path / "appended"), "--overwrite", "--assume-counts",
                     "--drop-empty"])
    assert replaced["n_cells"] == first["n_cells"] and len(CellCorpus(tmp_path / "appended")) == first["n_cells"]
    assert int(np.diff(CellCorpus(tmp_path / "appended").offsets).max()) > 16  # the default max_genes again
    assert f"{flags['n_cells']:,} cells" in capsys.readouterr().out


def test_convert_from_a_config(repo_root, tmp_path):
    official_dir = repo_root / "tests" / "data" / "langcell-official-tiny"
    (tmp_path / "convert.yaml").write_text(yaml.safe_dump(
        {"src": str(official_dir), "dst": str(tmp_path / "exported"), "to": "official"}))
    assert main(["convert", "--config", str(tmp_path / "convert.yaml")]) == {
        "written": str(tmp_path / "exported"), "format": "official"}
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == [
        "cell_bert", "cell_proj.bin", "ctm_head.bin", "text_bert", "text_proj.bin", "tokenizer"]


def test_pretrained_prints_the_registry(capsys):
    rows = main(["pretrained"])
    out = capsys.readouterr().out
    assert [row["name"] for row in rows][:1] == ["langcell"]
    assert all(row["name"] in out for row in rows)


@pytest.mark.parametrize("name, options", [
    ("tokenize", ["--output", "--overwrite", "--append", "--obs-columns", "--max-genes", "--chunk-size",
                  "--assume-counts", "--drop-empty", "--config"]),
    ("convert", ["--to {ours,official}", "default: ours", "--overwrite", "--trust-pickle", "--text-tokenizer",
                 "--text-source", "--config"]),
    ("pretrained", ["--config"]),
])
def test_help_lists_the_options(name, options, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: python -m lightning_langcell {name}")
    for option in options:
        assert option in out, option


def test_verify_with_and_without_digests(cells, tmp_path):
    pytest.importorskip("lightning_langcell.data.corpus_verify")
    main(["tokenize", cells, "--output", str(tmp_path / "corpus")])
    full = main(["verify", str(tmp_path / "corpus")])
    quick = main(["verify", str(tmp_path / "corpus"), "--skip-digest"])
    assert (full["digests_checked"], quick["digests_checked"]) == (True, False)
    assert full["cells"] == quick["cells"] == len(CellCorpus(tmp_path / "corpus"))
