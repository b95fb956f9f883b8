"""Parity with the official LangCell code on the tiny official-layout fixture.

Every array in ``expected/`` is reproduced within atol = rtol = 1e-5 and ``pred`` exactly, with
the cell encoder on SDPA and on eager attention. Sizes are read from the fixture, so another
fixture of the same layout can be checked with ``LANGCELL_OFFICIAL_FIXTURE=/path``.
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lightning_langcell.hub.official import load_official
from lightning_langcell.models.zero_shot_scores import OFFICIAL_ALPHA, OFFICIAL_TEMPERATURE, zero_shot_scores

TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope="module")
def fixture_dir(test_data_dir) -> Path:
    return Path(os.environ.get("LANGCELL_OFFICIAL_FIXTURE", test_data_dir / "langcell-official-tiny"))


def _array(fixture_dir: Path, name: str) -> torch.Tensor:
    return torch.from_numpy(np.load(fixture_dir / name))


def _fused_cls(model, text_ids, text_mask, cell_hidden, cell_mask, cross_kv=None):
    """The ``[CLS]`` state of the text encoder's multimodal pass (text i with cell i)."""
    return model.text_bert(text_ids, text_mask, encoder_hidden_states=cell_hidden, encoder_attention_mask=cell_mask,
                           mode="multimodal", cross_kv=cross_kv)[:, 0]


def _unpadded_texts(ids: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Each class text alone, [1, length], as the official notebook encodes them."""
    return [row[: int(m.sum())][None] for row, m in zip(ids, mask)]


@pytest.fixture(scope="module", params=["sdpa", "eager"])
def outputs(request, fixture_dir) -> dict[str, torch.Tensor]:
    """Every quantity of the official zero-shot computation, from our model."""
    torch.manual_seed(0)
    model = load_official(fixture_dir, attn_implementation=request.param)
    assert model.cell_bert.config._attn_implementation == request.param
    cell_ids = _array(fixture_dir, "inputs/cell_input_ids.npy")
    cell_mask = _array(fixture_dir, "inputs/cell_attention_mask.npy")
    text_ids = _array(fixture_dir, "inputs/text_input_ids.npy")
    text_mask = _array(fixture_dir, "inputs/text_attention_mask.npy")
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        hidden, out["cell_embedding"] = model.encode_cells(cell_ids, cell_mask)
        out["cell_last_hidden_state"] = hidden
        out["cell_proj_raw"] = model.cell_proj(hidden[:, 0])
        texts = _unpadded_texts(text_ids, text_mask)
        out["text_cls_hidden"] = torch.cat([model.encode_texts(t, torch.ones_like(t))[0] for t in texts])
        out["text_cls_hidden_padded"] = model.encode_texts(text_ids, text_mask)[0]
        out["text_proj_raw"] = model.text_proj(out["text_cls_hidden"])
        out["text_embedding"] = torch.cat([model.encode_texts(t, torch.ones_like(t))[1] for t in texts])
        # Official form: the class text repeated once per cell, all-ones text mask.
        n_cells = cell_ids.shape[0]
        out["ctm_cls_hidden"] = torch.stack(
            [_fused_cls(model, t.expand(n_cells, -1), torch.ones(n_cells, t.shape[1]), hidden, cell_mask) for t in texts],
            dim=1,
        )
        # Fast form: the cells' cross-attention key/value once, one text broadcast over all cells.
        cross_kv = model.precompute_cross_kv(hidden)
        out["ctm_cls_hidden_cached"] = torch.stack(
            [_fused_cls(model, t, None, None, cell_mask, cross_kv=cross_kv) for t in texts], dim=1
        )
        out["ctm_head_logits"] = model.ctm_head(out["ctm_cls_hidden"])
        # match_logits is the matcher on that CLS state (the one multimodal forward).
        first = texts[0].expand(n_cells, -1)
        torch.testing.assert_close(model.match_logits(first, torch.ones(n_cells, first.shape[1]), hidden, cell_mask),
                                   out["ctm_head_logits"][:, 0], rtol=0, atol=0)
        scores = zero_shot_scores(out["cell_embedding"], out["text_embedding"], out["ctm_head_logits"])
    out.update(vars(scores))
    out["cell_attention_mask"] = cell_mask
    return out


def test_fixture_checksums(fixture_dir):
    for line in (fixture_dir / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        assert hashlib.sha256((fixture_dir / name).read_bytes()).hexdigest() == digest, name


def test_cell_encoder_matches_official(outputs, fixture_dir):
    valid = outputs["cell_attention_mask"].bool()
    expected = _array(fixture_dir, "expected/cell_last_hidden_state.npy")
    torch.testing.assert_close(outputs["cell_last_hidden_state"][valid], expected[valid], **TOL)
    for name in ("cell_proj_raw", "cell_embedding"):
        torch.testing.assert_close(outputs[name], _array(fixture_dir, f"expected/{name}.npy"), **TOL)
    torch.testing.assert_close(outputs["cell_embedding"].norm(dim=-1), torch.ones(valid.shape[0]), **TOL)


def test_text_encoder_matches_official(outputs, fixture_dir):
    for name in ("text_cls_hidden", "text_proj_raw", "text_embedding"):
        torch.testing.assert_close(outputs[name], _array(fixture_dir, f"expected/{name}.npy"), **TOL)
    # The padded batch (additive -10000 on padded keys) gives the same CLS states.
    torch.testing.assert_close(outputs["text_cls_hidden_padded"], outputs["text_cls_hidden"], **TOL)


def test_fusion_matcher_matches_official(outputs, fixture_dir):
    expected = _array(fixture_dir, "expected/ctm_cls_hidden.npy")
    torch.testing.assert_close(outputs["ctm_cls_hidden"], expected, **TOL)
    torch.testing.assert_close(outputs["ctm_cls_hidden_cached"], expected, **TOL)
    for name in ("ctm_head_logits", "ctm_match_prob", "ctm_probs"):
        torch.testing.assert_close(outputs[name], _array(fixture_dir, f"expected/{name}.npy"), **TOL)


def test_zero_shot_scores_match_official(outputs, fixture_dir):
    for name in ("ctc_logits", "ctc_probs", "probs_avg", "final_probs"):
        torch.testing.assert_close(outputs[name], _array(fixture_dir, f"expected/{name}.npy"), **TOL)
    expected_pred = _array(fixture_dir, "expected/pred.npy")
    assert outputs["pred"].dtype == torch.int64
    assert torch.equal(outputs["pred"], expected_pred)


def test_zero_shot_scores_arithmetic_on_expected_inputs(fixture_dir):
    """The pure scoring function, fed the official embeddings and logits, gives the official scores."""
    scores = zero_shot_scores(
        _array(fixture_dir, "expected/cell_embedding.npy"),
        _array(fixture_dir, "expected/text_embedding.npy"),
        _array(fixture_dir, "expected/ctm_head_logits.npy"),
        temperature=OFFICIAL_TEMPERATURE,
        alpha=OFFICIAL_ALPHA,
    )
    for name in ("ctc_logits", "ctc_probs", "ctm_match_prob", "ctm_probs", "probs_avg", "final_probs"):
        torch.testing.assert_close(getattr(scores, name), _array(fixture_dir, f"expected/{name}.npy"), **TOL)
    assert torch.equal(scores.pred, _array(fixture_dir, "expected/pred.npy"))
    torch.testing.assert_close(scores.ctm_probs.sum(-1), torch.ones(scores.pred.shape[0]))


def test_fixture_sizes_come_from_the_files(fixture_dir):
    """The loaded model takes every size from the configs and tensors (nothing hard-coded)."""
    model = load_official(fixture_dir)
    cell = json.loads((fixture_dir / "cell_bert/config.json").read_text())
    text = json.loads((fixture_dir / "text_bert/config.json").read_text())
    assert model.cell_bert.config.hidden_size == cell["hidden_size"]
    assert model.cell_bert.config.num_hidden_layers == cell["num_hidden_layers"]
    assert model.text_bert.config.hidden_size == text["hidden_size"]
    assert model.text_bert.config.encoder_width == text["encoder_width"]
    assert len(model.text_bert.encoder.layer) == text["num_hidden_layers"]
    proj = torch.load(fixture_dir / "cell_proj.bin", weights_only=True)
    assert model.config.embed_dim == proj["weight"].shape[0]
    assert not model.training
    assert model.temp.item() == pytest.approx(OFFICIAL_TEMPERATURE)
    texts = _unpadded_texts(_array(fixture_dir, "inputs/text_input_ids.npy"),
                            _array(fixture_dir, "inputs/text_attention_mask.npy"))
    with torch.no_grad():
        embedding = F.normalize(model.text_proj(model.encode_texts(texts[0], torch.ones_like(texts[0]))[0]), dim=-1)
    torch.testing.assert_close(embedding[0], _array(fixture_dir, "expected/text_embedding.npy")[0], **TOL)
