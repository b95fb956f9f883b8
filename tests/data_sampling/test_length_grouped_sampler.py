"""LengthGroupedBatchSampler and DistributedEvalSampler: coverage, DDP shards, grouping, resume."""

from collections import Counter

import numpy as np
import pytest
from torch.utils.data import DataLoader

from lightning_langcell.data.sampling import DistributedEvalSampler, LengthGroupedBatchSampler, padding_efficiency
from lightning_langcell.errors import LangCellInputError

N_CELLS, BATCH = 1003, 10  # 100 full batches + one of 3 cells


def _cell_lengths(n=N_CELLS, seed=0):
    """Genes per cell as in real single-cell data: log-normal, median ~600, clipped to 200–2048."""
    raw = np.random.default_rng(seed).lognormal(np.log(600), 0.6, n)
    return np.clip(np.round(raw), 200, 2048).astype(np.int64)


LENGTHS = _cell_lengths()


def _ranks(num_replicas, **kwargs):
    return [LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3, num_replicas=num_replicas, rank=r, **kwargs)
            for r in range(num_replicas)]


def test_single_process_epoch_covers_every_cell_once():
    sampler = LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 101
    assert sorted(len(b) for b in batches)[:2] == [3, 10]
    assert sorted(i for b in batches for i in b) == list(range(N_CELLS))
    assert all(isinstance(i, int) for i in batches[0])


@pytest.mark.parametrize("num_replicas, per_rank", [(2, 51), (3, 34)])
def test_ddp_shards_are_disjoint_equal_and_padded_by_repeats(num_replicas, per_rank):
    ranks = _ranks(num_replicas)
    shards = [list(s) for s in ranks]
    assert [len(s) for s in shards] == [len(s) for s in ranks] == [per_rank] * num_replicas
    dealt = ranks[0].global_batches(0)
    assert len(dealt) == per_rank * num_replicas
    # the first 101 dealt batches are the real epoch; the last one repeats the first (padding)
    real = [i for b in dealt[:101] for i in b]
    assert sorted(real) == list(range(N_CELLS))
    np.testing.assert_array_equal(dealt[101], dealt[0])
    seen = Counter(i for shard in shards for b in shard for i in b)
    assert set(seen) == set(range(N_CELLS))
    assert sorted(i for i, c in seen.items() if c == 2) == sorted(dealt[0].tolist())
    for rank, shard in enumerate(shards):  # rank r holds dealt batches r, r + R, ...
        assert shard == [b.tolist() for b in dealt[rank::num_replicas]]


@pytest.mark.parametrize("num_replicas, per_rank", [(2, 50), (3, 33)])
def test_ddp_drop_last_drops_partial_and_tail_batches(num_replicas, per_rank):
    shards = [list(s) for s in _ranks(num_replicas, drop_last=True)]
    assert [len(s) for s in shards] == [per_rank] * num_replicas
    cells = [i for shard in shards for b in shard for i in b]
    assert len(cells) == len(set(cells)) == per_rank * num_replicas * BATCH
    assert all(len(b) == BATCH for shard in shards for b in shard)


def test_batches_group_similar_lengths():
    batches = list(LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3, pool_size=50))
    random = np.array_split(np.random.default_rng(0).permutation(N_CELLS), len(batches))
    ratio = np.mean([LENGTHS[b].max() / LENGTHS[b].min() for b in batches])
    random_ratio = np.mean([LENGTHS[b].max() / LENGTHS[b].min() for b in random])
    grouped_eff, random_eff = padding_efficiency(LENGTHS, batches), padding_efficiency(LENGTHS, random)
    print(f"\nmax/min length per batch: grouped {ratio:.3f}, random {random_ratio:.3f}; "
          f"padding efficiency: grouped {grouped_eff:.3f}, random {random_eff:.3f}")
    assert ratio < 1.1 and random_ratio > 3.0
    assert grouped_eff > 0.95 and random_eff < 0.6


def test_padding_efficiency_value():
    assert padding_efficiency([1, 2, 3, 4], [[0, 1], [2, 3]]) == pytest.approx(10 / 12)
    assert padding_efficiency([5, 5], [[0, 1]]) == 1.0


def test_longest_batches_come_first_on_every_rank():
    ranks = _ranks(2)
    dealt = ranks[0].global_batches(4)
    cost = [len(b) * LENGTHS[b].max() for b in dealt[:101]]
    assert sorted(cost, reverse=True)[:2] == cost[:2]
    assert LENGTHS[list(ranks[1])[0]].max() == max(LENGTHS[b].max() for b in dealt if len(b) == BATCH)


def test_epochs_differ_and_seed_epoch_fixes_batches():
    a, b = LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3), LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3)
    epoch0 = list(a)
    a.set_epoch(1)
    epoch1 = list(a)
    assert epoch0 != epoch1 and epoch0 == list(b)
    b.set_epoch(1)
    assert list(b) == epoch1
    other_seed = LengthGroupedBatchSampler(LENGTHS, BATCH, seed=4)
    assert list(other_seed) != epoch0
    # every rank derives the same global list from (seed, epoch) alone
    for x, y in zip(_ranks(3)[0].global_batches(7), _ranks(3)[2].global_batches(7)):
        np.testing.assert_array_equal(x, y)


def test_no_shuffle_is_fixed_and_length_sorted_within_pools():
    sampler = LengthGroupedBatchSampler(LENGTHS, BATCH, shuffle=False, pool_size=5)
    batches = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == batches
    first_pool = np.concatenate(batches[:5])
    np.testing.assert_array_equal(np.sort(first_pool), np.arange(50))
    assert np.all(np.diff(LENGTHS[first_pool]) <= 0)


def test_indices_subset():
    subset = np.arange(0, N_CELLS, 7)
    batches = list(LengthGroupedBatchSampler(LENGTHS, 4, indices=subset, seed=1))
    assert sorted(i for b in batches for i in b) == subset.tolist()


def test_resume_skips_exactly_the_consumed_batches():
    for num_replicas in (1, 3):
        live = _ranks(num_replicas)[-1]
        live.set_epoch(2)
        iterator = iter(live)
        consumed = [next(iterator) for _ in range(7)]
        state = live.state_dict()
        assert state["epoch"] == 2 and state["batches_consumed"] == 7
        remaining = list(iterator)
        resumed = _ranks(num_replicas)[-1]
        resumed.load_state_dict(state)
        resumed.set_epoch(2)  # Lightning calls this again for the same epoch: the skip stays
        assert list(resumed) == remaining
        assert consumed + remaining == [b.tolist() for b in _ranks(num_replicas)[-1].rank_batches(2)]
        assert len(resumed) == len(live)
        resumed.set_epoch(3)
        assert len(list(resumed)) == len(live)  # the next epoch is whole


def test_resume_edge_cases():
    sampler = LengthGroupedBatchSampler(LENGTHS, BATCH, seed=3)
    sampler.load_state_dict({"epoch": 1, "batches_consumed": 5})
    sampler.set_epoch(2)  # a different epoch cancels the pending skip
    assert len(list(sampler)) == 101
    sampler.load_state_dict({"epoch": 4, "batches_consumed": 101})  # saved at epoch end
    assert sampler.epoch == 5 and len(list(sampler)) == 101
    with pytest.raises(LangCellInputError, match=r"batch_size: saved 8, now 10.*Fix: Resume with the same"):
        sampler.load_state_dict({**sampler.state_dict(), "batch_size": 8})
    with pytest.raises(LangCellInputError, match="outside"):
        sampler.load_state_dict({"epoch": 0, "batches_consumed": 102})


def test_lightning_compatibility_surface_and_input_errors():
    sampler = LengthGroupedBatchSampler(LENGTHS, BATCH)
    assert sampler.sampler is sampler  # Lightning calls batch_sampler.sampler.set_epoch(epoch)
    assert not hasattr(sampler, "batch_size") and not hasattr(sampler, "drop_last")
    with pytest.raises(LangCellInputError, match="no batch per rank"):
        LengthGroupedBatchSampler(LENGTHS[:15], BATCH, num_replicas=2, rank=0, drop_last=True)
    with pytest.raises(LangCellInputError, match="rank must be in"):
        LengthGroupedBatchSampler(LENGTHS, BATCH, num_replicas=2, rank=2)


@pytest.mark.parametrize(
    "contiguous, expected",
    [(True, [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]), (False, [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]])],
)
def test_eval_sampler_covers_each_cell_once(contiguous, expected):
    shards = [list(DistributedEvalSampler(10, num_replicas=3, rank=r, contiguous=contiguous)) for r in range(3)]
    assert shards == expected
    assert [len(DistributedEvalSampler(10, 3, r, contiguous)) for r in range(3)] == [4, 3, 3]


def test_eval_sampler_subset_length_order_and_dataloader():
    lengths = np.array([5, 50, 20, 40, 10, 30])
    sampler = DistributedEvalSampler([1, 2, 4, 5], num_replicas=2, rank=1, lengths=lengths)
    assert list(sampler) == [5, 4]
    loader = DataLoader(np.arange(6) * 10, sampler=DistributedEvalSampler(6, 2, 0, lengths=lengths), batch_size=2)
    assert [b.tolist() for b in loader] == [[10, 20], [0]]  # shard [0, 1, 2], longest first
