"""The CLI prints the library's errors as ``error: <problem>`` / ``fix: <fix>`` on stderr and exits
with code 2, for every subcommand (also when jsonargparse wraps the error while it builds the model);
``--debug`` or ``LANGCELL_DEBUG=1`` shows the traceback instead, and bugs keep their traceback."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

import pytest

from lightning_langcell.cli import main
from lightning_langcell.errors import CheckpointError, LangCellInputError

REPO = Path(__file__).resolve().parents[2]
CELLS = REPO / "tests" / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
FAST_TRAINER = ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


def _bad_registry(tmp: Path, monkeypatch) -> list[str]:
    (tmp / "registry.json").write_text("{not json")
    monkeypatch.setenv("LANGCELL_REGISTRY", str(tmp / "registry.json"))
    return ["pretrained"]


def _wrong_folder(tmp: Path, monkeypatch) -> list[str]:
    (tmp / "src").mkdir()
    (tmp / "src" / "notes.md").write_text("# not weights\n")
    return ["verify", str(tmp / "src")]


# command -> (its arguments in tmp_path, a phrase of the problem, the fix's start)
CASES = {
    "tokenize": (lambda tmp, mp: ["tokenize", str(tmp / "missing.h5ad"), "--output", str(tmp / "corpus")],
                 "Input file(s) not found: [", "Check the paths."),
    "convert": (lambda tmp, mp: ["convert", str(REPO / "tests" / "data" / "langcell-official-tiny"), "."],
                "The destination . is the current folder or holds it", "Name a new folder"),
    "pretrained": (_bad_registry, "Cannot read the checkpoint registry", "Fix the JSON file"),
    # the example: 88 lines of jsonargparse before the "Fix:" of a missing init checkpoint
    "fit": (lambda tmp, mp: ["fit", "--config", str(REPO / "recipes" / "linear_probe.yaml"),
                             "--model.init_args.init_from", str(tmp / "missing.ckpt"), *FAST_TRAINER],
            "No checkpoint at", "Check the path, or pass a registered name"),
    "test": (lambda tmp, mp: ["test", "--config", str(REPO / "recipes" / "linear_probe.yaml"),
                              "--model.init_args.init_from", "null", "--data.data", str(tmp / "missing.h5ad"),
                              *FAST_TRAINER],
             "Data file(s) not found", "Pass existing .h5ad files"),
    "predict": (lambda tmp, mp: ["predict", "--config", str(REPO / "recipes" / "embed.yaml"),
                                 "--data.data", str(CELLS), "--model.init_args.init_from", str(tmp / "nowhere"),
                                 *FAST_TRAINER],
                "No checkpoint at", "Check the path"),
    "verify": (_wrong_folder, "is not a tokenized-cell corpus", "Write the corpus with"),
}


@pytest.fixture()
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LANGCELL_DEBUG", raising=False)
    monkeypatch.setattr("sys.argv", ["lightning_langcell"])
    return tmp_path


@contextlib.contextmanager
def lightning_logs_to_stderr():
    """Point Lightning's log handlers at the current (captured) stderr for the block: they keep the
    stream of the test that imported Lightning, closed since."""
    handlers = [h for name in ("lightning", "lightning.pytorch", "lightning.fabric")
                for h in logging.getLogger(name).handlers if isinstance(h, logging.StreamHandler)]
    streams = [h.stream for h in handlers]
    for handler in handlers:
        handler.stream = sys.stderr  # not setStream: it flushes the closed stream
    try:
        yield
    finally:
        for handler, stream in zip(handlers, streams):
            handler.stream = stream


def _error_lines(capsys, args: list[str]) -> list[str]:
    """Run the CLI expecting a library error; the stderr lines from its ``error:`` line on."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info, lightning_logs_to_stderr():
        main(args)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    return lines[first:]


@pytest.mark.parametrize("command", list(CASES))
def test_a_library_error_is_its_problem_and_fix_with_exit_code_2(command, in_tmp, monkeypatch, capsys):
    if command == "verify":
        pytest.importorskip("lightning_langcell.data.corpus_verify")
    build, problem, fix = CASES[command]
    lines = _error_lines(capsys, build(in_tmp, monkeypatch))
    assert lines[0].startswith("error: ") and problem in lines[0], lines
    assert lines[1].startswith(f"fix: {fix}"), lines
    assert lines[2:] == ["(--debug or LANGCELL_DEBUG=1 shows the traceback)"]
    if command in ("tokenize", "convert", "pretrained"):  # no Lightning output: the error is all stderr holds
        assert "Fix:" not in lines[0]


def test_the_error_is_the_first_thing_an_extra_command_prints(in_tmp, capsys):
    with pytest.raises(SystemExit):
        main(["tokenize", str(in_tmp / "missing.h5ad"), "--output", str(in_tmp / "corpus")])
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines() == [
        f"error: Input file(s) not found: [{str(in_tmp / 'missing.h5ad')!r}].", "fix: Check the paths.",
        "(--debug or LANGCELL_DEBUG=1 shows the traceback)"]
    assert not (in_tmp / "corpus").exists()


@pytest.mark.parametrize("switch", ["flag_first", "flag_last", "environment"])
def test_debug_shows_the_traceback(switch, in_tmp, monkeypatch, capsys):
    args = ["tokenize", str(in_tmp / "missing.h5ad"), "--output", str(in_tmp / "corpus")]
    if switch == "environment":
        monkeypatch.setenv("LANGCELL_DEBUG", "1")
    else:
        args = ["--debug", *args] if switch == "flag_first" else [*args, "--debug"]
    with pytest.raises(LangCellInputError, match=r"Input file\(s\) not found"):
        main(args)
    assert "error:" not in capsys.readouterr().err


def test_debug_shows_the_wrapped_traceback_of_a_lightning_command(in_tmp, capsys):
    from lightning_langcell.cli import library_error

    build, _, _ = CASES["fit"]
    with pytest.raises(Exception) as caught:
        main([*build(in_tmp, None), "--debug"])
    assert isinstance(library_error(caught.value), CheckpointError)


def test_a_bug_keeps_its_traceback(in_tmp, monkeypatch):
    def broken(verbose: bool = False):
        raise KeyError("a bug")

    monkeypatch.setattr("lightning_langcell.hub.registry.list_pretrained", broken)
    with pytest.raises(KeyError, match="a bug"):
        main(["pretrained"])


def test_library_error_is_found_through_causes_not_contexts():
    from lightning_langcell.cli import format_error, library_error

    inner = CheckpointError("No checkpoint at x.", "Check the path.")
    try:
        raise ValueError("Does not validate against any of the Union subtypes") from inner
    except ValueError as wrapped:
        assert library_error(RuntimeError("unrelated")) is None
        chained = RuntimeError("wrapped again")
        chained.__cause__ = wrapped
        assert library_error(chained) is inner
    try:
        try:
            raise inner
        except CheckpointError:
            raise KeyError("a bug while handling it")  # noqa: B904 (a context, not a cause)
    except KeyError as bug:
        assert library_error(bug) is None
    assert format_error(inner).splitlines()[:2] == ["error: No checkpoint at x.", "fix: Check the path."]
    assert format_error(LangCellInputError("Only a problem.")).splitlines()[0] == "error: Only a problem."


def test_a_parse_error_stays_jsonargparse_s_usage_and_exit_2(in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["convert", "a", "b", "--to", "onnx"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "onnx" in err and err.startswith("usage: python -m lightning_langcell convert")
