"""The objectives on a CUDA device give the CPU numbers (skipped without a GPU)."""

import pytest
import torch

from lightning_langcell.objectives import (
    cell_cell_contrastive_loss,
    cell_text_contrastive_loss,
    cell_text_matching_loss,
    mask_genes,
    sample_hard_negatives,
)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA = torch.device("cuda")


def _batch(seed=0, rows=16, dim=256):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, dim, generator=g), torch.randn(rows, dim, generator=g), torch.randint(0, 5, (rows,), generator=g)


def test_contrastive_and_matching_losses_equal_cpu():
    cells, texts, ids = _batch()
    for loss_of in (
        lambda c, t, i: cell_text_contrastive_loss(c, t, i, 0.07)[0],
        lambda c, t, i: cell_cell_contrastive_loss(c, t, torch.tensor(0.05, device=c.device))[0],
        lambda c, t, i: cell_text_matching_loss(c[:, :2], (i > 2).long())[0],
    ):
        cpu = loss_of(cells, texts, ids)
        gpu = loss_of(cells.to(CUDA), texts.to(CUDA), ids.to(CUDA))
        assert gpu.device.type == "cuda"
        assert gpu.item() == pytest.approx(cpu.item(), rel=1e-5)


def test_bf16_autocast_keeps_the_loss_in_float32():
    cells, texts, ids = (t.to(CUDA) for t in _batch(1))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, stats = cell_text_contrastive_loss(cells, texts, ids, 0.07)
    reference, _ = cell_text_contrastive_loss(cells, texts, ids, 0.07)
    assert loss.dtype == torch.float32 and stats.logits_ab.dtype == torch.bfloat16
    assert loss.item() == pytest.approx(reference.item(), rel=2e-2)


def test_hard_negatives_with_cpu_or_cuda_generator():
    cells, texts, ids = _batch(2)
    _, stats = cell_text_contrastive_loss(cells.to(CUDA), texts.to(CUDA), ids.to(CUDA), 0.07)
    cpu_draw = sample_hard_negatives(stats.logits_ab.cpu(), ids, stats.ids_world.cpu(), torch.Generator().manual_seed(3))
    gpu_draw = sample_hard_negatives(stats.logits_ab, ids.to(CUDA), stats.ids_world, torch.Generator().manual_seed(3))
    assert gpu_draw.indices.device.type == "cuda"
    assert torch.equal(gpu_draw.indices.cpu(), cpu_draw.indices)  # draws happen on the generator's device
    on_gpu = sample_hard_negatives(
        stats.logits_ab, ids.to(CUDA), stats.ids_world, torch.Generator(device=CUDA).manual_seed(3)
    )
    chosen = on_gpu.indices[on_gpu.valid].cpu()
    assert (ids[chosen] != ids[on_gpu.valid.cpu()]).all()


def test_mask_genes_on_cuda_inputs_equals_cpu():
    g = torch.Generator().manual_seed(4)
    ids = torch.randint(2, 25426, (8, 64), generator=g)
    ids[:, 0] = 25426
    ids[4:, 40:] = 0
    mask = (ids != 0).long()
    cpu = mask_genes(ids, mask, seed=5, epoch=2, indices=range(8))
    gpu = mask_genes(ids.to(CUDA), mask.to(CUDA), seed=5, epoch=2, indices=range(8))
    assert gpu[0].device.type == "cuda"
    assert torch.equal(gpu[0].cpu(), cpu[0]) and torch.equal(gpu[1].cpu(), cpu[1])
