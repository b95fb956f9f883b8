"""Test-split predictions gathered from two CPU processes: every test cell exactly once."""

import numpy as np
import pytest
from classification_checks import PBMC, read_results, reference_metrics


@pytest.mark.slow
def test_two_process_test_run_covers_each_cell_once(repo_root, corpus_cache, tmp_path):
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from lightning_langcell.data.datamodule import LangCellDataModule
    from lightning_langcell.tasks.cell_classifier import CellTypeClassifier

    data = LangCellDataModule(
        str(repo_root / PBMC), cache_dir=str(corpus_cache), texts=False, split=(0.67, 0.0, 0.33),
        batch_size=16, eval_batch_size=25, max_length=32,
    )
    data.setup("test")
    task = CellTypeClassifier(model="tiny")
    logger = CSVLogger(tmp_path, name="ddp", version="run")
    trainer = pl.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", logger=logger,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False)
    trainer.test(task, datamodule=data)
    results, predictions = read_results(tmp_path / "ddp" / "run")
    np.testing.assert_array_equal(predictions["cell_index"], data.splits["test"])  # sorted, no repeats
    assert results["evaluated_cells"] == len(data.splits["test"])
    for name, value in reference_metrics(predictions["label"], predictions["prediction"]).items():
        assert results["metrics"][name] == pytest.approx(value, abs=1e-6), name
