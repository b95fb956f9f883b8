"""The shipped checkpoint's recipe holds the settings it was trained with, trains through the CLI,
and the one-command script keeps the lowest-val/loss epoch and converts exactly that state."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/pretrain_tiny_bundled.yaml"
SMALL = [  # one small dataset, short cells, a few batches: the recipe's logic at test size
    "--data.data", str(REPO / "data/cells/mouse_lung_injury.h5ad"), "--data.max_length", "32",
    "--data.batch_size", "8", "--data.num_workers", "0", "--trainer.limit_train_batches", "2",
    "--trainer.limit_val_batches", "2", "--trainer.log_every_n_steps", "1",
]


def test_recipe_records_the_shipped_training_settings():
    recipe = yaml.safe_load(RECIPE.read_text())
    trainer, data = recipe["trainer"], recipe["data"]
    assert (trainer["accelerator"], trainer["devices"], trainer["precision"], trainer["max_epochs"]) == (
        "gpu", 1, "32-true", 40)
    (checkpoint,) = [c["init_args"] for c in trainer["callbacks"] if c["class_path"].endswith("ModelCheckpoint")]
    assert (checkpoint["monitor"], checkpoint["mode"], checkpoint["save_top_k"]) == ("val/loss", "min", 1)
    assert (data["num_workers"], data["max_length"], data["batch_size"], data["split"], data["seed"]) == (
        4, 256, 32, [0.8, 0.1, 0.1], 0)
    # the same model, objectives and data as the embedded pre-training recipe
    base = yaml.safe_load((REPO / "recipes/pretrain.yaml").read_text())
    assert recipe["model"] == base["model"]
    assert {k: v for k, v in data.items() if k != "num_workers"} == {
        k: v for k, v in base["data"].items() if k != "num_workers"}


def test_recipe_trains_on_cpu_through_the_cli(tmp_path):
    from lightning_langcell.cli import main

    cli = main(["fit", "--config", str(RECIPE), "--trainer.default_root_dir", str(tmp_path / "run"),
                "--data.cache_dir", str(tmp_path / "cache"), "--trainer.accelerator", "cpu",
                "--trainer.max_epochs", "1", *SMALL])
    assert cli.trainer.global_step == 2 and cli.trainer.precision == "32-true"
    assert cli.trainer.checkpoint_callback.monitor == "val/loss"
    assert torch.isfinite(cli.trainer.callback_metrics["val/loss"])


def test_train_script_converts_the_lowest_val_loss_epoch(tmp_path):
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import train_shipped_checkpoint as script
    finally:
        sys.path.remove(str(REPO / "scripts"))
    from lightning_langcell import load_model

    assert script.fit_argv("cpu", tmp_path, [])[-4:] == ["--trainer.accelerator", "cpu", "--data.num_workers", "0"]
    output = script.main(["--accelerator", "cpu", "--root", str(tmp_path / "run"), "--output", str(tmp_path / "out"),
                          "--no-benchmark", "--data.cache_dir", str(tmp_path / "cache"), "--trainer.max_epochs", "3",
                          *SMALL])
    (kept,) = (tmp_path / "run" / "checkpoints").glob("best-*.ckpt")
    state = torch.load(kept, weights_only=True)
    losses = []
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events_dir,) = (tmp_path / "run" / "tensorboard").iterdir()
    events = EventAccumulator(str(events_dir))
    events.Reload()
    losses = [scalar.value for scalar in events.Scalars("val/loss")]
    assert len(losses) == 3
    best_epoch = min(range(3), key=losses.__getitem__)
    assert state["epoch"] == best_epoch and f"epoch={best_epoch}" in kept.name
    converted = load_model(str(output))
    weights = {k.removeprefix("model."): v for k, v in state["state_dict"].items() if k.startswith("model.")}
    for name, value in converted.state_dict().items():
        torch.testing.assert_close(value, weights[name].reshape(value.shape), rtol=0, atol=0)
