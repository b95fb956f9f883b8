"""Nothing is unpickled by default, and nothing we write is a pickle.

1. The package source has no ``torch.load`` without ``weights_only=True`` and no pickle loader,
   except the one opt-in site behind ``trust_pickle=True`` (``hub.state_dicts.torch_load``).
2. A crafted pickle (a ``__reduce__`` payload that writes a file) in an official-layout folder or
   a Lightning ``.ckpt`` is refused with the fix named, and the payload never runs, unless
   ``trust_pickle=True``; resuming a fit (Lightning's loader) refuses it too.
3. A folder in our format and a corpus hold only safetensors, JSON, .npy (no object arrays) and text.
"""

import ast
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lightning_langcell
from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub.loading import load_model

PACKAGE = Path(lightning_langcell.__file__).parent
# The only call allowed to unpickle in full: reached only inside trusted_pickles() (trust_pickle=True).
ALLOWED = {("hub/state_dicts.py", "torch_load", "torch.load")}
PICKLE_LOADERS = {"pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "dill.loads", "joblib.load",
                  "pd.read_pickle", "pandas.read_pickle", "cloudpickle.load", "cloudpickle.loads"}


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return node.id if isinstance(node, ast.Name) else ""


def _keyword(call: ast.Call, name: str):
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


class _UnsafeCalls(ast.NodeVisitor):
    """Collects (enclosing function, call) of every call that may unpickle data."""

    def __init__(self):
        self.function, self.found = "<module>", set()

    def visit_FunctionDef(self, node):
        outer, self.function = self.function, node.name
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ImportFrom(self, node):
        if node.module in ("pickle", "dill", "joblib", "torch") and any(
                alias.name in ("load", "loads", "Unpickler") for alias in node.names):
            self.found.add((self.function, f"from {node.module} import load"))

    def visit_Call(self, node):
        name = _dotted(node.func)
        unsafe = (
            (name == "torch.load" and _keyword(node, "weights_only") is not True)
            or name in PICKLE_LOADERS
            or (name in ("np.load", "numpy.load") and _keyword(node, "allow_pickle") not in (None, False))
        )
        if unsafe:
            self.found.add((self.function, name))
        self.generic_visit(node)


def _unsafe_calls(source: str) -> set[tuple[str, str]]:
    visitor = _UnsafeCalls()
    visitor.visit(ast.parse(source))
    return visitor.found


def _unsafe_sites(path: Path) -> set[tuple[str, str, str]]:
    """(file, enclosing function, call) of every call that may unpickle data in ``path``."""
    relative = path.relative_to(PACKAGE).as_posix()
    return {(relative, *site) for site in _unsafe_calls(path.read_text(encoding="utf-8"))}


@pytest.mark.parametrize("source, found", [
    ("torch.load(p)", {("<module>", "torch.load")}),
    ("def f(p):\n    return torch.load(p, weights_only=False)", {("f", "torch.load")}),
    ("def f(p):\n    return torch.load(p, map_location='cpu', weights_only=True)", set()),
    ("def g(b):\n    return pickle.loads(b)", {("g", "pickle.loads")}),
    ("np.load(p, allow_pickle=True)", {("<module>", "np.load")}),
    ("np.load(p, mmap_mode='r', allow_pickle=False)", set()),
    ("from pickle import load", {("<module>", "from pickle import load")}),
])
def test_the_scan_finds_unsafe_calls(source, found):
    assert _unsafe_calls(source) == found


def test_source_never_unpickles_by_default():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 40
    sites = [site for path in files for site in _unsafe_sites(path)]
    assert set(sites) == ALLOWED, f"unsafe loading in the package: {sorted(set(sites) - ALLOWED)}"
    guarded = (PACKAGE / "hub/state_dicts.py").read_text()
    body = guarded[guarded.index("def torch_load"):guarded.index("weights_only=False)")]
    assert "weights_only=True" in body and "if not _TRUST_PICKLE.get():" in body  # the full load is opt-in


class _Payload:
    """Unpickles (only with weights_only=False) by running code: writes ``marker``, returns zeros."""

    def __init__(self, marker: Path, shape: tuple[int, ...]):
        write = f"__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
        self.code = f"({write}, __import__('torch').zeros({shape}))[1]"

    def __reduce__(self):
        return (eval, (self.code,))


@pytest.fixture()
def official_with_payload(official_copy, tmp_path):
    folder = official_copy
    original = torch.load(folder / "cell_proj.bin", weights_only=True)
    marker = tmp_path / "payload_ran"
    torch.save({"weight": _Payload(marker, tuple(original["weight"].shape)), "bias": original["bias"]},
               folder / "cell_proj.bin")
    return folder, marker, original


def test_crafted_official_pickle_is_refused_and_never_runs(official_with_payload):
    folder, marker, original = official_with_payload
    with pytest.raises(CheckpointError) as caught:
        load_model(folder)
    message = str(caught.value)
    assert "cell_proj.bin holds Python objects" in message and "Fix:" in message and "trust_pickle=True" in message
    assert not marker.exists()
    with pytest.warns(UserWarning, match=r"UNSAFE: unpickling .*cell_proj\.bin"):
        model = load_model(folder, trust_pickle=True)
    assert marker.read_text() == "ran"  # trusting really unpickles (and runs the code)
    assert torch.equal(model.cell_proj.weight, torch.zeros_like(original["weight"]))
    marker.unlink()
    with pytest.raises(CheckpointError):
        load_model(folder)  # trust is not remembered
    assert not marker.exists()


def test_crafted_lightning_checkpoint_is_refused_by_us_and_by_resume(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "crafted.ckpt"
    torch.save({"state_dict": {"model.temp": torch.tensor(0.07)}, "epoch": _Payload(marker, (1,))}, path)
    with pytest.raises(CheckpointError, match=r"crafted\.ckpt holds Python objects .*Fix: .*trust_pickle=True"):
        load_model(path)
    pl = pytest.importorskip("lightning.pytorch")
    trainer = pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    with pytest.raises(Exception, match="Weights only load failed"):
        trainer.strategy.load_checkpoint(path)  # what Trainer.fit(ckpt_path=...) calls: torch's safe default
    assert not marker.exists()


def _file_kind(path: Path) -> str:
    """What a written file is, checked by parsing it; fails on pickles and torch zip archives."""
    raw = path.read_bytes()
    assert not raw.startswith(b"\x80"), f"{path} is a pickle"
    assert not raw.startswith(b"PK\x03\x04"), f"{path} is a zip archive (torch.save format)"
    name = path.name
    if name.endswith(".safetensors"):
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            assert list(handle.keys())
        return "safetensors"
    if name.endswith(".npy"):
        assert np.load(path, allow_pickle=False).dtype != object
        return "npy"
    if name.endswith(".json"):
        json.loads(raw)
        return "json"
    if name.endswith(".json.gz"):
        json.loads(gzip.decompress(raw))
        return "json.gz"
    if name.endswith((".txt", ".md")):
        raw.decode("utf-8")
        return "text"
    raise AssertionError(f"{path}: a file of unexpected kind in our output")


def test_our_format_and_corpus_hold_no_pickle(test_data_dir, tmp_path):
    from lightning_langcell.data import tokenize_to_corpus
    from lightning_langcell.models import LangCellConfig, LangCellModel
    from lightning_langcell.text import load_text_tokenizer

    config = LangCellConfig.preset("tiny", text={"vocab_size": len(load_text_tokenizer())})
    ours = LangCellModel(config).save_pretrained(tmp_path / "ours", model_card="# tiny")
    kinds = {p.relative_to(ours).as_posix(): _file_kind(p) for p in ours.rglob("*") if p.is_file()}
    assert kinds["model.safetensors"] == "safetensors" and kinds["config.json"] == "json"
    assert set(kinds.values()) <= {"safetensors", "json", "json.gz", "text"}

    corpus = tokenize_to_corpus(test_data_dir / "corpus_pbmc68k" / "pbmc_50cells.h5ad", tmp_path / "corpus")
    kinds = {p.relative_to(corpus.path).as_posix(): _file_kind(p) for p in corpus.path.rglob("*") if p.is_file()}
    assert kinds["tokens.npy"] == "npy" and kinds["manifest.json"] == "json"
    assert set(kinds.values()) == {"npy", "json"}
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]
