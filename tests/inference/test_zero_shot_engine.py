"""The scoring engine: official parity, fused matcher == per-class official loop, top-k semantics."""

import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.zero_shot import (
    ZeroShotScorer,
    encode_class_texts,
    fused_match_logits,
    per_class_match_logits,
    top_k_candidates,
)
from lightning_langcell.models import LangCellConfig, LangCellModel
from lightning_langcell.models.text_encoder import PackedLayout


def text_prefix(model, input_ids, attention_mask):
    return model.text_bert.text_prefix(input_ids, attention_mask)

TOL = dict(atol=1e-5, rtol=1e-5)


def test_exact_mode_matches_official_fixture(official):
    model, inputs, expected, classes = official
    out = ZeroShotScorer(model, classes)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    torch.testing.assert_close(out.final_probs, expected["final_probs"], **TOL)
    torch.testing.assert_close(out.ctc_probs, expected["ctc_probs"], **TOL)
    torch.testing.assert_close(out.match_prob, expected["ctm_match_prob"], **TOL)
    torch.testing.assert_close(out.ctm_probs, expected["ctm_probs"], **TOL)
    torch.testing.assert_close(out.cell_embedding, expected["cell_embedding"], **TOL)
    assert out.pred.tolist() == expected["pred"].tolist() == [3, 2, 2, 2, 2, 2]


def test_top_k_equal_to_class_count_is_exact(official):
    model, inputs, _, classes = official
    exact = ZeroShotScorer(model, classes)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    full = ZeroShotScorer(model, classes, top_k=len(classes))(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    assert torch.equal(full.final_probs, exact.final_probs)
    assert torch.equal(full.pred, exact.pred)
    larger = ZeroShotScorer(model, classes, top_k=99)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    assert torch.equal(larger.final_probs, exact.final_probs)


def test_top_k_reranks_only_the_best_ctc_classes(official):
    model, inputs, _, classes = official
    exact = ZeroShotScorer(model, classes)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    out = ZeroShotScorer(model, classes, top_k=2)(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    candidates = exact.ctc_probs.topk(2, dim=-1).indices.sort(dim=-1).values
    assert torch.equal(out.candidates, candidates)
    outside = torch.ones_like(out.ctm_probs, dtype=torch.bool).scatter_(1, candidates, False)
    assert torch.isnan(out.match_prob[outside]).all()
    # the matcher's probabilities of the candidates are the exact ones; the class softmax runs over
    # all 4 classes, the 2 unscored ones standing in with the candidates' mean exp(match)
    inside_match = exact.match_prob.gather(1, candidates)
    torch.testing.assert_close(out.match_prob.gather(1, candidates), inside_match, **TOL)
    weight = inside_match.exp()
    total = weight.sum(-1, keepdim=True) + 2 * weight.mean(-1, keepdim=True)
    torch.testing.assert_close(out.ctm_probs.gather(1, candidates), weight / total, **TOL)
    stand_in = weight.mean(-1, keepdim=True) / total
    torch.testing.assert_close(out.ctm_probs[outside].view(6, 2), stand_in.expand(6, 2), **TOL)
    torch.testing.assert_close(out.final_probs, 0.1 * exact.ctc_probs + 0.9 * out.ctm_probs, **TOL)
    torch.testing.assert_close(out.final_probs.sum(-1), torch.ones(6), **TOL)
    assert all(int(p) in c.tolist() for p, c in zip(out.pred, candidates))
    assert torch.equal(out.pred, candidates.gather(1, out.final_probs.gather(1, candidates).argmax(1, keepdim=True))[:, 0])


def test_alpha_one_skips_the_matcher(official, monkeypatch):
    model, inputs, expected, classes = official
    scorer = ZeroShotScorer(model, classes, alpha=1.0)
    monkeypatch.setattr(model, "precompute_cross_kv", lambda *a: pytest.fail("matcher ran"))
    out = scorer(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    torch.testing.assert_close(out.final_probs, expected["ctc_probs"], **TOL)
    assert out.candidates is None and torch.all(out.ctm_probs == 0)


def _random_model(layers: int, seed: int) -> LangCellModel:
    config = LangCellConfig.preset(
        "tiny", cell={"num_hidden_layers": 2, "hidden_size": 32, "intermediate_size": 48},
        text={"num_hidden_layers": layers, "vocab_size": 300, "hidden_size": 48, "intermediate_size": 64,
              "num_attention_heads": 4})
    model = LangCellModel(config).eval()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # every tensor random (LayerNorms, biases too) so no default hides a bug
        for name, parameter in model.named_parameters():
            centre = 1.0 if name.endswith("LayerNorm.weight") else 0.0
            parameter.copy_(centre + 0.3 * torch.randn(parameter.shape, generator=generator))
    return model


def _padded(lengths, vocab, low, generator, first=None):
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, length in enumerate(lengths):
        ids[row, :length] = torch.randint(low, vocab, (length,), generator=generator)
        if first is not None:
            ids[row, 0] = first
        mask[row, :length] = 1
    return ids, mask


@pytest.fixture(params=[None, 16], ids=["ffn-whole", "ffn-chunked"])
def ffn_chunk(request, monkeypatch):
    """Run a test with the packed pass's FFN whole and split into chunks of 16 intermediate
    columns (4 chunks)."""
    from lightning_langcell.models import text_encoder

    if request.param is not None:
        monkeypatch.setattr(text_encoder, "FFN_CHUNK", request.param)
    yield request.param


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_cached_kv_fused_pass_equals_per_class_official_loop(layers, ffn_chunk):
    generator = torch.Generator().manual_seed(layers)
    model = _random_model(layers, seed=layers)
    cell_ids, cell_mask = _padded([9, 30, 17, 4], 25426, 2, generator, first=25426)
    text_ids, text_mask = _padded([5, 12, 3, 8, 12], 300, 5, generator, first=2)
    with torch.no_grad():
        hidden, _ = model.encode_cells(cell_ids, cell_mask)
        reference = per_class_match_logits(model, text_ids, text_mask, hidden, cell_mask)  # [4, 5, 2]
        prefix = text_prefix(model, text_ids, text_mask)
        cross_kv = model.precompute_cross_kv(hidden)
        everything = torch.arange(5).expand(4, -1)
        fused = fused_match_logits(model, prefix, cross_kv, cell_mask, everything)
        torch.testing.assert_close(fused, reference, **TOL)
        # ragged candidate sets (different packed widths per cell)
        candidates = torch.tensor([[0, 1], [1, 3], [2, 4], [0, 4]])
        fused = fused_match_logits(model, prefix, cross_kv, cell_mask, candidates)
        torch.testing.assert_close(fused, reference.gather(1, candidates[..., None].expand(-1, -1, 2)), **TOL)


@pytest.mark.parametrize("layers", [1, 3])
def test_packed_class_text_encoding_equals_one_text_at_a_time(layers, ffn_chunk):
    generator = torch.Generator().manual_seed(20 + layers)
    model = _random_model(layers, seed=20 + layers)
    text_ids, text_mask = _padded([5, 12, 3, 8, 1], 300, 5, generator, first=2)
    classes = encode_class_texts(model, text_ids, text_mask)
    with torch.no_grad():
        alone = torch.cat([model.encode_texts(row[: int(m.sum())][None], None)[1] for row, m in zip(text_ids, text_mask)])
        padded = model.encode_texts(text_ids, text_mask)[1]
    torch.testing.assert_close(classes.embedding, alone, **TOL)
    torch.testing.assert_close(classes.embedding, padded, **TOL)
    assert classes.embedding.norm(dim=-1).sub(1).abs().max() < 1e-5
    assert classes.prefix is not None and classes.prefix.lengths.tolist() == [5, 12, 3, 8, 1]
    # the prefix kept for the matcher is the one the scorer would compute
    torch.testing.assert_close(classes.prefix.hidden, text_prefix(model, text_ids, text_mask).hidden, **TOL)


def test_uniform_and_ragged_layouts_give_the_same_logits(ffn_chunk):
    """Every cell with the same classes (sliced per-text attention, shared first query) and the
    padded path for differing candidates give the same numbers for the same pairs."""
    generator = torch.Generator().manual_seed(5)
    model = _random_model(3, seed=5)
    cell_ids, cell_mask = _padded([9, 30, 17], 25426, 2, generator, first=25426)
    text_ids, text_mask = _padded([5, 12, 3, 8], 300, 5, generator, first=2)
    with torch.no_grad():
        hidden, _ = model.encode_cells(cell_ids, cell_mask)
        prefix, cross_kv = text_prefix(model, text_ids, text_mask), model.precompute_cross_kv(hidden)
        same = torch.tensor([[3, 0, 2]] * 3)
        ragged = torch.tensor([[3, 0, 2], [3, 0, 1], [3, 0, 2]])
        assert PackedLayout.of(prefix, same).segments == ((0, 8), (8, 5), (13, 3))
        assert PackedLayout.of(prefix, ragged).segments is None
        uniform = fused_match_logits(model, prefix, cross_kv, cell_mask, same)
        padded = fused_match_logits(model, prefix, cross_kv, cell_mask, ragged)
        reference = per_class_match_logits(model, text_ids, text_mask, hidden, cell_mask)
    torch.testing.assert_close(uniform, reference[:, [3, 0, 2]], **TOL)
    torch.testing.assert_close(padded[[0, 2]], uniform[[0, 2]], **TOL)
    torch.testing.assert_close(padded[1], reference[1, [3, 0, 1]], **TOL)


def test_class_chunks_give_the_same_scores():
    generator = torch.Generator().manual_seed(7)
    model = _random_model(2, seed=7)
    cell_ids, cell_mask = _padded([9, 30, 17], 25426, 2, generator, first=25426)
    text_ids, text_mask = _padded([5, 12, 3, 8, 12], 300, 5, generator, first=2)
    classes = encode_class_texts(model, text_ids, text_mask)
    whole = ZeroShotScorer(model, classes)(cell_ids, cell_mask)
    chunked = ZeroShotScorer(model, classes, class_chunk_size=2)(cell_ids, cell_mask)
    torch.testing.assert_close(chunked.final_probs, whole.final_probs, **TOL)
    assert torch.equal(chunked.pred, whole.pred)


def test_top_k_candidates_are_sorted_class_indices():
    probs = torch.tensor([[0.1, 0.5, 0.15, 0.25], [0.4, 0.3, 0.2, 0.1]])
    assert top_k_candidates(probs, 2).tolist() == [[1, 3], [0, 1]]
    assert top_k_candidates(probs, 9).tolist() == [[0, 1, 2, 3]] * 2


@pytest.mark.parametrize("kwargs", [{"alpha": 1.5}, {"top_k": 0}, {"temperature": 0.0}, {"class_chunk_size": 0}])
def test_bad_scorer_settings_are_refused(official, kwargs):
    model, _, _, classes = official
    with pytest.raises(LangCellInputError):
        ZeroShotScorer(model, classes, **kwargs)


def test_top_1_needs_no_matcher_pass(official, monkeypatch):
    model, inputs, expected, classes = official
    scorer = ZeroShotScorer(model, classes, top_k=1)
    monkeypatch.setattr(model, "precompute_cross_kv", lambda *a: pytest.fail("matcher ran"))
    out = scorer(inputs["cell_input_ids"], inputs["cell_attention_mask"])
    best = expected["ctc_probs"].argmax(-1)
    torch.testing.assert_close(out.ctm_probs, torch.full_like(out.ctm_probs, 0.25), **TOL)  # 1/C everywhere
    torch.testing.assert_close(out.final_probs, 0.1 * expected["ctc_probs"] + 0.9 * 0.25, **TOL)
    assert torch.equal(out.pred, best) and torch.isnan(out.match_prob).all()


def test_unpadded_cells_take_the_maskless_path_with_the_same_scores():
    generator = torch.Generator().manual_seed(11)
    model = _random_model(2, seed=11)
    cell_ids, cell_mask = _padded([20, 20, 20], 25426, 2, generator, first=25426)
    text_ids, text_mask = _padded([5, 12, 3], 300, 5, generator, first=2)
    with torch.no_grad():
        hidden, _ = model.encode_cells(cell_ids, cell_mask)
        reference = per_class_match_logits(model, text_ids, text_mask, hidden, cell_mask)
        fused = fused_match_logits(model, text_prefix(model, text_ids, text_mask), model.precompute_cross_kv(hidden),
                                   cell_mask, torch.arange(3).expand(3, -1))
    torch.testing.assert_close(fused, reference, **TOL)


def test_candidate_argmax_and_fp32_scores():
    from lightning_langcell.inference.zero_shot import at_least_fp32, candidate_argmax

    final = torch.tensor([[0.5, 0.2, 0.3], [0.1, 0.6, 0.3]])
    candidates = torch.tensor([[1, 2], [0, 2]])  # the overall best (0, then 1) is not a candidate
    assert candidate_argmax(final, candidates).tolist() == [2, 2]
    assert at_least_fp32(torch.ones(2, dtype=torch.bfloat16)).dtype == torch.float32
    assert at_least_fp32(torch.ones(2, dtype=torch.float64)).dtype == torch.float64
