"""Packed cell batches with a token budget, as the GPU recipes train by default, end to end on CPU:
the data module's batches, the first step's losses against the padded path, a CLI fit, an exact
mid-epoch resume, and the refusal of packed batches by every task but pre-training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_langcell.cli import main
from lightning_langcell.data.datamodule import LangCellDataModule
from lightning_langcell.tasks import LangCellPretraining

L = pytest.importorskip("lightning")

REPO = Path(__file__).resolve().parents[2]
CELLS = REPO / "tests" / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
SHIPPED = REPO / "checkpoints" / "langcell-tiny-bundled"
ALL_OBJECTIVES = {"mgm": 1.0, "cell_cell": 1.0, "cell_text": 1.0, "matching": 1.0}
BUDGET, MAX_CELLS, MAX_LENGTH = 200, 8, 64  # 3 full cells per budget; most cells are full here
FAST_TRAINER = ["--trainer.accelerator", "cpu", "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("corpora"))


def data_module(cache_dir: str, packed: bool, **kwargs) -> LangCellDataModule:
    settings = {"max_length": MAX_LENGTH, "batch_size": 4, "batch_tokens": BUDGET, "max_cells_per_batch": MAX_CELLS,
                "split": (0.8, 0.1, 0.1), "seed": 0, **kwargs}
    module = LangCellDataModule(data=str(CELLS), cache_dir=cache_dir, label_column="cell_type", texts=True,
                                text_max_length=64, packed=packed, **settings)
    module.setup("fit")
    return module


def test_packed_token_budget_batches_keep_the_budget_and_cover_the_train_split_once(cache_dir):
    packed = list(data_module(cache_dir, packed=True).train_dataloader())
    module = data_module(cache_dir, packed=False)
    padded = list(module.train_dataloader())
    assert len(packed) == len(padded) > 1
    for one, other in zip(packed, padded):
        cells = len(one["index"])
        total = int(one["cu_seqlens"][-1])
        assert total <= BUDGET or cells == 1
        assert cells <= MAX_CELLS
        assert one["input_ids"].shape == (1, total) and one["mgm_input_ids"].shape == (1, total)
        # the same cells as the padded batch, and exactly its real tokens
        assert one["index"].tolist() == other["index"].tolist()
        assert total == int(other["attention_mask"].sum())
        assert torch.equal(one["input_ids"][0], other["input_ids"][other["attention_mask"].bool()])
    seen = sorted(int(i) for batch in packed for i in batch["index"])
    assert seen == sorted(module.splits["train"].tolist())
    # the budget binds (3 full cells of 64 tokens), not the cap of 8 cells
    assert max(len(batch["index"]) for batch in packed) == 3


def test_first_step_losses_packed_equal_padded(cache_dir):
    torch.manual_seed(0)
    task = LangCellPretraining(model="tiny", loss_weights=ALL_OBJECTIVES).eval()  # no dropout: same numbers
    packed = next(iter(data_module(cache_dir, packed=True).train_dataloader()))
    padded = next(iter(data_module(cache_dir, packed=False).train_dataloader()))
    assert "cu_seqlens" in packed and "cu_seqlens" not in padded
    with torch.no_grad():
        total_packed, logs_packed = task.compute_losses(packed)
        total_padded, logs_padded = task.compute_losses(padded)
    assert float(total_packed) == pytest.approx(float(total_padded), rel=1e-5)
    for name in ("loss_mgm", "loss_cell_cell", "loss_cell_text", "loss_matching"):
        assert float(logs_packed[name]) == pytest.approx(float(logs_padded[name]), rel=1e-5), name
        assert float(logs_padded[name]) > 0


def test_cpu_fit_with_packed_token_budget_runs_every_planned_batch(tmp_path, cache_dir):
    cli = main(["fit", "--config", str(REPO / "recipes" / "pretrain.yaml"),
                "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.max_epochs", "2",
                "--trainer.limit_val_batches", "1", "--trainer.reload_dataloaders_every_n_epochs", "1",
                "--trainer.enable_progress_bar", "false",
                "--data.data", str(CELLS), "--data.cache_dir", cache_dir, "--data.max_length", str(MAX_LENGTH),
                "--data.text_max_length", "64", "--data.batch_size", "4", "--data.num_workers", "0",
                "--data.packed", "true", "--data.batch_tokens", str(BUDGET),
                "--data.max_cells_per_batch", str(MAX_CELLS)])
    trainer, data = cli.trainer, cli.datamodule
    assert data.hparams.packed and data.collator(masked=True, packed=data.hparams.packed).packed
    sampler = data._train_batches.batch_sampler
    assert type(sampler).__name__ == "TokenBudgetBatchSampler"
    planned = sum(len(sampler.rank_batches(epoch)) for epoch in range(2))
    assert trainer.global_step == planned > 2
    for name in ("train/loss", "train/loss_mgm", "train/loss_cell_cell", "train/loss_cell_text",
                 "train/loss_matching", "val/loss"):
        value = trainer.callback_metrics[name]
        assert torch.isfinite(value) and float(value) > 0, name


class RecordingPretraining(LangCellPretraining):
    """Pre-training that records every training batch's cells, packing and loss."""

    def training_step(self, batch, batch_idx):
        loss = super().training_step(batch, batch_idx)
        self.seen.append((self.current_epoch, batch["index"].tolist(), batch["cu_seqlens"].tolist(), float(loss)))
        return loss


def fit_recording(directory: Path, cache_dir: str, ckpt_path: Path | None = None) -> list:
    L.seed_everything(0)
    task = RecordingPretraining(model="tiny", loss_weights={"mgm": 1.0, "cell_cell": 1.0, "cell_text": 1.0,
                                                              "matching": 0.0}, warmup_steps=2)
    task.seen = []
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(directory, save_top_k=-1, filename="{step}",
                                                      every_n_train_steps=4)
    trainer = L.Trainer(max_epochs=2, reload_dataloaders_every_n_epochs=1, accelerator="cpu", devices=1,
                        callbacks=[checkpoints], logger=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, num_sanity_val_steps=0, use_distributed_sampler=False)
    trainer.fit(task, datamodule=data_module(cache_dir, packed=True, pool_size=2), ckpt_path=ckpt_path)
    return task.seen


def test_mid_epoch_resume_with_packed_token_budget_runs_exactly_the_remaining_batches(tmp_path, cache_dir):
    full = fit_recording(tmp_path / "full", cache_dir)
    per_epoch = [sum(1 for epoch, *_ in full if epoch == e) for e in (0, 1)]
    assert min(per_epoch) > 4  # step 4 is mid-epoch 0, step 4·k past the first epoch is mid-epoch 1
    steps = [4, 4 * (per_epoch[0] // 4 + 1)]
    assert steps[1] < len(full)
    for step in steps:
        resumed = fit_recording(tmp_path / f"from{step}", cache_dir, tmp_path / "full" / f"step={step}.ckpt")
        assert [row[:3] for row in resumed] == [row[:3] for row in full[step:]]
        assert [row[3] for row in resumed] == pytest.approx([row[3] for row in full[step:]], rel=1e-5)


# a task that reads padded batches, given data.packed: (CLI arguments, the task's name)
REFUSED = {
    "classifier": (["fit", "--config", str(REPO / "recipes" / "linear_probe.yaml"), "--model.init_args.init_from",
                    "null", "--trainer.max_epochs", "1"], "CellTypeClassifier"),
    "few_shot": (["fit", "--config", str(REPO / "recipes" / "few_shot.yaml"), "--model.init_args.init_from",
                  "null", "--trainer.max_epochs", "1", "--data.k_shot", "1"], "FewShotLangCell"),
    "embed": (["predict", "--config", str(REPO / "recipes" / "embed.yaml"), "--model.init_args.init_from",
               str(SHIPPED)], "LangCellEmbedder"),
}


@pytest.mark.parametrize("task", list(REFUSED))
def test_tasks_other_than_pretraining_refuse_packed_batches_before_any_step(task, tmp_path, monkeypatch, cache_dir,
                                                                              capsys):
    args, name = REFUSED[task]
    monkeypatch.chdir(tmp_path)  # the run folders of the recipes
    monkeypatch.delenv("LANGCELL_DEBUG", raising=False)  # the CLI's error lines, not a traceback
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data.data", str(CELLS), "--data.cache_dir", cache_dir, "--data.packed", "true", *FAST_TRAINER])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("error: "))
    assert lines[first] == (f"error: data.packed is true, but {name} reads padded cell batches: it would take each "
                            "packed batch for one long cell. Packed batches are for pre-training "
                            "(LangCellPretraining) only.")
    assert lines[first + 1] == f"fix: Set data.packed: false (drop --data.packed true) for {name}."
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("*.h5ad"))  # nothing trained or written
