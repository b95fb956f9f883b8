"""The zero-shot and embedding recipes: the cell length comes from the checkpoint unless set, an
existing output is refused before the first batch (``overwrite`` replaces it), one candidate
class is refused at setup."""

from __future__ import annotations

import anndata
import pytest

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.tasks.embed import LangCellEmbedder
from lightning_langcell.tasks.zero_shot import LangCellZeroShot

BUNDLED = "checkpoints/langcell-tiny-bundled"


@pytest.fixture()
def predict(repo_root, tmp_path, tmp_path_factory, monkeypatch):
    """``predict(recipe, data, checkpoint, *extra)``: the recipe in-process on CPU; returns the LightningCLI."""
    from lightning_langcell.cli import main

    monkeypatch.setattr("sys.argv", ["lightning_langcell"])
    monkeypatch.setenv("LANGCELL_DEBUG", "1")  # the library's errors propagate (not a printed message + exit 2)
    cache = tmp_path_factory.getbasetemp() / "zero_shot_default_corpora"

    def run(recipe, data, checkpoint, *extra):
        return main([
            "predict", "--config", str(repo_root / "recipes" / recipe), "--data.data", str(data),
            "--data.cache_dir", str(cache), "--data.batch_size", "16",
            "--model.init_args.init_from", str(checkpoint),
            "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(tmp_path / "runs"),
            "--trainer.logger", "false", "--trainer.enable_progress_bar", "false", *extra,
        ])

    return run


@pytest.fixture()
def scored_batches(monkeypatch):
    """Counts the predict_step calls of both predict tasks."""
    calls = []
    for task in (LangCellZeroShot, LangCellEmbedder):
        original = task.predict_step

        def counted(self, batch, batch_idx, original=original):
            calls.append(batch_idx)
            return original(self, batch, batch_idx)

        monkeypatch.setattr(task, "predict_step", counted)
    return calls


def test_cell_length_comes_from_the_checkpoint_unless_set(predict, pbmc_h5ad, tiny_checkpoint, repo_root, tmp_path):
    bundled = predict("zero_shot.yaml", pbmc_h5ad, repo_root / BUNDLED, "--model.init_args.output",
                      str(tmp_path / "bundled.h5ad"))
    assert bundled.datamodule.hparams.max_length == 256  # how langcell-tiny-bundled was trained
    assert bundled.datamodule.predict_dataloader().collate_fn.max_length == 256
    assert anndata.read_h5ad(tmp_path / "bundled.h5ad").uns["langcell"]["max_length"] == 256
    chosen = predict("zero_shot.yaml", pbmc_h5ad, repo_root / BUNDLED, "--data.max_length", "128",
                     "--model.init_args.output", str(tmp_path / "chosen.h5ad"))
    assert chosen.datamodule.hparams.max_length == 128
    official = predict("zero_shot.yaml", pbmc_h5ad, tiny_checkpoint, "--model.init_args.output",
                       str(tmp_path / "official.h5ad"))
    assert official.datamodule.hparams.max_length == 2048  # the official layout: its 2,048 positions
    embedded = predict("embed.yaml", pbmc_h5ad, repo_root / BUNDLED, "--model.init_args.output",
                       str(tmp_path / "embedded.h5ad"))
    assert embedded.datamodule.hparams.max_length == 256
    with pytest.raises(LangCellInputError, match="exceeds the model's 2048 cell positions"):
        predict("zero_shot.yaml", pbmc_h5ad, tiny_checkpoint, "--data.max_length", "4096",
                "--model.init_args.output", str(tmp_path / "too_long.h5ad"))


@pytest.mark.parametrize("recipe", ["zero_shot.yaml", "embed.yaml"])
def test_existing_output_is_refused_before_the_first_batch(predict, scored_batches, pbmc_h5ad, repo_root,
                                                           tmp_path, recipe):
    output = tmp_path / "done.h5ad"
    output.write_bytes(b"finished work")
    with pytest.raises(LangCellInputError, match=r"done.h5ad exists") as refused:
        predict(recipe, pbmc_h5ad, repo_root / BUNDLED, "--model.init_args.output", str(output))
    assert scored_batches == [] and output.read_bytes() == b"finished work"
    assert "--model.init_args.overwrite true" in str(refused.value)
    predict(recipe, pbmc_h5ad, repo_root / BUNDLED, "--model.init_args.output", str(output),
            "--model.init_args.overwrite", "true")
    assert scored_batches and anndata.read_h5ad(output).obsm["X_langcell"].shape == (50, 256)


def test_one_candidate_class_is_refused_at_setup(predict, scored_batches, pbmc_h5ad, repo_root, tmp_path):
    with pytest.raises(LangCellInputError, match="at least 2 candidate classes"):
        predict("zero_shot.yaml", pbmc_h5ad, repo_root / BUNDLED, "--model.init_args.classes", "[CL:0000236]",
                "--model.init_args.output", str(tmp_path / "one.h5ad"))
    assert scored_batches == [] and not (tmp_path / "one.h5ad").exists()
