"""Starting from a checkpoint trains in train mode: every dropout layer of the trained parts is
active in ``training_step`` (the loader returns eval mode and Lightning keeps submodule modes)."""

from __future__ import annotations

import pytest
from torch import nn

from lightning_langcell.tasks.classify import CellClassificationTask
from lightning_langcell.tasks.pretrain import LangCellPretraining

CHECKPOINT = "checkpoints/langcell-tiny-bundled"
ONE_STEP = ["--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "0",
            "--trainer.num_sanity_val_steps", "0"]


def _record_modes(monkeypatch, task_class) -> list[dict[str, bool]]:
    """Patch ``task_class.training_step`` to record ``{module name: training}`` at each call."""
    seen: list[dict[str, bool]] = []
    original = task_class.training_step

    def training_step(self, batch, batch_idx):
        seen.append({name: module.training for name, module in self.named_modules()})
        return original(self, batch, batch_idx)

    monkeypatch.setattr(task_class, "training_step", training_step)
    return seen


def _dropout_names(cli) -> list[str]:
    return [name for name, module in cli.model.named_modules() if isinstance(module, nn.Dropout)]


@pytest.mark.parametrize(
    ("recipe", "extra", "frozen_prefix", "n_dropout"),
    [
        ("few_shot.yaml", ["--data.k_shot", "2"], None, 14),  # both encoders: 7 dropout layers each
        ("finetune.yaml", [], None, 8),  # cell encoder (7) + head dropout
        ("linear_probe.yaml", ["--model.init_args.freeze_encoder", "false"], None, 8),
        ("linear_probe.yaml", [], "cell_bert", 8),  # documented: a frozen encoder stays in eval mode
    ],
)
def test_tasks_train_with_dropout_on_from_a_checkpoint(run_cli, repo_root, monkeypatch, recipe, extra,
                                                       frozen_prefix, n_dropout):
    seen = _record_modes(monkeypatch, CellClassificationTask)
    cli = run_cli("fit", recipe, *ONE_STEP, *extra, "--model.init_args.init_from", str(repo_root / CHECKPOINT))
    assert len(seen) == 1
    dropouts = _dropout_names(cli)
    assert len(dropouts) == n_dropout
    for name, training in seen[0].items():
        frozen = frozen_prefix is not None and name.startswith(frozen_prefix)
        assert training is not frozen, name
    if "dropout" in seen[0]:
        assert seen[0]["dropout"]  # the classifier's head dropout trains in every case


def test_stage_two_pretraining_from_a_checkpoint_trains_with_dropout_on(run_cli, repo_root, monkeypatch):
    seen = _record_modes(monkeypatch, LangCellPretraining)
    cli = run_cli("fit", "pretrain.yaml", *ONE_STEP, "--model.init_args.init_from", str(repo_root / CHECKPOINT),
                  "--data.text_tokenizer", str(repo_root / CHECKPOINT / "text_tokenizer"))
    assert len(seen) == 1 and len(_dropout_names(cli)) == 14
    assert all(seen[0].values()), [name for name, training in seen[0].items() if not training]
