"""Packed cells (one row, block-diagonal attention) give the padded path's numbers: batches,
MGM masks, ``<cls>``/pooled states, every pre-training loss and every parameter gradient."""

import numpy as np
import pytest
import torch

from lightning_langcell.data.collate import CellBatchCollator, unpack_cell_states
from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.packed_attention import PACKED_ATTENTION
from lightning_langcell.tokenization import CLS_ID

LENGTHS = (3, 150, 9, 63, 1, 40)  # genes per cell, very different; 150 is truncated to 127
ALL_OBJECTIVES = {"mgm": 1.0, "cell_cell": 1.0, "cell_text": 1.0, "matching": 1.0}
REL = 1e-5


def cell_items(seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    return [
        {
            "index": 10 + i, "epoch": 2,
            "input_ids": rng.choice(np.arange(2, 25000), n, replace=False),
            "text_tokens": rng.integers(1000, 2000, 4 + i % 3), "text_id": i % 3,
        }
        for i, n in enumerate(LENGTHS)
    ]


def collate(packed: bool) -> dict:
    return CellBatchCollator(max_length=128, mgm_probability=0.15, seed=5, packed=packed)(cell_items())


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).norm() / expected.norm().clamp(min=1e-30))


def test_packed_batch_is_the_padded_batch_at_the_real_positions():
    padded, packed = collate(False), collate(True)
    real = padded["attention_mask"].bool()
    lengths = [min(n, 127) + 1 for n in LENGTHS]
    assert packed["cu_seqlens"].dtype == torch.int32
    assert packed["cu_seqlens"].tolist() == np.concatenate([[0], np.cumsum(lengths)]).tolist()
    assert packed["max_seqlen"] == 128
    total = sum(lengths)
    assert packed["input_ids"].shape == packed["position_ids"].shape == (1, total)
    assert packed["position_ids"][0].tolist() == [p for n in lengths for p in range(n)]
    assert packed["attention_mask"].tolist() == [[1] * total]
    for field in ("input_ids", "mgm_input_ids", "mgm_labels"):
        assert torch.equal(packed[field][0], padded[field][real]), field
    assert (packed["input_ids"][0, packed["cu_seqlens"][:-1].long()] == CLS_ID).all()
    assert (packed["mgm_labels"] != -100).sum() > 10  # masks really selected genes
    for field in ("index", "text_input_ids", "text_attention_mask", "text_ids"):
        assert torch.equal(packed[field], padded[field]), field
    fields = CellBatchCollator(mgm_probability=0.15, packed=True).batch_fields(labels=False, texts=True)
    assert fields == set(packed)


def tiny_model(pooling: str) -> LangCellModel:
    torch.manual_seed(0)
    return LangCellModel(LangCellConfig.preset("tiny", cell_pooling=pooling)).eval()


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_cell_states_equal_padded(pooling):
    model = tiny_model(pooling)
    padded, packed = collate(False), collate(True)
    hidden_padded, embedding_padded = model.encode_cells(padded["input_ids"], padded["attention_mask"])
    hidden_packed, embedding_packed = model.encode_cells(
        packed["input_ids"], packed["attention_mask"], packed["cu_seqlens"], packed["max_seqlen"],
        packed["position_ids"],
    )
    real = padded["attention_mask"].bool()
    assert hidden_packed.shape == (1, int(real.sum()), 64)
    assert relative_error(hidden_packed[0], hidden_padded[real]) < REL
    cls_packed = hidden_packed[0, packed["cu_seqlens"][:-1].long()]
    assert relative_error(cls_packed, hidden_padded[:, 0]) < REL
    assert relative_error(embedding_packed, embedding_padded) < REL
    assert model.cell_bert.config._attn_implementation == "sdpa"  # packed attention only inside the call
    unpacked, mask = unpack_cell_states(hidden_packed, packed["cu_seqlens"])
    assert torch.equal(mask, padded["attention_mask"])
    assert relative_error(unpacked[real], hidden_padded[real]) < REL and not unpacked[~real].any()
    # without block-diagonal attention the cells would see each other: the check has teeth
    leaky = model.cell_bert(input_ids=packed["input_ids"], position_ids=packed["position_ids"]).last_hidden_state
    assert relative_error(leaky[0], hidden_padded[real]) > 100 * REL


def losses_and_grads(batch: dict, pooling: str):
    pytest.importorskip("lightning.pytorch")
    from lightning_langcell.tasks import LangCellPretraining

    torch.manual_seed(0)
    task = LangCellPretraining(model="tiny", loss_weights=ALL_OBJECTIVES).eval()
    task.model.config.cell_pooling = pooling
    total, logs = task.compute_losses(batch)
    total.backward()
    grads = {name: p.grad.clone() for name, p in task.named_parameters() if p.grad is not None}
    return total, logs, grads


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_packed_losses_and_gradients_equal_padded(pooling):
    total_padded, logs_padded, grads_padded = losses_and_grads(collate(False), pooling)
    total_packed, logs_packed, grads_packed = losses_and_grads(collate(True), pooling)
    assert float(total_packed.detach()) == pytest.approx(float(total_padded.detach()), rel=REL)
    for name in ("loss_mgm", "loss_cell_cell", "loss_cell_text", "loss_matching", "mgm_accuracy"):
        assert float(logs_packed[name]) == pytest.approx(float(logs_padded[name]), rel=REL, abs=1e-7), name
    assert set(grads_packed) == set(grads_padded)
    assert "model.cell_bert.encoder.layer.0.attention.self.query.weight" in grads_packed
    for name, grad in grads_padded.items():
        # the attention key biases get a gradient that is 0 in exact arithmetic (softmax is shift
        # invariant), only rounding noise of ~1e-11: a 1e-8 floor covers it, far below real gradients
        error = float((grads_packed[name] - grad).norm())
        assert error <= REL * float(grad.norm()) + 1e-8, (name, error, float(grad.norm()))
    real_grads = [g for name, g in grads_padded.items() if "key.bias" not in name]
    assert min(float(g.norm()) for g in real_grads) > 1e-5  # the floor is negligible for them


def test_packed_inputs_are_checked():
    model = tiny_model("cls")
    packed = collate(True)
    with pytest.raises(LangCellInputError, match="position_ids"):
        model.encode_cells(packed["input_ids"], packed["attention_mask"], packed["cu_seqlens"], None, None)
    short = packed["cu_seqlens"].clone()
    short[-1] -= 1
    with pytest.raises(LangCellInputError, match="cu_seqlens"):
        model.encode_cells(packed["input_ids"], packed["attention_mask"], short, None, packed["position_ids"])
    assert PACKED_ATTENTION != model.cell_bert.config._attn_implementation


@pytest.mark.slow
def test_compiled_cell_encoder_runs_packed_cells_with_the_eager_numbers():
    # the packed attention's per-cell bounds are data: it runs eagerly inside the compiled encoder
    model = tiny_model("cls")
    packed = collate(True)
    args = (packed["input_ids"], packed["attention_mask"], packed["cu_seqlens"], packed["max_seqlen"],
            packed["position_ids"])
    hidden, embedding = model.encode_cells(*args)
    model.cell_bert.compile(dynamic=True)
    try:
        compiled_hidden, compiled_embedding = model.encode_cells(*args)
    finally:
        torch._dynamo.reset()
    assert relative_error(compiled_hidden, hidden) < REL
    assert relative_error(compiled_embedding, embedding) < REL
