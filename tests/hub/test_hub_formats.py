"""The registry of checkpoint formats: each built-in handler claims its own layout and no other's,
and a format registered from outside loads through ``load_model`` and the part finders."""

import json
from pathlib import Path

import pytest
import torch

from lightning_langcell.errors import CheckpointError
from lightning_langcell.hub import (
    BUILTIN_FORMATS,
    CheckpointFormat,
    LoadReport,
    detect_format,
    load_gene_vocabulary_for,
    load_model,
    load_model_with_report,
    load_text_tokenizer_for,
    register_format,
    registered_formats,
    unregister_format,
)
from lightning_langcell.models import LangCellConfig, LangCellModel


@pytest.fixture()
def layouts(official_dir, geneformer_dir, tiny_bert_dir, tiny_model, tmp_path) -> dict[str, Path]:
    """One example of every built-in layout, keyed by the format name that must claim it."""
    checkpoint = tmp_path / "run.ckpt"
    torch.save({"state_dict": {}}, checkpoint)
    return {
        "ours": tiny_model.save_pretrained(tmp_path / "ours"),
        "official": official_dir,
        "geneformer": geneformer_dir,
        "lightning": checkpoint,
        "hf_bert": tiny_bert_dir,
    }


def test_builtin_formats_are_registered_in_detection_order():
    assert [handler.name for handler in registered_formats()][:5] == [
        "ours", "official", "geneformer", "lightning", "hf_bert"]
    assert registered_formats()[:5] == BUILTIN_FORMATS


@pytest.mark.parametrize("handler", BUILTIN_FORMATS, ids=lambda handler: handler.name)
def test_each_builtin_handler_detects_its_own_layout_and_no_other(handler, layouts):
    claimed = {name for name, path in layouts.items() if handler.detect(path)}
    assert claimed == {handler.name}
    assert detect_format(layouts[handler.name]) is handler


TOY_FILE = "toy_langcell.json"


def _toy_detect(path: Path) -> bool:
    return path.is_dir() and (path / TOY_FILE).is_file()


def _toy_load(path: Path, attn_implementation=None, scale: float = 1.0):
    """A tiny model whose every parameter equals ``scale`` times the ``fill`` value of the toy file."""
    fill = json.loads((path / TOY_FILE).read_text())["fill"] * scale
    model = LangCellModel(LangCellConfig.preset("tiny", attn_implementation=attn_implementation or "sdpa"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(fill)
    return model.eval(), LoadReport(loaded=["*"], notes=[f"toy fill {fill}"])


@pytest.fixture()
def toy_format():
    handler = CheckpointFormat(
        name="toy",
        description="a toy folder (toy_langcell.json)",
        detect=_toy_detect,
        load=_toy_load,
        text_tokenizer=lambda path: ("toy tokenizer of", path.name),
        gene_vocabulary=lambda path: ("toy vocabulary of", path.name),
        load_options=("scale",),
    )
    register_format(handler)
    try:
        yield handler
    finally:
        unregister_format("toy")


def test_a_registered_toy_format_loads_through_load_model(toy_format, tmp_path, layouts):
    folder = tmp_path / "toy_checkpoint"
    folder.mkdir()
    (folder / TOY_FILE).write_text(json.dumps({"fill": 0.25}))
    assert detect_format(folder) is toy_format
    model, report = load_model_with_report(folder, attn_implementation="eager")
    assert isinstance(model, LangCellModel) and not model.training
    assert model.config.attn_implementation == "eager"
    assert all(bool((p == 0.25).all()) for p in model.parameters())
    assert report.notes == ["toy fill 0.25"]
    assert torch.equal(LangCellModel.from_pretrained(folder).temp, torch.tensor([0.25]))
    assert load_text_tokenizer_for(folder) == ("toy tokenizer of", "toy_checkpoint")
    assert load_gene_vocabulary_for(folder) == ("toy vocabulary of", "toy_checkpoint")
    # no built-in layout is claimed by the toy handler
    assert not any(toy_format.detect(path) for path in layouts.values())
    # the format's own load options pass through load_model; other formats refuse them
    assert torch.equal(load_model(folder, scale=2.0).temp, torch.tensor([0.5]))
    with pytest.raises(CheckpointError, match="apply only to checkpoints in format 'geneformer'; .* is 'toy'"):
        load_model(folder, text_source="biomedbert")
    with pytest.raises(CheckpointError, match="scale apply only to checkpoints in format 'toy'; .* is 'official'"):
        load_model(layouts["official"], scale=2.0)


def test_unregistered_format_is_no_longer_detected(tmp_path):
    folder = tmp_path / "toy_checkpoint"
    folder.mkdir()
    (folder / TOY_FILE).write_text(json.dumps({"fill": 0.5}))
    handler = register_format(CheckpointFormat("toy", "a toy folder", _toy_detect, _toy_load, lambda path: None))
    assert detect_format(folder) is handler
    with pytest.raises(CheckpointError, match="'toy' is already registered"):
        register_format(handler)
    unregister_format("toy")
    with pytest.raises(CheckpointError, match=r"not a checkpoint folder this library knows .*Expected one of: our"):
        detect_format(folder)
