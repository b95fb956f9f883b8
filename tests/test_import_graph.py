"""The package's layers import only downwards, and its subpackages form no import cycle.

Every module of ``lightning_langcell`` is parsed with ``ast``; every ``import`` counts, at module
level and inside functions alike (a lazy import is still a dependency). Layers, lowest first:

errors, io_utils, column_codes < tokenization, text < data < objectives, models < hub < inference < tasks < cli, __main__
"""

from __future__ import annotations

import ast
from pathlib import Path

import lightning_langcell

PACKAGE = "lightning_langcell"
ROOT = Path(lightning_langcell.__file__).resolve().parent
LAYERS = (
    ("errors", "io_utils", "column_codes"),
    ("tokenization", "text"),
    ("data",),
    ("objectives", "models"),
    ("hub",),
    ("inference",),
    ("tasks",),
    ("cli", "__main__"),
)
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str | None:
    """The subpackage (or top-level module) of a dotted ``lightning_langcell.*`` name; None for the root."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_submodule(name: str) -> bool:
    return (ROOT / name).is_dir() or (ROOT / f"{name}.py").is_file()


def imported_modules(source: str, module: str, is_package: bool = False) -> list[tuple[str, int]]:
    """``(absolute module name, line)`` of every import in ``source`` (the text of ``module``),
    at any depth (inside functions too), relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((base, node.lineno))
            # ``from lightning_langcell import hub`` imports the subpackage hub
            found += [(f"{base}.{alias.name}", node.lineno) for alias in node.names
                      if base == PACKAGE and is_submodule(alias.name)]
    return found


def package_edges() -> dict[tuple[str, str], str]:
    """``(importer unit, imported unit) -> "file:line"`` (first occurrence) across the package."""
    edges: dict[tuple[str, str], str] = {}
    for path in sorted(ROOT.rglob("*.py")):
        source = unit_of(module_name(path))
        if source is None:
            continue
        text = path.read_text(encoding="utf-8")
        for module, line in imported_modules(text, module_name(path), path.name == "__init__.py"):
            target = unit_of(module)
            if target is not None and target != source:
                edges.setdefault((source, target), f"{path.relative_to(ROOT.parent)}:{line}")
    return edges


def find_cycle(edges) -> list[str] | None:
    """One cycle of the directed graph as ``[a, b, ..., a]``, or None."""
    graph: dict[str, list[str]] = {}
    for source, target in edges:
        graph.setdefault(source, []).append(target)
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [node, nxt] if nxt in stack else [node, nxt]
            if nxt not in state:
                cycle = visit(nxt, stack + [node])
                if cycle:
                    return cycle
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node, [])
            if cycle:
                return cycle
    return None


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(path)) for path in ROOT.rglob("*.py")} - {None}
    assert units <= set(RANK), f"modules without a layer in this test: {sorted(units - set(RANK))}"


def test_no_lower_layer_imports_a_higher_one():
    upward = [
        f"{source} -> {target} ({where})"
        for (source, target), where in sorted(package_edges().items())
        if RANK[target] > RANK[source]
    ]
    assert not upward, "lower layers import higher ones:\n" + "\n".join(upward)


def test_subpackages_form_no_import_cycle():
    edges = package_edges()
    cycle = find_cycle(edges)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        f"  {a} -> {b} ({edges[(a, b)]})" for a, b in zip(cycle, cycle[1:])
    )


def test_the_walk_sees_function_level_and_relative_imports():
    """The parser finds imports inside functions and resolves relative ones; the cycle finder finds cycles."""
    source = (
        "import torch\n"
        "from . import sibling\n"
        "from ..hub.loading import load_model\n"
        "from lightning_langcell import tasks, __version__\n"
        "def f():\n"
        "    from lightning_langcell.inference import annotate\n"
    )
    modules = [name for name, _ in imported_modules(source, "lightning_langcell.models.langcell")]
    assert modules == ["torch", "lightning_langcell.models", "lightning_langcell.hub.loading",
                       "lightning_langcell", "lightning_langcell.tasks", "lightning_langcell.inference"]
    assert find_cycle({("a", "b"), ("b", "c"), ("c", "a")}) == ["a", "b", "c", "a"]
    assert find_cycle({("a", "b"), ("b", "c"), ("a", "c")}) is None
