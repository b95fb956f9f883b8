"""LangCellModel and LangCellConfig: presets, serialisation, encoders, MGM head, checkpointing."""

import json

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.models import LangCellConfig, LangCellModel, list_presets

TOL = dict(atol=1e-5, rtol=1e-5)
SMALL = dict(cell={"vocab_size": 60, "hidden_size": 16, "max_position_embeddings": 32},
             text={"vocab_size": 40, "hidden_size": 24, "num_attention_heads": 2, "intermediate_size": 48,
                   "max_position_embeddings": 16},
             cell_pooling="cls")


def _small_model(randomise, **overrides) -> LangCellModel:
    torch.manual_seed(0)
    model = LangCellModel(LangCellConfig.preset("tiny", **{**SMALL, **overrides}))
    randomise(model)
    return model.eval()


def _cells(batch: int = 3, length: int = 10):
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(2, 59, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[0, 6:] = 0
    ids[0, 6:] = 0
    return ids, mask


def test_presets_have_the_documented_shapes():
    assert list_presets() == ["langcell", "tiny"]
    langcell = LangCellConfig.preset("langcell").cell_bert_config()
    assert (langcell.num_hidden_layers, langcell.hidden_size, langcell.num_attention_heads) == (12, 512, 8)
    assert (langcell.intermediate_size, langcell.hidden_act, langcell.vocab_size) == (1024, "relu", 25427)
    assert (langcell.max_position_embeddings, langcell.hidden_dropout_prob) == (2048, 0.02)
    text = LangCellConfig.preset("langcell").text
    assert (text.hidden_size, text.num_hidden_layers, text.encoder_width) == (768, 12, 512)
    tiny = LangCellConfig.preset("tiny")
    assert (tiny.cell.num_hidden_layers, tiny.cell.hidden_size, tiny.cell.intermediate_size) == (2, 64, 128)
    assert tiny.text.encoder_width == 64 and tiny.embed_dim == 256
    # Changing the cell width follows through to the text cross-attention.
    assert LangCellConfig.preset("tiny", cell={"hidden_size": 32}).text.encoder_width == 32


def test_config_json_round_trip():
    config = LangCellConfig.preset("tiny", attn_implementation="eager", mgm_tie_word_embeddings=False)
    data = json.loads(json.dumps(config.to_dict()))
    assert LangCellConfig.from_dict(data) == config
    assert data["cell"]["hidden_act"] == "relu" and data["text"]["encoder_width"] == 64


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attn_implementation": "flash"}, "Unknown attn_implementation"),
        ({"text": {"encoder_width": 7}}, "encoder_width"),
        ({"temperature_init": 0.9}, "Temperature"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(LangCellInputError, match=message):
        LangCellConfig.preset("tiny", **kwargs)
    with pytest.raises(LangCellInputError, match="Unknown LangCellConfig keys"):
        LangCellConfig.from_dict({"hidden": 3})
    with pytest.raises(LangCellInputError, match="Unknown model preset"):
        LangCellConfig.preset("huge")


def test_encoders_give_normalised_embeddings(randomise):
    model = _small_model(randomise)
    ids, mask = _cells()
    with torch.no_grad():
        hidden, cell_embedding = model.encode_cells(ids, mask)
        cls_hidden, text_embedding = model.encode_texts(ids[:2, :5] % 40, mask[:2, :5])
        logits = model.match_logits(ids[:, :5] % 40, mask[:, :5], hidden, mask)
    assert hidden.shape == (3, 10, 16) and cell_embedding.shape == (3, 256)
    assert cls_hidden.shape == (2, 24) and text_embedding.shape == (2, 256)
    torch.testing.assert_close(cell_embedding.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(text_embedding.norm(dim=-1), torch.ones(2))
    torch.testing.assert_close(cell_embedding, torch.nn.functional.normalize(model.cell_proj(hidden[:, 0]), dim=-1))
    assert logits.shape == (3, 2)


def test_mean_pooling_averages_gene_positions(randomise):
    model = _small_model(randomise, cell_pooling="mean")
    ids, mask = _cells()
    with torch.no_grad():
        hidden, cell_embedding = model.encode_cells(ids, mask)
    for row in range(ids.shape[0]):
        genes = hidden[row, 1 : int(mask[row].sum())]  # gene positions, <cls> and padding excluded
        expected = torch.nn.functional.normalize(model.cell_proj(genes.mean(0)), dim=-1)
        torch.testing.assert_close(cell_embedding[row], expected)


def test_sdpa_and_eager_cell_attention_agree(randomise):
    model = _small_model(randomise)
    ids, mask = _cells()
    with torch.no_grad():
        sdpa = model.encode_cells(ids, mask)[0]
        model.set_attn_implementation("eager")
        assert model.cell_bert.config._attn_implementation == "eager"
        eager = model.encode_cells(ids, mask)[0]
    torch.testing.assert_close(sdpa[mask.bool()], eager[mask.bool()], **TOL)


def test_eager_text_attention_equals_sdpa_in_both_modes(randomise):
    """The written-out (released-code) attention and the fused kernel give the same text states,
    with padded texts and padded cells, for the text embedding and the matcher."""
    model = _small_model(randomise)
    ids, mask = _cells()
    text = torch.tensor([[1, 5, 7, 9, 3, 0], [1, 4, 4, 2, 8, 6], [1, 9, 3, 0, 0, 0]])
    text_mask = (text != 0).long()
    outputs = {}
    with torch.no_grad():
        hidden = model.encode_cells(ids, mask)[0]
        for implementation in ("sdpa", "eager"):
            model.set_attn_implementation(implementation)
            outputs[implementation] = (model.encode_texts(text, text_mask)[1],
                                       model.match_logits(text, text_mask, hidden, mask))
    kinds = {type(m).__name__: m.implementation for m in model.text_bert.modules() if hasattr(m, "implementation")}
    assert kinds == {"AttentionProjections": "eager"}
    for sdpa, eager in zip(outputs["sdpa"], outputs["eager"]):
        torch.testing.assert_close(sdpa, eager, **TOL)
    assert not torch.allclose(outputs["eager"][1][0], outputs["eager"][1][1])  # texts differ → logits differ


def test_token_type_row_zero_is_added_to_every_position(randomise):
    """Official behaviour: HF BertModel adds token-type embedding 0 when no token_type_ids are given."""
    model = _small_model(randomise)
    ids, mask = _cells()
    table = model.cell_bert.embeddings.token_type_embeddings.weight
    shift = torch.linspace(-1, 1, table.shape[1])  # not constant: LayerNorm would remove that
    with torch.no_grad():
        before = model.encode_cells(ids, mask)[0]
        table[1] += shift
        unchanged = model.encode_cells(ids, mask)[0]
        table[0] += shift
        changed = model.encode_cells(ids, mask)[0]
    assert torch.equal(before, unchanged)
    assert (changed - before).abs().max() > 1e-3


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
def test_mgm_logits_only_at_masked_positions(randomise, tied):
    model = _small_model(randomise, mgm_tie_word_embeddings=tied)
    ids, mask = _cells()
    positions = torch.zeros_like(mask, dtype=torch.bool)
    positions[0, [1, 4]] = True
    positions[2, 7] = True
    hidden, _ = model.encode_cells(ids, mask)
    logits = model.mgm_logits(hidden, positions)
    full = model.mgm_head(hidden, model.cell_bert.embeddings.word_embeddings.weight)
    assert logits.shape == (3, 60)
    torch.testing.assert_close(logits, full[positions], **TOL)
    indices = torch.tensor([[0, 1], [0, 4], [2, 7]])
    torch.testing.assert_close(model.mgm_logits(hidden, indices), logits, **TOL)
    if tied:  # the decoder is the word-embedding matrix
        manual = model.mgm_head.transform(hidden[positions]) @ model.cell_bert.embeddings.word_embeddings.weight.T
        torch.testing.assert_close(logits, manual + model.mgm_head.bias, **TOL)
        assert "mgm_head.decoder.weight" not in model.state_dict()
    else:
        assert model.state_dict()["mgm_head.decoder.weight"].shape == (60, 16)
    with pytest.raises(LangCellInputError, match="select no genes"):
        model.mgm_logits(hidden, torch.tensor([1, 2]))


def test_temperature_is_learnable_and_clamped(randomise):
    model = LangCellModel(LangCellConfig.preset("tiny", **SMALL))
    assert model.temp.requires_grad and model.temperature().item() == pytest.approx(0.07)
    with torch.no_grad():
        model.temp.fill_(2.0)
    assert model.temperature().item() == pytest.approx(0.5)
    with torch.no_grad():
        model.temp.fill_(-1.0)
    assert model.temperature().item() == pytest.approx(0.001)


def _loss_and_grads(model: LangCellModel, ids, mask):
    model.zero_grad()
    torch.manual_seed(11)
    hidden, cell_embedding = model.encode_cells(ids, mask)
    _, text_embedding = model.encode_texts(ids[:, :5] % 40, mask[:, :5])
    logits = model.match_logits(ids[:, :5] % 40, mask[:, :5], hidden, mask)
    genes = model.mgm_logits(hidden, mask.bool() & (ids % 3 == 0))
    loss = (cell_embedding @ text_embedding.T).sum() + logits.square().sum() + genes.logsumexp(-1).sum()
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def test_gradient_checkpointing_gives_the_same_gradients(randomise):
    model = _small_model(randomise).train()  # dropout on: recomputation must replay it
    ids, mask = _cells()
    loss_plain, grads_plain = _loss_and_grads(model, ids, mask)
    model.set_gradient_checkpointing(True)
    assert model.cell_bert.encoder.layer[0].gradient_checkpointing and model.text_bert.gradient_checkpointing
    loss_ckpt, grads_ckpt = _loss_and_grads(model, ids, mask)
    torch.testing.assert_close(loss_ckpt, loss_plain, atol=1e-5, rtol=1e-6)
    assert grads_plain.keys() == grads_ckpt.keys()
    assert "cell_bert.encoder.layer.0.attention.self.query.weight" in grads_plain
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], atol=1e-5, rtol=1e-5, msg=name)
    assert LangCellModel(LangCellConfig.preset("tiny", gradient_checkpointing=True, **SMALL)).text_bert.gradient_checkpointing


def test_parameters_are_fsdp_shardable_and_old_scalar_temperature_loads():
    model = LangCellModel(LangCellConfig.preset("tiny"))
    assert all(parameter.dim() > 0 for parameter in model.parameters())  # FSDP refuses 0-d parameters
    state = model.state_dict()
    state["temp"] = torch.tensor(0.0526)  # as checkpoints before the change stored it
    model.load_state_dict(state)
    assert model.temp.shape == (1,) and model.temperature().item() == pytest.approx(0.0526)
