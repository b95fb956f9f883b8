"""Command line: ``python -m lightning_langcell {fit,validate,test,predict,tokenize,...}``.

Lightning's subcommands go through a :class:`LightningCLI` (omegaconf parser mode, so recipes
may interpolate ``${...}``). The library's own subcommands (``tokenize``, ``convert``,
``pretrained``, ``push``, ``verify``, ``export``) are jsonargparse parsers built from the typed signature and docstring
of the one library function each calls, so their defaults are written once and ``--config
file.yaml`` works as for the Lightning subcommands. Everything is built inside :func:`main` so
tests can call it in-process.

The library's own errors (:class:`~lightning_langcell.errors.LangCellError`, also when jsonargparse
wraps one raised while instantiating a class) are printed as ``error: <problem>`` and ``fix: <fix>``
on stderr with exit code 2; ``--debug`` anywhere on the command line, or ``LANGCELL_DEBUG=1``,
shows the traceback instead. Other exceptions (bugs) keep their traceback.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT = "LANGCELL_DEBUG"
PROG = "python -m lightning_langcell"


@dataclass(frozen=True)
class ExtraCommand:
    """A library subcommand: the function it calls and how its parameters meet the command line.

    ``function`` is ``"module:name"`` (imported only when the command runs); its parameters become
    options (``--max-genes``, also ``--max_genes``; booleans are flags with a ``--no-`` form), those
    in ``positionals`` positional arguments. ``aliases`` are extra flags setting a parameter to a
    value (``--drop-empty`` → ``keep_empty=False``); ``hidden`` parameters keep their default;
    ``present(result, arguments)`` turns the function's result into the command's result.
    """

    summary: str
    function: str
    positionals: tuple[str, ...] = ()
    aliases: dict[str, tuple[str, Any]] = field(default_factory=dict)
    hidden: frozenset[str] = frozenset()
    present: Callable[[Any, dict], Any] = lambda result, arguments: result

    def load(self) -> Callable:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


def _converted(written, arguments: dict) -> dict:
    return {"written": str(written), "format": arguments["to"]}


def _pretrained_table(result, arguments: dict):
    """The table of every checkpoint, or one checkpoint's report (where it is, verification, steps)."""
    from lightning_langcell.hub.registry import format_pretrained

    print(format_pretrained(result) if isinstance(result, list) else result["report"])
    return result if isinstance(result, list) else result["report"]


EXTRA_COMMANDS: dict[str, ExtraCommand] = {
    "tokenize": ExtraCommand(
        "tokenize .h5ad files or a TileDB-SOMA experiment (or import a Hugging Face dataset folder) into a memory-mapped cell corpus",
        "lightning_langcell.data.corpus_writer:tokenize_command",
        positionals=("inputs",), aliases={"drop_empty": ("keep_empty", False)},
    ),
    "convert": ExtraCommand(
        "convert a checkpoint to our format (--to ours) or the official layout",
        "lightning_langcell.hub.convert:convert_command",
        positionals=("src", "dst"), present=_converted,
    ),
    "pretrained": ExtraCommand(
        "list the registered checkpoints, or check / download one (NAME [--download])",
        "lightning_langcell.hub.registry:pretrained_command",
        positionals=("name",), present=_pretrained_table,
    ),
    "push": ExtraCommand(
        "upload a checkpoint folder in our format to the Hugging Face Hub",
        "lightning_langcell.hub.push:push_to_hub",
        positionals=("folder", "repo_id"),
    ),
    "export": ExtraCommand(
        "write a corpus as a Hugging Face dataset folder (datasets.load_from_disk)",
        "lightning_langcell.data.hf_datasets:export_command",
        positionals=("corpus", "output"),
    ),
    "verify": ExtraCommand(
        "check a tokenized-cell corpus (sizes, dtypes, token ids, digests)",
        "lightning_langcell.data.corpus_verify:verify_corpus",
        positionals=("path",), aliases={"skip_digest": ("check_digests", False)},
    ),
}


# ------------------------------------------------------------------ the library's subcommands
def _flag(name: str) -> list[str]:
    dashed = "--" + name.replace("_", "-")
    return [dashed] if "_" not in name else [dashed, "--" + name]


def _list_element(hint) -> Any:
    """``str`` for ``list[str]`` or ``list[str] | None``; None for anything else."""
    options = [hint, *(a for a in typing.get_args(hint) if a is not type(None))]
    for option in options:
        if typing.get_origin(option) is list:
            return (typing.get_args(option) or (str,))[0]
    return None


def _parameter_docs(function: Callable) -> tuple[str, dict[str, str]]:
    """The docstring's first paragraph and its ``Args:`` descriptions by parameter name."""
    from docstring_parser import parse

    docs = parse(inspect.getdoc(function) or "")
    return docs.short_description or "", {p.arg_name: " ".join(p.description.split()) for p in docs.params}


def build_parser(name: str, command: ExtraCommand, function: Callable):
    """The jsonargparse parser of ``command`` from ``function``'s signature, types and docstring."""
    from jsonargparse import ActionConfigFile, ActionYesNo, ArgumentParser

    summary, docs = _parameter_docs(function)
    parser = ArgumentParser(prog=f"{PROG} {name}", description=summary)
    parser.add_argument("--config", action=ActionConfigFile, help="YAML file of these options (keys as below, with _)")
    hints = typing.get_type_hints(function)
    for parameter in inspect.signature(function).parameters.values():
        if parameter.name in command.hidden:
            continue
        hint, required = hints.get(parameter.name, str), parameter.default is inspect.Parameter.empty
        settings: dict[str, Any] = {"help": docs.get(parameter.name, "")}
        element = _list_element(hint)
        if element is not None:
            settings.update(type=element, nargs="+" if required else "*")
        elif hint is bool:
            settings.update(action=ActionYesNo(no_prefix="no-"))
        else:
            settings.update(type=hint)
        if parameter.name in command.positionals:
            if not required and element is None:  # an optional positional (``pretrained [NAME]``)
                settings.update(nargs="?", default=parameter.default)
            parser.add_argument(parameter.name, metavar=parameter.name.upper(), **settings)
        else:
            default = {"required": True} if required else {"default": parameter.default}
            parser.add_argument(*_flag(parameter.name), dest=parameter.name, **settings, **default)
    for alias, (target, value) in command.aliases.items():
        parser.add_argument(*_flag(alias), dest=alias, action="store_true",
                            help=f"same as {target}={value}: {docs.get(target, '')}".rstrip(": "))
    return parser


def run_extra_command(name: str, argv: Sequence[str]):
    """Parse ``argv`` for library subcommand ``name`` and call its function; returns its result."""
    command = EXTRA_COMMANDS[name]
    function = command.load()
    config = build_parser(name, command, function).parse_args(list(argv))
    parameters = inspect.signature(function).parameters
    arguments = {key: config[key] for key in parameters if key not in command.hidden}
    for alias, (target, value) in command.aliases.items():
        if config.get(alias):
            arguments[target] = value
    return command.present(function(**arguments), arguments)


# ------------------------------------------------------------------ Lightning's subcommands
def _print_overview() -> None:
    print(f"usage: {PROG} COMMAND [options] [{DEBUG_FLAG}]\n\ncommands:")
    for name in LIGHTNING_COMMANDS:
        print(f"  {name:<10} Lightning {name} (use --config recipes/<recipe>.yaml)")
    for name, command in EXTRA_COMMANDS.items():
        print(f"  {name:<10} {command.summary}")
    print(f"\n`{PROG} COMMAND --help` shows a command's options; {DEBUG_FLAG} (or {DEBUG_ENVIRONMENT}=1) "
          "shows the traceback of an error.")


def _lightning_cli(argv: Sequence[str]):
    from jsonargparse import set_parsing_settings
    from lightning.pytorch import LightningModule
    from lightning.pytorch.cli import LightningCLI

    from lightning_langcell.data.datamodule import LangCellDataModule

    # "omegaconf+" resolves ${...} after command-line overrides are merged; absolute paths
    # such as ${trainer.default_root_dir} are read relative to the subcommand.
    set_parsing_settings(omegaconf_absolute_to_relative_paths=True)
    return LightningCLI(
        model_class=LightningModule,
        datamodule_class=LangCellDataModule,
        subclass_mode_model=True,
        parser_kwargs={"parser_mode": "omegaconf+"},
        save_config_kwargs={"overwrite": True},
        # The command line itself goes in as args=None: Lightning warns when it gets both.
        args=None if list(argv) == sys.argv[1:] else list(argv),
        auto_configure_optimizers=False,
    )


# ------------------------------------------------------------------ errors
def library_error(error: BaseException):
    """The :class:`LangCellError` that ``error`` is or was raised from (``raise ... from``, as
    jsonargparse does when instantiating a class fails), else None. An error raised while handling
    another (a bug in the handling) is not attributed to the one handled."""
    from lightning_langcell.errors import LangCellError

    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, LangCellError):
            return error
        seen.add(id(error))
        error = error.__cause__
    return None


def format_error(error) -> str:
    """``error: <problem>`` and, when the error names one, ``fix: <fix>``."""
    problem, fix = getattr(error, "problem", None) or str(error), getattr(error, "fix", None)
    lines = [f"error: {problem}"] + ([f"fix: {fix}"] if fix else [])
    lines.append(f"({DEBUG_FLAG} or {DEBUG_ENVIRONMENT}=1 shows the traceback)")
    return "\n".join(lines)


def _debugging(argv: list[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENVIRONMENT, "").strip().lower() in ("1", "true", "yes")


def main(args: Sequence[str] | None = None):
    """Run one command; ``args`` defaults to ``sys.argv[1:]``. Returns the command's result.

    A library error ends the command with its problem and fix on stderr and ``SystemExit(2)``.
    """
    argv = list(sys.argv[1:] if args is None else args)
    debug = _debugging(argv)
    argv = [arg for arg in argv if arg != DEBUG_FLAG]
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return None
    try:
        if argv[0] in EXTRA_COMMANDS:
            result = run_extra_command(argv[0], argv[1:])
            if isinstance(result, dict):
                print(json.dumps(result, indent=2, default=str))
            return result
        return _lightning_cli(argv)
    except Exception as error:
        cause = library_error(error)
        if cause is None or debug:
            raise
        print(format_error(cause), file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
