"""BLIP-"med" text encoder: modes, cached cross-attention, broadcasting, checkpointing, BERT init."""

import pytest
import torch
from transformers import BertConfig, BertForMaskedLM, BertModel

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.hub.bert_init import text_encoder_from_bert
from lightning_langcell.models.config import TextEncoderConfig
from lightning_langcell.models.text_encoder import TextEncoder

TOL = dict(atol=1e-5, rtol=1e-5)
CONFIG = TextEncoderConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=32, max_position_embeddings=24, encoder_width=12)


@pytest.fixture()
def encoder(randomise) -> TextEncoder:
    model = TextEncoder(CONFIG)
    randomise(model)
    return model.eval()


@pytest.fixture()
def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 50, (3, 7), generator=generator)
    ids[:, 0] = 2
    mask = torch.ones(3, 7, dtype=torch.long)
    mask[1, 5:] = 0
    ids[1, 5:] = 0
    cells = torch.randn(3, 9, 12, generator=generator)
    cell_mask = torch.ones(3, 9, dtype=torch.long)
    cell_mask[0, 4:] = 0
    return ids, mask, cells, cell_mask


def test_state_dict_keys_follow_the_released_names(encoder):
    keys = set(encoder.state_dict())
    assert "embeddings.word_embeddings.weight" in keys
    assert "embeddings.token_type_embeddings.weight" not in keys
    assert "embeddings.position_ids" not in keys  # non-persistent buffer
    assert encoder.state_dict()["encoder.layer.1.crossattention.self.key.weight"].shape == (16, 12)
    assert encoder.state_dict()["encoder.layer.0.crossattention.output.LayerNorm.bias"].shape == (16,)
    assert len(keys) == 4 + 2 * 26


def test_text_mode_ignores_cross_attention_weights(encoder, batch):
    ids, mask, cells, cell_mask = batch
    with torch.no_grad():
        before = encoder(ids, mask, cells, cell_mask, mode="text")
        fused_before = encoder(ids, mask, cells, cell_mask, mode="multimodal")
        for name, parameter in encoder.named_parameters():
            if "crossattention" in name:
                parameter.add_(1.0)
        after = encoder(ids, mask, cells, cell_mask, mode="text")
        fused_after = encoder(ids, mask, cells, cell_mask, mode="multimodal")
    assert torch.equal(before, after)
    assert (fused_before - fused_after).abs().max() > 1e-2


def test_padded_cell_keys_are_ignored(encoder, batch):
    ids, mask, cells, cell_mask = batch
    altered = cells.clone()
    altered[0, 4:] = 100.0  # padded positions of cell 0
    with torch.no_grad():
        plain = encoder(ids, mask, cells, cell_mask, mode="multimodal")
        changed = encoder(ids, mask, altered, cell_mask, mode="multimodal")
    torch.testing.assert_close(plain, changed, **TOL)


def test_padded_text_equals_unpadded(encoder, batch):
    ids, mask, cells, cell_mask = batch
    with torch.no_grad():
        padded = encoder(ids, mask, cells, cell_mask, mode="multimodal")[1, :5]
        alone = encoder(ids[1:2, :5], None, cells[1:2], cell_mask[1:2], mode="multimodal")[0]
    torch.testing.assert_close(padded, alone, **TOL)


def test_cached_cross_kv_equals_plain_path(encoder, batch):
    ids, mask, cells, cell_mask = batch
    with torch.no_grad():
        plain = encoder(ids, mask, cells, cell_mask, mode="multimodal")
        cross_kv = encoder.precompute_cross_kv(cells)
        cached = encoder(ids, mask, None, cell_mask, mode="multimodal", cross_kv=cross_kv)
    assert len(cross_kv) == CONFIG.num_hidden_layers
    assert cross_kv[0][0].shape == (3, 2, 9, 8)
    torch.testing.assert_close(cached, plain, **TOL)


def test_one_text_broadcasts_over_cells_and_one_cell_over_texts(encoder, batch):
    ids, mask, cells, cell_mask = batch
    one_text = ids[:1]
    with torch.no_grad():
        repeated = encoder(one_text.expand(3, -1), None, cells, cell_mask, mode="multimodal")
        broadcast = encoder(one_text, None, cells, cell_mask, mode="multimodal")
        cached = encoder(one_text, None, None, cell_mask, mode="multimodal", cross_kv=encoder.precompute_cross_kv(cells))
        texts_repeated = encoder(ids, mask, cells[2:].expand(3, -1, -1), cell_mask[2:].expand(3, -1), mode="multimodal")
        one_cell = encoder(ids, mask, cells[2:], cell_mask[2:], mode="multimodal")
    assert broadcast.shape == (3, 7, 16)
    torch.testing.assert_close(broadcast, repeated, **TOL)
    torch.testing.assert_close(cached, repeated, **TOL)
    torch.testing.assert_close(one_cell, texts_repeated, **TOL)
    with pytest.raises(LangCellInputError, match="cannot be paired"):
        encoder(ids[:2], mask[:2], cells, cell_mask, mode="multimodal")


def test_gradient_checkpointing_gives_the_same_gradients(encoder, batch):
    ids, mask, cells, cell_mask = batch
    encoder.train()  # dropout on: checkpointing must replay the same dropout masks
    results = []
    for checkpointing in (False, True):
        encoder.set_gradient_checkpointing(checkpointing)
        encoder.zero_grad()
        cell_states = cells.clone().requires_grad_(True)
        torch.manual_seed(7)
        out = encoder(ids, mask, cell_states, cell_mask, mode="multimodal")
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        grads = {name: p.grad.clone() for name, p in encoder.named_parameters()}
        results.append((out.detach(), grads, cell_states.grad.clone()))
    (out_a, grads_a, cells_a), (out_b, grads_b, cells_b) = results
    torch.testing.assert_close(out_b, out_a, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(cells_b, cells_a, atol=1e-6, rtol=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=1e-6, msg=name)
    assert grads_a["encoder.layer.0.crossattention.self.key.weight"].abs().sum() > 0


def test_bad_calls_raise_clear_errors(encoder, batch):
    ids, mask, cells, cell_mask = batch
    with pytest.raises(LangCellInputError, match="needs the cell states"):
        encoder(ids, mask, mode="multimodal")
    with pytest.raises(LangCellInputError, match="Unknown text-encoder mode"):
        encoder(ids, mask, mode="fusion")
    with pytest.raises(LangCellInputError, match="exceeds the 24 positions"):
        encoder(torch.ones(1, 25, dtype=torch.long))
    with pytest.raises(LangCellInputError, match="cross_kv holds 1 layers"):
        encoder(ids, mask, None, cell_mask, mode="multimodal", cross_kv=encoder.precompute_cross_kv(cells)[:1])


def _save_bert(path, masked_lm: bool, randomise):
    config = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=24, attn_implementation="eager")
    torch.manual_seed(3)
    model = (BertForMaskedLM if masked_lm else BertModel)(config)
    randomise(model, seed=4)
    bert = model.bert if masked_lm else model
    with torch.no_grad():
        bert.embeddings.token_type_embeddings.weight.zero_()  # our encoder has none
    model.save_pretrained(path)
    return bert.eval()


@pytest.mark.parametrize("masked_lm", [False, True], ids=["BertModel", "BertForMaskedLM"])
def test_init_from_local_bert(tmp_path, masked_lm, randomise):
    bert = _save_bert(tmp_path, masked_lm, randomise)
    encoder, report = text_encoder_from_bert(tmp_path, encoder_width=12, vocab_size=42)
    encoder.eval()
    assert encoder.config.hidden_size == 16 and encoder.config.encoder_width == 12
    assert "embeddings.word_embeddings.weight" in report.loaded
    assert "encoder.layer.1.output.LayerNorm.weight" in report.loaded
    assert sorted(report.initialized) == sorted(k for k in encoder.state_dict() if "crossattention" in k)
    assert "embeddings.token_type_embeddings.weight" in report.unused
    assert any(key.startswith("cls.") for key in report.unused) == masked_lm
    table = encoder.embeddings.word_embeddings.weight
    torch.testing.assert_close(table[40], bert.embeddings.word_embeddings.weight.mean(0))
    torch.testing.assert_close(table[41], table[40])
    ids = torch.tensor([[2, 7, 9, 11, 3, 0], [2, 5, 3, 0, 0, 0]])
    mask = (ids > 0).long()
    mask[:, 0] = 1
    with torch.no_grad():
        expected = bert(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = encoder(ids, mask, mode="text")
    valid = mask.bool()
    torch.testing.assert_close(ours[valid], expected[valid], **TOL)
