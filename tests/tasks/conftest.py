"""Helpers for the task tests: one corpus cache per session, in-process CLI runs on real cells."""

from __future__ import annotations

from pathlib import Path

import pytest
from classification_checks import PBMC


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """Tokenized corpora shared by every task test (each .h5ad is tokenized once)."""
    return tmp_path_factory.mktemp("corpora")


@pytest.fixture(autouse=True, scope="module")
def one_thread(single_torch_thread):
    with single_torch_thread():
        yield


@pytest.fixture()
def run_cli(repo_root, corpus_cache, tmp_path, monkeypatch):
    """``run_cli(command, recipe, *extra, data=PBMC)``: the CLI in-process, in ``tmp_path``,
    with a tiny fresh model, short cells and a CPU trainer; returns the LightningCLI."""
    from lightning_langcell.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["lightning_langcell"])  # pytest's own arguments are not the CLI's
    monkeypatch.setenv("LANGCELL_DEBUG", "1")  # library errors propagate instead of a message + exit 2

    def run(command: str, recipe: str, *extra: str, data: str = PBMC):
        args = [
            command,
            "--config", str(repo_root / "recipes" / recipe),
            "--data.data", str(repo_root / data),
            "--data.cache_dir", str(corpus_cache),
            "--data.max_length", "64",
            "--model.init_args.init_from", "null",
            "--model.init_args.model", "tiny",
            "--trainer.accelerator", "cpu",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            *extra,
        ]
        return main(args)

    return run
