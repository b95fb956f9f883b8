"""Two gloo processes give the single-process losses and gradients on the world batch.

Rank 0 holds 3 cells, rank 1 holds 5 (unequal batches, unequal padded lengths), so the
padding and the ``world_mean`` scaling are exercised, not only the equal-size case.
DDP is emulated: parameter gradients are all-reduced and divided by the world size.
"""

import tempfile
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lightning_langcell.objectives import (
    HardNegatives,
    all_gather_no_grad,
    all_gather_with_grad,
    build_matching_batch,
    cell_cell_contrastive_loss,
    cell_text_contrastive_loss,
    cell_text_matching_loss,
    hard_negative_probabilities,
    sample_hard_negatives,
)

SIZES = (3, 5)
WORLD = len(SIZES)
TEXT_IDS = torch.tensor([0, 1, 0, 2, 1, 3, 0, 2])  # identical texts inside and across ranks
CELL_LENGTHS = (3, 5)  # padded cell length of each rank's batch
TEXT_LENGTHS = (2, 4)
NEG_TEXTS = HardNegatives(torch.tensor([1, 0, 3, 5, 0, -1, 3, 4]), torch.tensor([1, 1, 1, 1, 1, 0, 1, 1]).bool())
NEG_CELLS = HardNegatives(torch.tensor([3, -1, 7, 0, 2, 1, 5, 0]), torch.tensor([1, 0, 1, 1, 1, 1, 1, 1]).bool())


def _data():
    """The world batch (identical in every process) and the toy model's parameters."""
    g = torch.Generator().manual_seed(0)
    data = {
        "cell_features": torch.randn(8, 6, generator=g),
        "text_features": torch.randn(8, 6, generator=g),
        "view_features": torch.randn(8, 6, generator=g),
        "cell_proj": torch.randn(4, 6, generator=g),
        "text_proj": torch.randn(4, 6, generator=g),
        "hidden_features": torch.randn(8, max(CELL_LENGTHS), 3, generator=g),
        "hidden_proj": torch.randn(2, 3, generator=g),
        "token_table": torch.randn(40, 2, generator=g),
        "head": torch.randn(2, 4, generator=g),
        "token_ids": torch.randint(1, 40, (8, max(TEXT_LENGTHS)), generator=g),
    }
    cell_mask = torch.zeros(8, max(CELL_LENGTHS), dtype=torch.long)
    text_mask = torch.zeros(8, max(TEXT_LENGTHS), dtype=torch.long)
    for row in range(8):  # real lengths, each within its rank's padded length
        rank = 0 if row < SIZES[0] else 1
        cell_mask[row, : CELL_LENGTHS[rank] - row % 2] = 1
        text_mask[row, : TEXT_LENGTHS[rank] - row % 2] = 1
    data["cell_mask"], data["text_mask"] = cell_mask, text_mask
    data["token_ids"] = data["token_ids"] * text_mask
    return data


def _rows(rank):
    start = sum(SIZES[:rank])
    return slice(start, start + SIZES[rank])


def _leaf(tensor):
    return tensor.clone().requires_grad_(True)


def _masked_mean(values, mask):
    mask = mask.unsqueeze(-1).to(values.dtype)
    return (values * mask).sum(1) / mask.sum(1)


def _contrastive(d, rows, kind):
    """Loss, stats and gradients of CTC (kind 'ctc') or C–C (kind 'cc') on the given rows."""
    params = {name: _leaf(d[name]) for name in ("cell_proj", "text_proj")}
    first = _leaf(d["cell_features"][rows])
    second = _leaf(d["text_features" if kind == "ctc" else "view_features"][rows])
    cells = first @ params["cell_proj"].T
    if kind == "ctc":
        loss, stats = cell_text_contrastive_loss(cells, second @ params["text_proj"].T, TEXT_IDS[rows], 0.1)
    else:
        loss, stats = cell_cell_contrastive_loss(cells, second @ params["cell_proj"].T, torch.tensor(0.2))
    loss.backward()
    out = {"loss": loss.detach(), "first_grad": first.grad, "second_grad": second.grad, "stats": stats}
    out.update({f"{name}_grad": p.grad for name, p in params.items()})
    return out


def _matching(d, rows, cell_length, text_length, negatives):
    params = {name: _leaf(d[name]) for name in ("hidden_proj", "token_table", "head")}
    hidden = torch.tanh(d["hidden_features"][rows, :cell_length] @ params["hidden_proj"].T)
    batch = build_matching_batch(
        hidden, d["cell_mask"][rows, :cell_length], d["token_ids"][rows, :text_length],
        d["text_mask"][rows, :text_length], *negatives,
    )
    pooled_cells = _masked_mean(batch.cell_hidden, batch.cell_attention_mask)
    pooled_texts = _masked_mean(params["token_table"][batch.text_input_ids], batch.text_attention_mask)
    logits = torch.cat([pooled_cells, pooled_texts], dim=1) @ params["head"].T
    loss, _ = cell_text_matching_loss(logits, batch.labels)
    loss.backward()
    out = {"loss": loss.detach(), "pairs": len(batch.labels)}
    out.update({f"{name}_grad": p.grad for name, p in params.items()})
    return out


def _ddp_average(out):
    for key in [k for k in out if k.endswith("_proj_grad") or k in ("token_table_grad", "head_grad")]:
        if out[key] is None:  # parameter unused by this objective
            continue
        dist.all_reduce(out[key])
        out[key] /= WORLD
    return out


def _rank_results(rank):
    d = _data()
    rows = _rows(rank)
    gathered_ids = all_gather_no_grad(d["token_ids"][rows, : TEXT_LENGTHS[rank]])
    local = _leaf(d["cell_features"][rows])
    world = all_gather_with_grad(local)
    (world * torch.arange(8.0)[:, None]).sum().backward()
    ctc, cc = _ddp_average(_contrastive(d, rows, "ctc")), _ddp_average(_contrastive(d, rows, "cc"))
    stats = ctc.pop("stats")
    cc.pop("stats")
    local_negatives = tuple(HardNegatives(n.indices[rows], n.valid[rows]) for n in (NEG_TEXTS, NEG_CELLS))
    matching = _ddp_average(_matching(d, rows, CELL_LENGTHS[rank], TEXT_LENGTHS[rank], local_negatives))
    generator = torch.Generator().manual_seed(rank)
    sampled = [
        sample_hard_negatives(logits, TEXT_IDS[rows], stats.ids_world, generator).indices
        for _ in range(200)
        for logits in (stats.logits_ab, stats.logits_ba)
    ]
    return {
        "gathered_ids": gathered_ids, "world": world.detach(), "gather_grad": local.grad,
        "ctc": ctc, "cc": cc, "matching": matching, "sampled": torch.stack(sampled),
        "accuracy": torch.stack([stats.accuracy_ab, stats.accuracy_ba]),
        "probabilities_c2t": hard_negative_probabilities(stats.logits_ab, TEXT_IDS[rows], stats.ids_world),
        "probabilities_t2c": hard_negative_probabilities(stats.logits_ba, TEXT_IDS[rows], stats.ids_world),
        "ids_world": stats.ids_world,
    }


def _worker(rank, init_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.save(_rank_results(rank), Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks():
    with tempfile.TemporaryDirectory() as tmp:
        mp.spawn(_worker, args=(str(Path(tmp) / "init"), tmp), nprocs=WORLD, join=True)
        return [torch.load(Path(tmp) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single():
    d = _data()
    everything = slice(0, 8)
    return {
        "ctc": _contrastive(d, everything, "ctc"),
        "cc": _contrastive(d, everything, "cc"),
        "matching": _matching(d, everything, max(CELL_LENGTHS), max(TEXT_LENGTHS), (NEG_TEXTS, NEG_CELLS)),
    }


def test_gathers_pad_and_send_summed_gradients_to_each_rank(ranks):
    d = _data()
    expected_ids = d["token_ids"].clone()
    expected_ids[: SIZES[0], TEXT_LENGTHS[0] :] = 0
    for rank, result in enumerate(ranks):
        assert torch.equal(result["gathered_ids"], expected_ids)
        assert torch.equal(result["world"], d["cell_features"])
        # loss_r = Σ_i i·world_i on both ranks: each rank's rows get the sum over ranks (2·i)
        expected_grad = 2 * torch.arange(8.0)[_rows(rank), None].expand(-1, 6)
        assert torch.equal(result["gather_grad"], expected_grad)


@pytest.mark.parametrize("kind", ["ctc", "cc"])
def test_contrastive_losses_and_gradients_match_one_process(ranks, single, kind):
    reference = single[kind]
    mean_loss = sum(r[kind]["loss"] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(reference["loss"].item(), rel=1e-5)
    for name in ("cell_proj_grad", "text_proj_grad") if kind == "ctc" else ("cell_proj_grad",):
        for result in ranks:  # DDP-averaged parameter gradients equal the single-process ones
            torch.testing.assert_close(result[kind][name], reference[name], rtol=1e-4, atol=1e-6)
    for rank, result in enumerate(ranks):  # embeddings: W x the single-process gradient
        for name in ("first_grad", "second_grad"):
            torch.testing.assert_close(result[kind][name], WORLD * reference[name][_rows(rank)], rtol=1e-4, atol=1e-6)


def test_world_accuracy_and_hard_negative_probabilities_match_one_process(ranks, single):
    stats = single["ctc"]["stats"]
    accuracy = sum(r["accuracy"] * n for r, n in zip(ranks, SIZES)) / sum(SIZES)
    torch.testing.assert_close(accuracy, torch.stack([stats.accuracy_ab, stats.accuracy_ba]))
    for name, logits in (("probabilities_c2t", stats.logits_ab), ("probabilities_t2c", stats.logits_ba)):
        reference = hard_negative_probabilities(logits, TEXT_IDS, TEXT_IDS)
        torch.testing.assert_close(torch.cat([r[name] for r in ranks]), reference, rtol=1e-5, atol=1e-7)


def test_world_hard_negatives_never_share_the_text(ranks):
    for rank, result in enumerate(ranks):
        assert torch.equal(result["ids_world"], TEXT_IDS)
        sampled = result["sampled"]
        assert (sampled >= 0).all()  # every row has another text in the world batch
        assert (TEXT_IDS[sampled] != TEXT_IDS[_rows(rank)]).all()
        # rank 0 draws from the 8-row world batch, not only from its own 3 rows
        assert (sampled >= SIZES[0]).any() if rank == 0 else (sampled < SIZES[0]).any()


def test_matching_loss_and_gradients_match_one_process(ranks, single):
    reference = single["matching"]
    assert sum(r["matching"]["pairs"] for r in ranks) == reference["pairs"] == 8 + 7 + 7
    mean_loss = sum(r["matching"]["loss"] for r in ranks) / WORLD
    assert mean_loss.item() == pytest.approx(reference["loss"].item(), rel=1e-5)
    for name in ("hidden_proj_grad", "token_table_grad", "head_grad"):
        for result in ranks:
            torch.testing.assert_close(result["matching"][name], reference[name], rtol=1e-4, atol=1e-6)
