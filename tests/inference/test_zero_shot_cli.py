"""``python -m lightning_langcell predict --config recipes/zero_shot.yaml``: the annotated .h5ad,
its values (equal to the Python API) and the metrics + confusion matrix in TensorBoard."""

import anndata
import numpy as np
import pytest

from lightning_langcell.inference import annotate


def test_cli_predict_writes_the_annotated_h5ad(pbmc_h5ad, tiny_checkpoint, repo_root, tmp_path):
    from lightning_langcell.cli import main

    runs = tmp_path / "runs"
    output = tmp_path / "annotated.h5ad"
    main([
        "predict", "--config", str(repo_root / "recipes" / "zero_shot.yaml"),
        "--data.data", str(pbmc_h5ad), "--data.cache_dir", str(tmp_path / "cache"), "--data.batch_size", "16",
        "--model.init_args.init_from", str(tiny_checkpoint), "--model.init_args.output", str(output),
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(runs),
        "--trainer.logger.init_args.save_dir", str(runs), "--model.init_args.unknown_threshold", "0.5",
    ])
    written = anndata.read_h5ad(output)
    expected = annotate(pbmc_h5ad, tiny_checkpoint)
    probs = written.obsm["langcell_probabilities"]
    assert list(written.uns["langcell_classes"]) == list(expected.uns["langcell_classes"])
    np.testing.assert_allclose(probs, expected.obsm["langcell_probabilities"], atol=1e-6)  # NaN row 3 included
    np.testing.assert_allclose(written.obsm["X_langcell"], expected.obsm["X_langcell"], atol=1e-6)
    assert (written.obs["langcell_prediction"].astype(str) == expected.obs["langcell_prediction"].astype(str)).all()
    unknown = expected.obs["langcell_unknown_score"].to_numpy()
    np.testing.assert_allclose(written.obs["langcell_unknown_score"], unknown, atol=1e-6)
    np.testing.assert_array_equal(written.obs["langcell_unknown"].to_numpy(), unknown > 0.5)  # the CLI's threshold
    assert written.uns["langcell"]["unknown_threshold"] == 0.5
    metrics = written.uns["langcell"]["metrics"]
    assert metrics["accuracy"] == pytest.approx(expected.uns["langcell"]["metrics"]["accuracy"])
    assert written.uns["langcell"]["n_cells_scored"] == 48  # cell 3: filter_pass 0; cell 29: no gene

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (run,) = (runs / "tensorboard").iterdir()
    events = EventAccumulator(str(run))
    events.Reload()
    assert "zero_shot/confusion_matrix" in events.Tags()["images"]  # matplotlib is a dependency
    (accuracy,) = events.Scalars("zero_shot/accuracy")
    assert accuracy.value == pytest.approx(metrics["accuracy"])
