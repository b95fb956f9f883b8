"""One name, one thing: a public name is defined in one module only, library code prints nothing,
and the model config holds both towers as dataclasses with one JSON round trip."""

from __future__ import annotations

import ast
import dataclasses
import json
from collections import defaultdict
from pathlib import Path

from transformers import BertConfig

import lightning_langcell
from lightning_langcell.models.config import CellEncoderConfig, LangCellConfig, TextEncoderConfig

ROOT = Path(lightning_langcell.__file__).resolve().parent
#: Modules whose job is to print a command's result to the terminal.
PRINTING_MODULES = {"cli.py", "__main__.py"}
#: Names still defined twice (none: each public name has one home).
KNOWN_DUPLICATES: set[str] = set()


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), str(path))


def public_definitions() -> dict[str, list[str]]:
    """Top-level public functions, classes and UPPER_CASE constants -> the modules defining them."""
    where: dict[str, list[str]] = defaultdict(list)
    for path, tree in _modules():
        for node in tree.body:
            names: list[str] = []
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names = [node.name]
            elif isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names = [t.id for t in targets if isinstance(t, ast.Name) and t.id.isupper()]
            where.update({name: where[name] + [str(path.relative_to(ROOT))]
                          for name in names if not name.startswith("_")})
    return where


def test_each_public_name_is_defined_once():
    twice = {name: paths for name, paths in public_definitions().items()
             if len(paths) > 1 and name not in KNOWN_DUPLICATES}
    assert not twice, f"names defined in several modules (give each thing its own name): {twice}"


def test_the_walk_finds_definitions():
    definitions = public_definitions()
    assert definitions["IGNORE_INDEX"] == ["data/masking.py"]
    assert definitions["classification_scores"] == ["inference/metrics.py"]
    assert "classification_metrics" not in definitions
    assert definitions["LangCellModel"] == ["models/langcell.py"]


def builtin_print_calls() -> list[str]:
    """``file:line`` of every builtin ``print(...)`` outside the CLI modules and outside CLI command
    functions (named ``*_command`` / ``*_main``: they report their command's result to the terminal)."""
    calls = []
    for path, tree in _modules():
        if path.name in PRINTING_MODULES and path.parent == ROOT:
            continue
        allowed = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name.endswith(("_command", "_main")):
                allowed |= {id(inner) for inner in ast.walk(node)}
        calls += [f"{path.relative_to(ROOT)}:{node.lineno}" for node in ast.walk(tree)
                  if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print"
                  and id(node) not in allowed]
    return calls


def test_library_code_does_not_print():
    """Library code logs (``logging``, Lightning's logger); only the CLI prints its commands' results."""
    calls = builtin_print_calls()
    assert not calls, f"print() in library code (use logging): {calls}"


def test_unused_duplicates_are_gone():
    from lightning_langcell.models.matcher import MatchHead
    from lightning_langcell.text.ontology import Ontology

    assert not hasattr(MatchHead, "match_probability")  # models.zero_shot_scores.ctm_match_probability
    assert not hasattr(Ontology, "from_files")


def test_both_towers_are_dataclasses_with_one_round_trip():
    config = LangCellConfig.preset("tiny", cell={"hidden_act": "gelu"}, attn_implementation="eager")
    assert isinstance(config.cell, CellEncoderConfig) and isinstance(config.text, TextEncoderConfig)
    assert dataclasses.is_dataclass(config.cell) and dataclasses.is_dataclass(config.text)
    data = json.loads(json.dumps(config.to_dict()))
    assert isinstance(data["cell"], dict) and isinstance(data["text"], dict)
    assert data["cell"] == dataclasses.asdict(config.cell) and data["cell"]["hidden_act"] == "gelu"
    again = LangCellConfig.from_dict(data)
    assert again == config and again.cell == config.cell and again.text == config.text
    assert again.to_dict() == config.to_dict()
    # the tower configs accept the dataclass, its dict or (cell) an HF BertConfig alike
    bert = config.cell_bert_config()
    assert bert.hidden_act == "gelu" and bert.vocab_size == config.cell.vocab_size
    assert CellEncoderConfig.from_dict(bert) == config.cell == CellEncoderConfig.from_dict(data["cell"])
    assert LangCellConfig(cell=bert, text=config.text, attn_implementation="eager", cell_pooling="mean") == config
    assert CellEncoderConfig.from_dict(BertConfig()).to_dict() == CellEncoderConfig().to_dict()
