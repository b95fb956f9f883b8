"""Pluggable objectives: one registered from a test trains through ``LangCellPretraining``, and an
objective whose inputs are missing is an error (at setup, and at the batch), never a skipped term."""

from pathlib import Path

import numpy as np
import pytest
import torch

pl = pytest.importorskip("lightning.pytorch")

from torch.utils.data import DataLoader  # noqa: E402

from lightning_langcell.data.collate import CellBatchCollator  # noqa: E402
from lightning_langcell.data.datamodule import LangCellDataModule  # noqa: E402
from lightning_langcell.errors import LangCellInputError  # noqa: E402
from lightning_langcell.objectives import Objective, register_objective, unregister_objective  # noqa: E402
from lightning_langcell.tasks import LangCellPretraining  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
STAGE1 = {"mgm": 1.0, "cell_cell": 1.0, "cell_text": 0.0, "matching": 0.0}


class HiddenEnergy(Objective):
    """Toy objective: mean squared hidden state of the unmasked cells."""

    name = "hidden_energy"
    weight = 0.0  # off unless a recipe names it
    batch_fields = ("input_ids", "attention_mask")
    outputs = ("cells",)

    def compute(self, step):
        hidden, _ = step.output("cells")
        return hidden.pow(2).mean(), {"hidden_energy_max": hidden.detach().abs().max()}


class NeedsPairs(Objective):
    name = "needs_pairs"
    weight = 0.0
    batch_fields = ("input_ids", "cell_pairs")
    fix = "Add `cell_pairs` to the batches."

    def compute(self, step):
        raise AssertionError("never computed: its input is missing")


@pytest.fixture
def registered():
    objectives = [register_objective(HiddenEnergy()), register_objective(NeedsPairs())]
    yield
    for objective in objectives:
        unregister_objective(objective.name)


def cell_items(count: int = 8, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [{"index": i, "epoch": 0, "input_ids": rng.choice(np.arange(2, 25000), 12 + i, replace=False)}
            for i in range(count)]


def quiet_trainer(**options) -> "pl.Trainer":
    return pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                      enable_model_summary=False, **options)


def test_registered_toy_objective_is_in_the_total_and_trains(registered):
    batch = CellBatchCollator(max_length=32, mgm_probability=0.15)(cell_items())
    torch.manual_seed(0)
    task = LangCellPretraining(loss_weights={**STAGE1, "hidden_energy": 0.5}).eval()
    total, logs = task.compute_losses(batch)
    hidden = task.model.encode_cells(batch["input_ids"], batch["attention_mask"])[0]  # eval: no dropout
    assert float(logs["loss_hidden_energy"]) == pytest.approx(float(hidden.pow(2).mean()), rel=1e-6)
    assert float(logs["hidden_energy_max"]) == pytest.approx(float(hidden.abs().max()), rel=1e-6)
    expected = logs["loss_mgm"] + logs["loss_cell_cell"] + 0.5 * logs["loss_hidden_energy"]
    assert float(total) == pytest.approx(float(expected), rel=1e-6)
    assert float(logs["loss_hidden_energy"]) > 0.01  # a real share of the total
    # a default weight of 0 keeps it out
    torch.manual_seed(0)
    off = LangCellPretraining(loss_weights=STAGE1).eval()
    total_off, logs_off = off.compute_losses(batch)
    assert "loss_hidden_energy" not in logs_off
    assert float(total - total_off) == pytest.approx(0.5 * float(logs["loss_hidden_energy"]), rel=1e-5)

    # one optimizer step through the Trainer: the toy loss is logged and its gradient moves the encoder
    only_toy = {**dict.fromkeys(STAGE1, 0.0), "hidden_energy": 1.0}
    task = LangCellPretraining(loss_weights=only_toy, warmup_steps=0, learning_rate=1e-2)
    before = {n: p.detach().clone() for n, p in task.model.cell_bert.named_parameters()}
    loader = DataLoader(cell_items(), batch_size=8, collate_fn=CellBatchCollator(max_length=32))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(task, train_dataloaders=loader)
    metrics = trainer.callback_metrics
    assert float(metrics["train/loss"]) == pytest.approx(float(metrics["train/loss_hidden_energy"]))
    moved = [n for n, p in task.model.cell_bert.named_parameters() if not torch.equal(p, before[n])]
    assert "encoder.layer.0.output.dense.weight" in moved
    assert not any(name.startswith("text_bert") for name, p in task.model.named_parameters()
                   if p.grad is not None and p.grad.abs().sum() > 0)


def test_missing_batch_field_names_the_objective_and_field(registered):
    batch = CellBatchCollator(max_length=32)(cell_items())  # no masking: no mgm_* fields
    with pytest.raises(LangCellInputError) as error:
        LangCellPretraining(loss_weights={**STAGE1, "mgm": 0.0, "needs_pairs": 1.0}).compute_losses(batch)
    assert "'needs_pairs'" in error.value.problem and "cell_pairs" in error.value.problem
    assert "Add `cell_pairs`" in error.value.fix and "needs_pairs: 0" in error.value.fix
    with pytest.raises(LangCellInputError) as error:
        LangCellPretraining(loss_weights=STAGE1).compute_losses(batch)
    assert "'mgm'" in error.value.problem and "mgm_labels" in error.value.problem
    assert "mgm_probability" in error.value.fix


def test_unknown_and_all_zero_weights_are_errors():
    with pytest.raises(LangCellInputError, match="Unknown loss names"):
        LangCellPretraining(loss_weights={"mgn": 1.0})
    with pytest.raises(LangCellInputError, match="nothing would be trained"):
        LangCellPretraining(loss_weights={"mgm": 0, "cell_cell": 0, "cell_text": 0, "matching": 0})


@pytest.mark.parametrize("off", [None, 0.0])
def test_mgm_without_masking_in_the_data_module_fails_at_setup(tmp_path, off):
    """``mgm_probability`` null/0 with MGM weight > 0: an error before the first step."""
    data = LangCellDataModule(str(REPO / "data/cells/pbmc68k_reduced.h5ad"), cache_dir=str(tmp_path), texts=False,
                              max_length=32, mgm_probability=off)
    task = LangCellPretraining(loss_weights=STAGE1)
    steps = []
    task.on_train_batch_start = lambda batch, batch_idx: steps.append(batch_idx)
    trainer = quiet_trainer(max_steps=1, limit_val_batches=0)
    with pytest.raises(LangCellInputError) as error:
        trainer.fit(task, datamodule=data)
    assert "'mgm'" in error.value.problem and "mgm_input_ids" in error.value.problem
    assert "mgm_probability: 0.15" in error.value.fix
    assert steps == [] and trainer.global_step == 0
    # default data module (masking on at 0.15) without texts: the cell–text objectives are refused the same way
    data = LangCellDataModule(str(REPO / "data/cells/pbmc68k_reduced.h5ad"), cache_dir=str(tmp_path), texts=False,
                              max_length=32)
    with pytest.raises(LangCellInputError, match="'cell_text'.*text_input_ids"):
        quiet_trainer(max_steps=1, limit_val_batches=0).fit(LangCellPretraining(), datamodule=data)
