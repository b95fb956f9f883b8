"""Exact mid-epoch resume of LengthGroupedBatchSampler under a real Lightning Trainer (~6 s).

The data module stores the trainer's own batch count (the sampler runs ahead of the model when
DataLoader workers prefetch). A resumed run must see exactly the batches the uninterrupted run
saw after the checkpoint, for checkpoints mid-epoch and at the end of an epoch.
"""

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from lightning_langcell.data.sampling import LengthGroupedBatchSampler

L = pytest.importorskip("lightning")

LENGTHS = np.random.default_rng(0).integers(1, 100, 50)


class _Positions(Dataset):
    def __len__(self):
        return len(LENGTHS)

    def __getitem__(self, i):
        return torch.tensor([float(i)])


class _Data(L.LightningDataModule):
    def __init__(self):
        super().__init__()
        self.pending = None

    def train_dataloader(self):
        self.sampler = LengthGroupedBatchSampler(LENGTHS, 4, seed=1, pool_size=3)
        if self.pending is not None:
            self.sampler.load_state_dict(self.pending)
        return DataLoader(_Positions(), batch_sampler=self.sampler, num_workers=2)

    def state_dict(self):
        progress = self.trainer.fit_loop.epoch_loop.batch_progress.current
        return {
            **self.sampler.state_dict(),
            "epoch": self.trainer.current_epoch,
            "batches_consumed": progress.ready,
        }

    def load_state_dict(self, state):
        self.pending = state


class _Recorder(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.seen = []

    def training_step(self, batch, batch_idx):
        self.seen.append((self.current_epoch, batch[:, 0].int().tolist()))
        return self.layer(batch).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(directory, checkpoint_kwargs, ckpt_path=None):
    model = _Recorder()
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        directory, save_top_k=-1, filename="{step}", **checkpoint_kwargs
    )
    trainer = L.Trainer(
        max_epochs=2, callbacks=[checkpoints], logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", devices=1, use_distributed_sampler=False,
    )
    trainer.fit(model, _Data(), ckpt_path=ckpt_path)
    return model.seen


@pytest.mark.parametrize(
    "checkpoint_kwargs, steps",
    [({"every_n_train_steps": 5}, [5, 15]), ({"every_n_epochs": 1, "save_on_train_epoch_end": True}, [13])],
)
def test_resume_sees_exactly_the_remaining_batches(tmp_path, checkpoint_kwargs, steps):
    torch.set_num_threads(1)
    full = _fit(tmp_path / "full", checkpoint_kwargs)
    assert len(full) == 26  # 13 batches per epoch, two epochs
    # Lightning reached set_epoch (via batch_sampler.sampler): epoch 1 is another order
    assert [b for _, b in full[:13]] != [b for _, b in full[13:]]
    for step in steps:
        resumed = _fit(tmp_path / f"from{step}", checkpoint_kwargs, tmp_path / "full" / f"step={step}.ckpt")
        assert resumed == full[step:]
