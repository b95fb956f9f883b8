"""Every pre-training recipe parses and trains a few steps through the CLI (sizes overridden down)."""

from pathlib import Path

import pytest
import torch

from lightning_langcell.cli import main

REPO = Path(__file__).resolve().parents[2]
SMALL_DATA = str(REPO / "data/cells/mouse_lung_injury.h5ad")
CPU_OVERRIDES = [
    "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.strategy", "auto",
    "--trainer.precision", "32-true", "--trainer.max_steps", "2", "--trainer.limit_val_batches", "1",
    "--trainer.val_check_interval", "1.0", "--trainer.num_nodes", "1",
    "--model.init_args.model", "tiny", "--model.init_args.init_from", "null",
    "--data.data", SMALL_DATA, "--data.max_length", "32", "--data.batch_size", "8", "--data.num_workers", "0",
    "--data.split", "[0.8, 0.1, 0.1]",
]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("corpora"))


def run_fit(recipe: str, root: Path, cache_dir: str, extra=()):
    return main(["fit", "--config", str(REPO / "recipes" / recipe), "--trainer.default_root_dir", str(root),
                 "--data.cache_dir", cache_dir, *CPU_OVERRIDES, *extra])


@pytest.mark.parametrize(
    "recipe, active",
    [
        ("pretrain.yaml", {"mgm", "cell_cell", "cell_text", "matching"}),
        ("pretrain_stage1.yaml", {"mgm", "cell_cell"}),
        ("pretrain_stage2.yaml", {"mgm", "cell_cell", "cell_text", "matching"}),
        ("pretrain_langcell_full.yaml", {"mgm", "cell_cell", "cell_text", "matching"}),
    ],
)
def test_recipe_trains_its_objectives(recipe, active, tmp_path, cache_dir):
    cli = run_fit(recipe, tmp_path / "run", cache_dir)
    trainer, module = cli.trainer, cli.model
    assert trainer.global_step == 2
    logged = {k.split("train/loss_")[1] for k in trainer.callback_metrics if k.startswith("train/loss_")}
    assert logged == active
    for name in active:
        assert torch.isfinite(trainer.callback_metrics[f"train/loss_{name}"])
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == trainer.global_step
    # a monitored ModelCheckpoint would rewrite last.ckpt only on improvement (Lightning 2.6)
    assert all(callback.monitor is None for callback in trainer.checkpoint_callbacks)
    if recipe == "pretrain_stage1.yaml":  # the frozen text side does not move
        assert not any(p.requires_grad for p in module.model.text_bert.parameters())
        assert not module.model.temp.requires_grad
    if recipe == "pretrain.yaml":  # TensorBoard event files are written
        assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))


def test_resume_from_last_checkpoint_continues_the_step_count(tmp_path, cache_dir):
    run_fit("pretrain.yaml", tmp_path / "run", cache_dir)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    cli = run_fit("pretrain.yaml", tmp_path / "run", cache_dir, ["--trainer.max_steps", "4", "--ckpt_path", str(last)])
    assert cli.trainer.global_step == 4


def test_help_and_overview(capsys):
    main(["--help"])
    out = capsys.readouterr().out
    for command in ("fit", "validate", "test", "predict", "tokenize"):
        assert command in out
    with pytest.raises(SystemExit) as exit_info:
        main(["tokenize", "--help"])
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out
