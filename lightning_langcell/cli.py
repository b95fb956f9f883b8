"""Command line: ``python -m lightning_langcell {fit,validate,test,predict,tokenize,...}``.

Lightning's subcommands go through a :class:`LightningCLI` (omegaconf parser mode, so recipes
may interpolate ``${...}``); the library's own subcommands are plain argparse parsers.
Everything is built inside :func:`main` so tests can call it in-process.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Callable, Sequence

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def _tokenize(argv: Sequence[str]) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m lightning_langcell tokenize",
        description="Tokenize .h5ad files (raw counts) into a memory-mapped cell corpus.",
    )
    parser.add_argument("inputs", nargs="+", help=".h5ad files with raw integer counts")
    parser.add_argument("--output", required=True, help="corpus directory to write")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing corpus")
    parser.add_argument("--append", action="store_true", help="add cells to an existing corpus")
    parser.add_argument("--obs-columns", nargs="*", default=None, help="extra obs columns to keep")
    parser.add_argument("--max-genes", type=int, default=2048, help="genes kept per cell")
    parser.add_argument("--chunk-size", type=int, default=None, help="cells per chunk")
    parser.add_argument(
        "--assume-counts", action="store_true", help="accept X that does not look like counts"
    )
    parser.add_argument("--drop-empty", action="store_true", help="drop cells with no token")
    ns = parser.parse_args(list(argv))
    from lightning_langcell.data.corpus_writer import tokenize_command

    return tokenize_command(
        inputs=ns.inputs,
        output=ns.output,
        overwrite=ns.overwrite,
        append=ns.append,
        obs_columns=ns.obs_columns,
        max_genes=ns.max_genes,
        chunk_size=ns.chunk_size,
        assume_counts=ns.assume_counts,
        keep_empty=not ns.drop_empty,
    )


def _convert(argv: Sequence[str]):
    from lightning_langcell.hub.convert import convert_main

    return convert_main(argv)


def _pretrained(argv: Sequence[str]):
    from lightning_langcell.hub.convert import pretrained_main

    return pretrained_main(argv)


EXTRA_COMMANDS: dict[str, tuple[Callable[[Sequence[str]], object], str]] = {
    "tokenize": (_tokenize, "tokenize .h5ad files into a memory-mapped cell corpus"),
    "convert": (_convert, "convert a checkpoint to our format (--to ours) or the official layout"),
    "pretrained": (_pretrained, "list the registered checkpoints and where they are found here"),
}


def _print_overview() -> None:
    print("usage: python -m lightning_langcell COMMAND [options]\n\ncommands:")
    for name in LIGHTNING_COMMANDS:
        print(f"  {name:<10} Lightning {name} (use --config recipes/<recipe>.yaml)")
    for name, (_, summary) in EXTRA_COMMANDS.items():
        print(f"  {name:<10} {summary}")
    print("\n`python -m lightning_langcell COMMAND --help` shows a command's options.")


def _lightning_cli(argv: Sequence[str] | None):
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
        args=None if argv is None else list(argv),
        auto_configure_optimizers=False,
    )


def main(args: Sequence[str] | None = None):
    """Run one command; ``args`` defaults to ``sys.argv[1:]``. Returns the command's result."""
    argv = list(sys.argv[1:] if args is None else args)
    if not argv or argv[0] in ("-h", "--help"):
        _print_overview()
        return None
    command, rest = argv[0], argv[1:]
    if command in EXTRA_COMMANDS:
        result = EXTRA_COMMANDS[command][0](rest)
        if isinstance(result, dict):
            print(json.dumps(result, indent=2, default=str))
        return result
    return _lightning_cli(None if args is None else argv)


if __name__ == "__main__":
    main()
