"""The command line reaches LightningCLI once: no "got both args and command line" warning."""

from __future__ import annotations

import sys
import warnings

import pytest

from lightning_langcell.cli import main


def _warnings_of(argv, monkeypatch, args=None):
    monkeypatch.setattr(sys, "argv", ["lightning_langcell", *argv])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(SystemExit) as exit_info:
            main(args=args)
    assert exit_info.value.code == 0
    return [str(w.message) for w in caught if "args parameter" in str(w.message)]


def test_command_line_run_does_not_warn_about_args(monkeypatch):
    assert _warnings_of(["fit", "--help"], monkeypatch) == []


def test_in_process_args_still_reach_the_parser(monkeypatch, capsys):
    assert len(_warnings_of(["--foo"], monkeypatch, args=["fit", "--help"])) == 1
    assert "--trainer" in capsys.readouterr().out
