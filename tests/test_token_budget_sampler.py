"""TokenBudgetBatchSampler and the data module's ``batch_tokens``: budget, cap, coverage, DDP
shards, seeding, exact resume, padding efficiency, and errors."""

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from lightning_langcell.data.sampling import TokenBudgetBatchSampler, budget_bounds, padding_efficiency
from lightning_langcell.errors import LangCellInputError

CELLS = Path(__file__).resolve().parent / "data" / "corpus_pbmc68k" / "pbmc_50cells.h5ad"
N_CELLS, BUDGET, MAX_CELLS, MAX_LENGTH = 1003, 4096, 6, 2048


def _cell_lengths(cells=N_CELLS, seed=0):
    """Genes per cell as benchmarks/pretrain_step_benchmark.py's ``cell_lengths``: log-normal
    around 700, clipped to 200..2047, plus a few cells over the budget and over max_length."""
    lengths = np.clip(np.random.default_rng(seed).lognormal(np.log(700), 0.6, cells), 200, 2047).astype(int)
    lengths[[5, 500]] = [5000, 9000]  # capped to max_length tokens: still ≤ BUDGET
    return lengths


LENGTHS = _cell_lengths()


def _ranks(num_replicas, lengths=LENGTHS, budget=BUDGET, **kwargs):
    return [TokenBudgetBatchSampler(lengths, budget, MAX_CELLS, max_length=MAX_LENGTH, seed=3,
                                    num_replicas=num_replicas, rank=r, **kwargs) for r in range(num_replicas)]


def _tokens(lengths=LENGTHS):
    return np.minimum(np.asarray(lengths) + 1, MAX_LENGTH)


def test_batches_respect_the_budget_and_the_cap_and_fill_up():
    sampler = _ranks(1)[0]
    batches = list(sampler)
    tokens = _tokens()
    assert sampler.tokens.tolist() == tokens.tolist()
    sizes = [tokens[b].sum() for b in batches]
    assert max(sizes) <= BUDGET
    assert max(len(b) for b in batches) == MAX_CELLS
    # greedy: a batch under both limits could not have taken one more cell of its sorted pool
    cells, bounds, _ = sampler.batch_plan(0)
    pool = sampler.pool_size * MAX_CELLS
    for start, end in zip(bounds[:-2], bounds[1:-1]):
        assert end - start == MAX_CELLS or end % pool == 0 or tokens[cells[start:end + 1]].sum() > BUDGET


def test_a_cell_over_the_budget_gets_its_own_batch():
    lengths = np.array([100, 100, 5000, 100, 3000, 3000])
    bounds = budget_bounds(np.asarray(lengths) + 1, 4000, 10)
    assert bounds.tolist() == [0, 2, 3, 5, 6]  # 101 + 3001 fit together
    assert budget_bounds(np.asarray(lengths) + 1, 4000, 10, segment=4).tolist() == [0, 2, 3, 4, 5, 6]
    sampler = TokenBudgetBatchSampler(lengths, 4000, 10, seed=0)
    assert sorted(len(b) for b in sampler if 2 in b) == [1]


def test_cap_binds_on_short_cells():
    sampler = TokenBudgetBatchSampler(np.full(20, 10), 10_000, 3, seed=1, shuffle=False)
    assert [len(b) for b in sampler] == [3, 3, 3, 3, 3, 3, 2]


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
def test_ddp_ranks_get_equal_counts_disjoint_batches_and_cover_every_cell(num_replicas):
    ranks = _ranks(num_replicas)
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1 and all(len(b) == len(s) for b, s in zip(per_rank, ranks))
    seen = Counter(int(c) for batches in per_rank for batch in batches for c in batch)
    assert set(seen) == set(range(N_CELLS))
    # padding repeats at most num_replicas - 1 whole batches; without it every cell appears once
    cells, bounds, ids = ranks[0].batch_plan(0)
    assert len(ids) - (len(bounds) - 1) < num_replicas
    assert sorted(cells.tolist()) == list(range(N_CELLS))
    repeated = ids[len(bounds) - 1:]
    assert sum(seen.values()) == N_CELLS + sum(bounds[j + 1] - bounds[j] for j in repeated)
    # the shards are disjoint apart from the padding repeats (dealt positions past the cut)
    shards = [set() for _ in ranks]
    for position, j in enumerate(ids[: len(bounds) - 1]):
        shards[position % num_replicas] |= set(cells[bounds[j]:bounds[j + 1]].tolist())
    assert sum(len(s) for s in shards) == N_CELLS
    for r, sampler in enumerate(ranks):
        assert shards[r] <= {int(c) for b in sampler.rank_batches(0) for c in b}


@pytest.mark.parametrize("num_replicas", [1, 2, 3, 4])
def test_drop_last_gives_equal_counts_and_no_repeats(num_replicas):
    ranks = _ranks(num_replicas, drop_last=True)
    per_rank = [list(s) for s in ranks]
    assert len({len(b) for b in per_rank}) == 1
    seen = Counter(int(c) for batches in per_rank for batch in batches for c in batch)
    assert max(seen.values()) == 1
    cells, bounds, ids = ranks[0].batch_plan(0)
    assert len(bounds) - 2 not in ids.tolist()  # the last batch of the cut is dropped
    assert len(bounds) - 1 - len(ids) < num_replicas + 1


def test_same_seed_and_epoch_same_batches_other_epoch_or_seed_different():
    a, b = _ranks(2)[1], _ranks(2)[1]
    first = [x.tolist() for x in a.rank_batches(4)]
    assert first == [x.tolist() for x in b.rank_batches(4)]
    assert first != [x.tolist() for x in a.rank_batches(5)]
    other_seed = TokenBudgetBatchSampler(LENGTHS, BUDGET, MAX_CELLS, max_length=MAX_LENGTH, seed=4,
                                         num_replicas=2, rank=1)
    assert first != [x.tolist() for x in other_seed.rank_batches(4)]
    b.set_epoch(4)
    assert list(b) == first


def test_first_batches_are_the_most_expensive():
    sampler = _ranks(1)[0]
    batches = sampler.rank_batches(0)
    cost = [len(b) * sampler.tokens[b].max() for b in batches]
    assert cost[0] == max(cost)


@pytest.mark.parametrize("num_replicas", [1, 3])
def test_resume_mid_epoch_yields_exactly_the_remaining_batches(num_replicas):
    ranks = _ranks(num_replicas)
    for sampler in ranks:
        sampler.set_epoch(2)
    last = ranks[-1]
    iterator = iter(last)
    consumed = [next(iterator) for _ in range(7)]
    state = last.state_dict()
    assert state["epoch"] == 2 and state["batches_consumed"] == 7 and state["max_tokens"] == BUDGET
    fresh = _ranks(num_replicas)[-1]
    fresh.load_state_dict(state)
    remaining = list(fresh)
    assert consumed + remaining == [b.tolist() for b in last.rank_batches(2)]
    assert list(fresh) == [b.tolist() for b in last.rank_batches(2)]  # the next pass is the full epoch


def test_resume_at_the_epoch_end_starts_the_next_epoch():
    sampler = _ranks(2)[0]
    sampler.set_epoch(1)
    done = len(sampler)
    fresh = _ranks(2)[0]
    fresh.load_state_dict({**sampler.state_dict(), "batches_consumed": done})
    assert fresh.epoch == 2 and list(fresh) == [b.tolist() for b in sampler.rank_batches(2)]


def test_resume_with_other_settings_is_refused():
    state = _ranks(1)[0].state_dict()
    other = TokenBudgetBatchSampler(LENGTHS, BUDGET * 2, MAX_CELLS, max_length=MAX_LENGTH, seed=3)
    with pytest.raises(LangCellInputError, match="max_tokens"):
        other.load_state_dict(state)


def test_length_grouping_raises_padding_efficiency():
    lengths = np.clip(np.random.default_rng(7).lognormal(np.log(700), 0.6, 4000), 200, 2047).astype(int)
    grouped = TokenBudgetBatchSampler(lengths, 16384, 64, max_length=MAX_LENGTH, seed=0)
    mixed = TokenBudgetBatchSampler(lengths, 16384, 64, max_length=MAX_LENGTH, seed=0, group_by_length=False)
    efficiency = {name: padding_efficiency(s.tokens, s.rank_batches(0))
                  for name, s in (("grouped", grouped), ("mixed", mixed))}
    assert efficiency["grouped"] > 0.9 > 0.6 > efficiency["mixed"]
    # no batch crosses a pool boundary, so a padded batch stays near the budget (the shortest cells
    # of one pool never share a batch with the longest of the next)
    padded = [len(b) * grouped.tokens[b].max() for b in grouped.rank_batches(0)]
    assert max(padded) <= 1.1 * 16384
    cells, bounds, _ = grouped.batch_plan(0)
    pool = grouped.pool_size * grouped.max_cells
    assert all(start // pool == (end - 1) // pool for start, end in zip(bounds[:-1], bounds[1:]))
    assert set(range(0, len(cells), pool)) <= set(bounds.tolist())


@pytest.mark.parametrize(
    "kwargs",
    [{"max_tokens": 0}, {"max_tokens": -5}, {"max_cells": 0}, {"max_tokens": 2.5}, {"max_length": 0},
     {"pool_size": 0}],
)
def test_bad_settings_are_refused(kwargs):
    settings = {"max_tokens": BUDGET, "max_cells": MAX_CELLS, **kwargs}
    with pytest.raises(LangCellInputError):
        TokenBudgetBatchSampler(LENGTHS, **settings)


# --------------------------------------------------------------------------- data module
@pytest.mark.parametrize(
    "kwargs",
    [{"batch_tokens": 0}, {"batch_tokens": -1}, {"batch_tokens": 100, "max_length": 128},
     {"batch_tokens": 512, "max_cells_per_batch": 0}, {"batch_tokens": True}],
)
def test_data_module_refuses_bad_budgets_at_construction(kwargs):
    from lightning_langcell.data.datamodule import LangCellDataModule

    with pytest.raises(LangCellInputError):
        LangCellDataModule("unused.h5ad", texts=False, **kwargs)


def _module(tmp_path, **kwargs):
    from lightning_langcell.data.datamodule import LangCellDataModule

    settings = {"max_length": 64, "batch_size": 4, **kwargs}
    module = LangCellDataModule(data=str(CELLS), cache_dir=str(tmp_path / "cache"), label_column=None,
                                texts=False, mgm_probability=0.0, split=(1.0, 0.0, 0.0), **settings)
    module.setup("fit")
    return module


def test_data_module_train_batches_respect_the_token_budget(tmp_path):
    module = _module(tmp_path, batch_tokens=200, max_cells_per_batch=5)
    loader = module.train_dataloader()
    batches = list(loader)
    real = [int(b["attention_mask"].sum()) for b in batches]
    assert max(real) <= 200 and max(len(b["index"]) for b in batches) <= 5
    assert sorted(int(i) for b in batches for i in b["index"]) == sorted(module.splits["train"].tolist())
    assert len(batches) == len(loader)
    # the cells are mostly longer than 63 genes: budget 200 fits 3 full cells, not the cap of 5
    assert max(len(b["index"]) for b in batches) == 3
    # today's behaviour without batch_tokens: batch_size cells per batch
    plain = list(_module(tmp_path).train_dataloader())
    assert max(len(b["index"]) for b in plain) == 4


def test_data_module_resumes_token_budget_batches_exactly(tmp_path):
    module = _module(tmp_path, batch_tokens=200, max_cells_per_batch=5)
    whole = [b["index"].tolist() for b in module.train_dataloader()]
    inner = module._train_batches.batch_sampler
    assert type(inner).__name__ == "TokenBudgetBatchSampler"
    saved = {"train_batches": {"epoch": 0, "sampler": {**inner.state_dict(), "epoch": 0, "batches_consumed": 3}}}
    resumed = _module(tmp_path, batch_tokens=200, max_cells_per_batch=5)
    resumed.load_state_dict(saved)
    assert [b["index"].tolist() for b in resumed.train_dataloader()] == whole[3:]


def test_data_module_under_a_lightning_trainer_serves_each_epochs_planned_batches(tmp_path):
    """Three epochs with ``reload_dataloaders_every_n_epochs=1`` (the documented setting for
    token budgets): every epoch trains exactly the batches the sampler planned for it, also when
    the epochs have different numbers of batches (small pools, uncapped cells of 170–322 genes):
    without the reload, Lightning stops a later epoch at the first epoch's count."""
    L = pytest.importorskip("lightning")
    import torch

    class _Recorder(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.seen = {}

        def training_step(self, batch, batch_idx):
            self.seen.setdefault(self.current_epoch, []).append(batch["index"].tolist())
            assert int(batch["attention_mask"].sum()) <= 700
            return self.weight.square().sum()

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    module = _module(tmp_path, batch_tokens=700, max_cells_per_batch=5, max_length=512, pool_size=2)
    model = _Recorder()
    trainer = L.Trainer(max_epochs=3, reload_dataloaders_every_n_epochs=1, accelerator="cpu", devices=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=module)
    sampler = module._train_batches.batch_sampler
    rows = module.splits["train"]
    for epoch in range(3):
        planned = [rows[b].tolist() for b in sampler.rank_batches(epoch)]
        assert model.seen[epoch] == planned
        assert sorted(c for b in planned for c in b) == sorted(rows.tolist())
    # a later epoch had more batches than the first (Lightning without the reload cuts it short)
    assert max(len(model.seen[epoch]) for epoch in (1, 2)) > len(model.seen[0])


def test_data_module_warns_when_lightning_would_cut_epochs_short(tmp_path):
    from types import SimpleNamespace

    module = _module(tmp_path, batch_tokens=200)
    module.trainer = SimpleNamespace(reload_dataloaders_every_n_epochs=0, current_epoch=2, world_size=1,
                                     global_rank=0)
    with pytest.warns(UserWarning, match="reload_dataloaders_every_n_epochs: 1"):
        loader = module.train_dataloader()
    sampler = module._train_batches.batch_sampler
    assert sampler.epoch == 2 and len(loader) == sampler._batches_per_rank(2)
    module.trainer = SimpleNamespace(reload_dataloaders_every_n_epochs=1, current_epoch=0, world_size=1,
                                     global_rank=0)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module.train_dataloader()
