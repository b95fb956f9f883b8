"""A second, independent reference for the text encoder: transformers' ``BlipTextModel``.

BLIP's "med" text encoder, which LangCell's ``text_bert`` is, has the same parameter tree as
``BlipTextModel`` (word + position embeddings without token types, ``attention``,
``crossattention`` and FFN per layer). The official fixture's ``text_bert`` weights load into both
(``weights_only=True``), and both run on the fixture's class texts (padded) alone ("text" mode)
and against the official cell encoder's states of the fixture's cells (multimodal).

Known differences, all without effect on the outputs compared here:

- padded cells: in transformers 5.24 ``BlipTextModel`` drops ``encoder_attention_mask`` on its way
  to the cross-attention (``BlipTextAttention.forward`` does not pass it on), so padded cell
  tokens are attended to. BlipTextModel therefore gets each cell cut to its real tokens (no mask
  needed), ours the padded batch with its mask: this checks our cell mask as well;

- padded text keys: ours adds -10000 to their scores (as the released LangCell/BLIP code),
  ``BlipTextModel`` the dtype's most negative value; both give them a softmax weight that
  underflows to 0 in fp32. Padded *query* rows differ (they attend to different things once the
  mask constants differ), so the comparison runs on real tokens only;
- BlipTextModel's pooler (absent from ours, unused by LangCell) is loaded but not compared;
- our default attention is SDPA, BlipTextModel's is written out: both are compared with ours in
  SDPA and in eager mode.

Tolerance: 1e-5 absolute and relative (fp32, different kernels).
"""

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import BlipTextConfig, BlipTextModel  # noqa: E402

from lightning_langcell.hub.official import load_official  # noqa: E402

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def fixture_dir(test_data_dir):
    return test_data_dir / "langcell-official-tiny"


@pytest.fixture(scope="module")
def blip(fixture_dir):
    """``BlipTextModel`` configured from the fixture's ``text_bert/config.json``, holding its weights."""
    import json

    config = json.loads((fixture_dir / "text_bert" / "config.json").read_text())
    blip_config = BlipTextConfig(
        vocab_size=config["vocab_size"], hidden_size=config["hidden_size"],
        encoder_hidden_size=config["encoder_width"], intermediate_size=config["intermediate_size"],
        num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
        max_position_embeddings=config["max_position_embeddings"], hidden_act=config["hidden_act"],
        layer_norm_eps=config["layer_norm_eps"], pad_token_id=config["pad_token_id"], is_decoder=True,
    )
    blip_config._attn_implementation = "eager"
    model = BlipTextModel(blip_config, add_pooling_layer=True).eval()
    state = torch.load(fixture_dir / "text_bert" / "pytorch_model.bin", map_location="cpu", weights_only=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not missing and set(unexpected) <= {"embeddings.position_ids"}
    return model


@pytest.fixture(scope="module")
def ours(fixture_dir):
    return load_official(fixture_dir)


@pytest.fixture(scope="module")
def inputs(fixture_dir):
    def array(name):
        return torch.from_numpy(np.load(fixture_dir / "inputs" / f"{name}.npy"))

    return {name: array(name) for name in
            ("cell_input_ids", "cell_attention_mask", "text_input_ids", "text_attention_mask")}


def real_tokens(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return hidden[mask.bool()]


def test_the_fixture_texts_are_padded(inputs):
    """The comparison exercises the text padding mask (otherwise its constant would not matter)."""
    lengths = inputs["text_attention_mask"].sum(1)
    assert lengths.min() < inputs["text_attention_mask"].shape[1] and lengths.max() > lengths.min()


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_text_mode_equals_blip_text_model(ours, blip, inputs, implementation):
    ids, mask = inputs["text_input_ids"], inputs["text_attention_mask"]
    ours.set_attn_implementation(implementation)
    try:
        with torch.no_grad():
            expected = blip(input_ids=ids, attention_mask=mask).last_hidden_state
            actual = ours.text_bert(ids, mask, mode="text")
    finally:
        ours.set_attn_implementation("sdpa")
    assert actual.shape == expected.shape
    torch.testing.assert_close(real_tokens(actual, mask), real_tokens(expected, mask), **TOL)


def blip_against_each_cell(blip, ids, mask, cells, cell_mask):
    """BlipTextModel's states [C, L, H] of the C texts against each cell alone, cut to its real
    tokens (see the module doc), one tensor per cell."""
    return [blip(input_ids=ids, attention_mask=mask,
                 encoder_hidden_states=cell[None, :int(real.sum())].expand(len(ids), -1, -1)).last_hidden_state
            for cell, real in zip(cells, cell_mask)]


@pytest.mark.parametrize("implementation", ["sdpa", "eager"])
def test_multimodal_mode_equals_blip_text_model(ours, blip, inputs, implementation):
    """The class texts against each cell of the fixture (ours: the padded cell batch, masked),
    cross-attending to the official cell encoder's states."""
    ids, mask, cell_mask = inputs["text_input_ids"], inputs["text_attention_mask"], inputs["cell_attention_mask"]
    assert not bool(cell_mask.all())  # the cell padding mask is exercised
    ours.set_attn_implementation(implementation)
    try:
        with torch.no_grad():
            cells, _ = ours.encode_cells(inputs["cell_input_ids"], cell_mask)
            cross_kv = ours.text_bert.precompute_cross_kv(cells)
            for b, expected in enumerate(blip_against_each_cell(blip, ids, mask, cells, cell_mask)):
                actual = ours.text_bert(ids, mask, encoder_hidden_states=cells[b:b + 1],
                                        encoder_attention_mask=cell_mask[b:b + 1], mode="multimodal")
                torch.testing.assert_close(real_tokens(actual, mask), real_tokens(expected, mask), **TOL)
                # the precomputed cross-attention key/value option (one cell broadcast to C texts)
                cached = ours.text_bert(ids, mask, encoder_attention_mask=cell_mask[b:b + 1], mode="multimodal",
                                        cross_kv=[(key[b:b + 1], value[b:b + 1]) for key, value in cross_kv])
                torch.testing.assert_close(real_tokens(cached, mask), real_tokens(expected, mask), **TOL)
    finally:
        ours.set_attn_implementation("sdpa")


def test_packed_class_texts_equal_blip_text_model_cls(ours, blip, inputs):
    """The packed inference option (class texts side by side, no padding, [CLS] only) against
    BlipTextModel's [CLS] states, text mode and multimodal (every cell with every class, and
    differing candidate classes per cell)."""
    ids, mask, cell_mask = inputs["text_input_ids"], inputs["text_attention_mask"], inputs["cell_attention_mask"]
    with torch.no_grad():
        cells, _ = ours.encode_cells(inputs["cell_input_ids"], cell_mask)
        prefix = ours.text_bert.text_prefix(ids, mask)
        everything = torch.arange(len(ids))
        packed = ours.text_bert(mode="text", text_prefix=prefix, candidates=everything[None])[0]
        torch.testing.assert_close(packed, blip(input_ids=ids, attention_mask=mask).last_hidden_state[:, 0], **TOL)
        expected = torch.stack([states[:, 0] for states in blip_against_each_cell(blip, ids, mask, cells, cell_mask)])
        fused = ours.text_bert(mode="multimodal", encoder_hidden_states=cells, encoder_attention_mask=cell_mask,
                               text_prefix=prefix, candidates=everything.expand(len(cells), -1))  # [B, C, H]
        torch.testing.assert_close(fused, expected, **TOL)
        ragged = torch.stack([torch.roll(everything, b)[:2] for b in range(len(cells))])  # 2 classes per cell
        fused = ours.text_bert(mode="multimodal", cross_kv=ours.text_bert.precompute_cross_kv(cells),
                               encoder_attention_mask=cell_mask, text_prefix=prefix, candidates=ragged)
        torch.testing.assert_close(fused, expected.gather(1, ragged[..., None].expand(-1, -1, expected.shape[-1])),
                                   **TOL)
