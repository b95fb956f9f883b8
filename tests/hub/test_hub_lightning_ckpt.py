"""Lightning ``.ckpt`` of a 2-step ``LangCellPretraining`` fit: Lightning reload, ``load_model``, conversion."""

import numpy as np
import pytest
import torch

lightning = pytest.importorskip("lightning")

from torch.utils.data import DataLoader  # noqa: E402

from lightning_langcell.data.collate import CellBatchCollator  # noqa: E402
from lightning_langcell.errors import CheckpointError  # noqa: E402
from lightning_langcell.hub.convert import convert_command  # noqa: E402
from lightning_langcell.hub.lightning_ckpt import CKPT_CONFIG_KEY  # noqa: E402
from lightning_langcell.hub.loading import load_model, load_model_with_report, load_text_tokenizer_for  # noqa: E402
from lightning_langcell.tasks.pretrain import LangCellPretraining  # noqa: E402
from lightning_langcell.text import load_text_tokenizer  # noqa: E402


CheckpointedPretraining = LangCellPretraining  # every task stores its config in the .ckpt




def _loader() -> DataLoader:
    rng = np.random.default_rng(0)
    items = [{"index": i, "epoch": 0, "input_ids": rng.integers(2, 25426, size=int(rng.integers(5, 20))).astype(np.int32),
              "text_tokens": np.array([2, 10 + i % 3, 20, 3]), "text_id": i % 3} for i in range(8)]
    return DataLoader(items, batch_size=4, collate_fn=CellBatchCollator(max_length=32, mgm_probability=0.15))


def _fit_and_save(task, path):
    trainer = lightning.pytorch.Trainer(fast_dev_run=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                                        enable_model_summary=False)
    trainer.fit(task, _loader(), _loader())
    trainer.save_checkpoint(path)
    return task


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(task, path) after a 2-step fit: as saved, and with the stored config removed (older .ckpt)."""
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ckpt")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny steps: extra threads only contend (10x slower on a busy 2-core machine)
    try:
        mixed = _fit_and_save(CheckpointedPretraining(model="tiny", warmup_steps=1), folder / "mixed.ckpt")
        plain = _fit_and_save(LangCellPretraining(model="tiny", warmup_steps=1), folder / "plain.ckpt")
        stored = torch.load(folder / "plain.ckpt", weights_only=True)  # an older .ckpt: no stored config
        del stored[CKPT_CONFIG_KEY]
        torch.save(stored, folder / "plain.ckpt")
    finally:
        torch.set_num_threads(threads)
    return {"mixed": (mixed, folder / "mixed.ckpt"), "plain": (plain, folder / "plain.ckpt")}


def _assert_same_state(a, b):
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


@pytest.mark.parametrize("kind", ["mixed", "plain"])
def test_checkpoint_loads_with_lightning_and_load_model(checkpoints, kind):
    task, path = checkpoints[kind]
    stored = torch.load(path, weights_only=True)
    assert (CKPT_CONFIG_KEY in stored) == (kind == "mixed") and stored["global_step"] == 2
    if kind == "mixed":
        assert stored[CKPT_CONFIG_KEY] == task.model.config.to_dict()
    reloaded = type(task).load_from_checkpoint(path, weights_only=True)
    _assert_same_state(reloaded.model, task.model)
    model, report = load_model_with_report(path)
    _assert_same_state(model, task.model)
    assert report.initialized == [] and report.unused == [] and not model.training
    assert any("rebuilt from the hyper-parameters" in note for note in report.notes) == (kind == "plain")
    assert load_text_tokenizer_for(path).get_vocab() == load_text_tokenizer().get_vocab()


def test_checkpoint_converts_to_our_format(checkpoints, tmp_path):
    task, path = checkpoints["mixed"]
    folder = convert_command(str(path), str(tmp_path / "ours"), to="ours")
    _assert_same_state(load_model(folder), task.model)


def test_checkpoint_without_config_and_missing_text_init_is_refused(checkpoints, tmp_path):
    _, path = checkpoints["plain"]
    stored = torch.load(path, weights_only=True)
    stored["hyper_parameters"]["text_init"] = "/nowhere/biomedbert"
    torch.save(stored, tmp_path / "moved.ckpt")
    with pytest.raises(CheckpointError, match="text_init='/nowhere/biomedbert', which is not here"):
        load_model(tmp_path / "moved.ckpt")


class _Opaque:
    """Any non-allow-listed object makes weights_only=True refuse the whole checkpoint."""


def test_checkpoint_with_arbitrary_objects_needs_trust(checkpoints, tmp_path):
    task, path = checkpoints["mixed"]
    stored = torch.load(path, weights_only=True)
    stored["callbacks"] = {"custom": _Opaque()}
    torch.save(stored, tmp_path / "objects.ckpt")
    with pytest.raises(CheckpointError, match=r"objects\.ckpt holds Python objects .* trust_pickle=True"):
        load_model(tmp_path / "objects.ckpt")
    with pytest.warns(UserWarning, match="UNSAFE"):
        _assert_same_state(load_model(tmp_path / "objects.ckpt", trust_pickle=True), task.model)


def test_truncated_checkpoint_is_refused(checkpoints, tmp_path):
    _, path = checkpoints["mixed"]
    (tmp_path / "cut.ckpt").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=r"Cannot read .*cut\.ckpt \(truncated or not a torch file\)"):
        load_model(tmp_path / "cut.ckpt")
