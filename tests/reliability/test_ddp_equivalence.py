"""Two gloo processes running one ``LangCellPretraining.compute_losses`` step on their shares of a
world batch give the single-process loss and (DDP-averaged) gradients on the whole batch.

World batch: 8 real mouse lung cells (gene lists cut to 5–31 tokens so each rank pads to its own
length), with their texts (identical texts within and across ranks) and MGM masks. Rank 0 holds 3
cells, rank 1 holds 5. All four losses are on; the model is in eval mode (no dropout). Hard-negative
sampling is random, so for both runs ``sample_hard_negatives`` is replaced by a deterministic choice:
the most probable admissible column (argmax of ``hard_negative_probabilities``), which picks the same
world column in one process and in two, and exercises the same gathered matching batch.
"""

import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

pytest.importorskip("lightning.pytorch")

from lightning_langcell.objectives import HardNegatives, hard_negative_probabilities  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
SIZES = (3, 5)
WORLD = len(SIZES)
GENES_KEPT = (5, 31, 12, 20, 8, 25, 17, 30)  # gene tokens per cell (<cls> added by the collator)
LOSS_KEYS = ("loss_mgm", "loss_cell_cell", "loss_cell_text", "loss_matching")


def argmax_hard_negatives(logits, ids_local, ids_world, generator=None) -> HardNegatives:
    """The most probable admissible negative of each row (no randomness)."""
    probabilities = hard_negative_probabilities(logits, ids_local, ids_world)
    valid = probabilities.sum(dim=1) > 0
    indices = torch.where(valid, probabilities.argmax(dim=1), torch.full_like(valid, -1, dtype=torch.long))
    return HardNegatives(indices=indices, valid=valid)


def one_step(batch: dict, state: dict) -> dict:
    """Loss, logged losses and parameter gradients of one compute_losses + backward."""
    import lightning_langcell.objectives.pretraining as objectives
    from lightning_langcell.tasks import LangCellPretraining

    objectives.sample_hard_negatives = argmax_hard_negatives  # where the matching objective looks it up
    task = LangCellPretraining(model="tiny")
    task.load_state_dict(state)
    task.eval()
    total, logs = task.compute_losses(batch)
    total.backward()
    grads = {name: p.grad.detach().clone() for name, p in task.named_parameters() if p.grad is not None}
    return {"total": total.detach(), "logs": {k: logs[k].detach() for k in LOSS_KEYS}, "grads": grads}


def _worker(rank: int, folder: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=WORLD)
    try:
        inputs = torch.load(Path(folder) / "inputs.pt", weights_only=True)
        result = one_step(inputs["halves"][rank], inputs["state"])
        for grad in result["grads"].values():  # what DDP does: average the gradients over ranks
            dist.all_reduce(grad)
            grad /= WORLD
        torch.save(result, Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _collate(datamodule, items):
    return dict(datamodule.collator(masked=True)(items))


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    from lightning_langcell.data.datamodule import LangCellDataModule
    from lightning_langcell.tasks import LangCellPretraining

    datamodule = LangCellDataModule(
        data=str(REPO / "data/cells/mouse_lung_injury.h5ad"), cache_dir=str(tmp_path_factory.mktemp("corpora")),
        max_length=32, batch_size=8, text_max_length=32, mgm_probability=0.15, seed=0,
    )
    datamodule.setup("fit")
    dataset = datamodule.datasets["train"]
    positions = np.random.default_rng(0).choice(len(dataset), len(GENES_KEPT), replace=False)
    items = []
    for position, kept in zip(positions.tolist(), GENES_KEPT):
        item = dataset[(0, position)]
        item["input_ids"] = item["input_ids"][:kept]
        items.append(item)
    world = _collate(datamodule, items)
    halves = [_collate(datamodule, items[: SIZES[0]]), _collate(datamodule, items[SIZES[0]:])]
    torch.manual_seed(0)
    state = LangCellPretraining(model="tiny").state_dict()
    return {"world": world, "halves": halves, "state": state}


@pytest.fixture(scope="module")
def ranks(inputs):
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"halves": inputs["halves"], "state": inputs["state"]}, Path(folder) / "inputs.pt")
        mp.spawn(_worker, args=(folder,), nprocs=WORLD, join=True)
        return [torch.load(Path(folder) / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


@pytest.fixture(scope="module")
def single(inputs):
    import lightning_langcell.objectives.pretraining as objectives

    original = objectives.sample_hard_negatives
    try:
        return one_step(inputs["world"], inputs["state"])
    finally:
        objectives.sample_hard_negatives = original


def test_the_world_batch_is_really_split(inputs):
    world, halves = inputs["world"], inputs["halves"]
    assert [h["input_ids"].shape for h in halves] == [(3, 32), (5, 31)]  # each rank pads to its own length
    assert world["input_ids"].shape == (8, 32)
    masked = [int((h["mgm_labels"] != -100).sum()) for h in halves]
    assert sum(masked) == int((world["mgm_labels"] != -100).sum())
    assert masked[0] != masked[1]  # unequal MGM token counts: a per-rank mean would weigh tokens unequally
    shared = set(halves[0]["text_ids"].tolist()) & set(halves[1]["text_ids"].tolist())
    assert shared  # some texts appear on both ranks: positives across ranks, never negatives


def test_losses_match_one_process(ranks, single):
    for key in LOSS_KEYS:
        mean = sum(float(r["logs"][key]) for r in ranks) / WORLD
        assert mean == pytest.approx(float(single["logs"][key]), rel=1e-5, abs=1e-6), key
    mean_total = sum(float(r["total"]) for r in ranks) / WORLD
    print(f"total loss: 2 ranks {mean_total:.7f}, 1 process {float(single['total']):.7f}")
    assert mean_total == pytest.approx(float(single["total"]), rel=1e-5)


def test_gradients_match_one_process(ranks, single):
    reference = single["grads"]
    scale = max(float(g.abs().max()) for g in reference.values())
    worst = 0.0
    for result in ranks:
        assert result["grads"].keys() == reference.keys()
        for name, grad in result["grads"].items():
            torch.testing.assert_close(grad, reference[name], rtol=1e-4, atol=1e-6 * scale, msg=name)
            worst = max(worst, float((grad - reference[name]).abs().max()))
    print(f"{len(reference)} parameter gradients: max |difference| {worst:.3g} (largest gradient {scale:.3g})")
    every_part = {"model.cell_bert.embeddings.word_embeddings.weight", "model.temp", "model.ctm_head.weight",
                  "model.mgm_head.bias", "model.text_proj.weight"}
    assert every_part <= reference.keys()  # each loss reached its parameters
