"""Cell ↔ text retrieval: recall@k / precision@k against a brute-force ranking and hand-counted
values; ties count in expectation (a collapsed encoder scores chance, duplicate texts are merged);
chunking does not change the numbers; texts embed like zero-shot class texts."""

from math import comb

import numpy as np
import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.retrieval import deduplicate_texts, embed_texts, retrieval_metrics


def _brute_force(cells, texts, truth, ks):
    cells = cells / np.linalg.norm(cells, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    keep = truth >= 0
    cells, truth = cells[keep], truth[keep]
    sim = cells @ texts.T  # [N, T]
    out = {}
    for k in ks:
        ranks = np.argsort(-sim, axis=1)[:, :k]
        if k < texts.shape[0]:  # k >= T: 1 by construction, not reported
            out[f"cell_to_text_recall_at_{k}"] = np.mean([truth[i] in ranks[i] for i in range(len(cells))])
        recalls, precisions = [], []
        for t in np.unique(truth):
            top = np.argsort(-sim[:, t])[: min(k, len(cells))]
            recalls.append((truth[top] == t).any())
            precisions.append((truth[top] == t).mean())
        if k < len(cells):  # k >= N: 1 by construction, not reported
            out[f"text_to_cell_recall_at_{k}"] = np.mean(recalls)
        out[f"text_to_cell_precision_at_{k}"] = np.mean(precisions)
    return out


@pytest.mark.parametrize("max_elements", [1 << 25, 7])
def test_retrieval_equals_brute_force(max_elements):
    rng = np.random.default_rng(0)
    texts = rng.normal(size=(12, 16))
    truth = rng.integers(0, 9, size=200)  # texts 9-11 have no cell: not queried text -> cell
    truth[:5] = -1  # cells without a text are ignored
    cells = texts[np.maximum(truth, 0)] + rng.normal(scale=1.5, size=(200, 16))
    got = retrieval_metrics(cells, texts, truth, ks=(1, 3, 5, 10, 500), max_elements=max_elements)
    expected = _brute_force(cells, texts, truth, (1, 3, 5, 10, 500))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-12), key
    assert got["retrieval_n_cells"] == 195 and got["retrieval_n_texts"] == 9
    assert "cell_to_text_recall_at_500" not in got and "cell_to_text_recall_at_10" in got  # 12 texts
    assert "text_to_cell_recall_at_500" not in got  # 195 cells
    assert 0 < got["cell_to_text_recall_at_1"] < got["cell_to_text_recall_at_5"] < 1
    # precision@500 = k capped at N: each text's share of the cells
    shares = np.bincount(truth[truth >= 0]) / 195
    assert got["text_to_cell_precision_at_500"] == pytest.approx(shares.mean())


def test_retrieval_hand_counted():
    texts = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cells = torch.tensor([[1.0, 0.1], [0.9, 0.5], [0.2, 1.0], [0.8, 0.3]])
    truth = [0, 1, 1, 0]  # cell 1 points nearer text 0 than text 1
    got = retrieval_metrics(cells, texts, truth, ks=(1, 2))
    assert got["cell_to_text_recall_at_1"] == 0.75
    assert "cell_to_text_recall_at_2" not in got  # 2 texts: recall@2 is 1 by construction
    # text 0 ranks cells 0, 3, 1, 2; text 1 ranks cells 2, 1, 3, 0
    assert got["text_to_cell_recall_at_1"] == 1.0
    assert got["text_to_cell_precision_at_1"] == 1.0
    assert got["text_to_cell_precision_at_2"] == 1.0
    got = retrieval_metrics(cells, texts, [1, 1, 1, 0], ks=(1, 2))  # text 0 owns only cell 3
    assert got["text_to_cell_recall_at_1"] == 0.5  # text 0's best cell is cell 0 (a text-1 cell)
    assert got["text_to_cell_recall_at_2"] == 1.0
    assert got["text_to_cell_precision_at_2"] == pytest.approx((0.5 + 1.0) / 2)


def _random_tie_breaking(cells, texts, truth, ks, trials=4000, seed=0):
    """Monte-Carlo recall@k / precision@k with ties broken by a fresh random order each trial."""
    rng = np.random.default_rng(seed)
    sim = cells @ texts.T
    sums = {}
    for _ in range(trials):
        jitter = sim + rng.random(sim.shape) * 1e-9  # below the score gaps, above nothing else
        got = _brute_force_similarity(jitter, truth, texts.shape[0], ks)
        for key, value in got.items():
            sums[key] = sums.get(key, 0.0) + value / trials
    return sums


def _brute_force_similarity(sim, truth, n_texts, ks):
    out = {}
    for k in ks:
        ranks = np.argsort(-sim, axis=1)[:, :k]
        out[f"cell_to_text_recall_at_{k}"] = np.mean([truth[i] in ranks[i] for i in range(len(truth))])
        tops = [truth[np.argsort(-sim[:, t])[:k]] == t for t in np.unique(truth)]
        out[f"text_to_cell_recall_at_{k}"] = np.mean([top.any() for top in tops])
        out[f"text_to_cell_precision_at_{k}"] = np.mean([top.mean() for top in tops])
    return out


def test_collapsed_encoder_scores_chance():
    """Every cell and text embeds to one vector: every score ties, so recall@k = k / T (not 1)."""
    n_cells, n_texts = 30, 6
    truth = np.arange(n_cells) % n_texts
    cells, texts = np.ones((n_cells, 4)), np.ones((n_texts, 4))
    got = retrieval_metrics(cells, texts, truth, ks=(1, 2, 5, 6, 10))
    assert got["cell_to_text_recall_at_1"] == pytest.approx(1 / 6)
    assert got["cell_to_text_recall_at_2"] == pytest.approx(2 / 6)
    assert got["cell_to_text_recall_at_5"] == pytest.approx(5 / 6)
    assert "cell_to_text_recall_at_6" not in got
    # text -> cell: each text owns 5 of 30 cells, drawn at random into the top k
    assert got["text_to_cell_precision_at_1"] == pytest.approx(5 / 30)
    assert got["text_to_cell_precision_at_10"] == pytest.approx(5 / 30)
    assert got["text_to_cell_recall_at_1"] == pytest.approx(5 / 30)
    assert got["text_to_cell_recall_at_5"] == pytest.approx(1 - comb(25, 5) / comb(30, 5))
    # tiny float noise below the tie tolerance is still a tie
    noisy = cells + np.random.default_rng(0).normal(scale=1e-9, size=cells.shape)
    assert retrieval_metrics(noisy, texts, truth, ks=(1,))["cell_to_text_recall_at_1"] == pytest.approx(1 / 6)


@pytest.mark.parametrize("max_elements", [1 << 25, 5])
def test_ties_count_in_expectation_under_random_tie_breaking(max_elements):
    rng = np.random.default_rng(3)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])  # texts 0 and 1 tie everywhere
    cells = rng.integers(0, 3, size=(24, 2)).astype(float) + np.array([0.0, 0.5])  # repeated points: cell ties
    truth = rng.integers(0, 4, size=24)
    ks = (1, 2, 3)
    got = retrieval_metrics(cells, texts, truth, ks=ks, max_elements=max_elements)
    unit = cells / np.linalg.norm(cells, axis=1, keepdims=True)
    expected = _random_tie_breaking(unit, texts / np.linalg.norm(texts, axis=1, keepdims=True), truth, ks)
    for key, value in got.items():
        if key.startswith(("cell_to", "text_to")):
            assert value == pytest.approx(expected[key], abs=0.02), key


def test_duplicate_texts_are_merged_before_scoring():
    texts = ["cell type: B cell; ", "cell type: T cell; ", "cell type: B cell; ", "cell type: NK cell; "]
    text_of_cell = np.array([0, 2, 1, 3, -1, 2])
    distinct, index = deduplicate_texts(texts, text_of_cell)
    assert distinct == ["cell type: B cell; ", "cell type: T cell; ", "cell type: NK cell; "]
    assert index.tolist() == [0, 0, 1, 2, -1, 0]
    # a perfect encoder: each cell embeds onto its text. Duplicates tie with their twin (1/2 each)
    vectors = {"cell type: B cell; ": [1.0, 0, 0], "cell type: T cell; ": [0, 1.0, 0], "cell type: NK cell; ": [0, 0, 1.0]}
    cells = np.array([vectors[texts[t]] if t >= 0 else [1.0, 1, 1] for t in text_of_cell])
    raw = retrieval_metrics(cells, np.array([vectors[t] for t in texts]), text_of_cell, ks=(1,))
    assert raw["cell_to_text_recall_at_1"] == pytest.approx((0.5 + 0.5 + 1 + 1 + 0.5) / 5)
    merged = retrieval_metrics(cells, np.array([vectors[t] for t in distinct]), index, ks=(1,))
    assert merged["cell_to_text_recall_at_1"] == 1.0 and merged["retrieval_n_texts"] == 3


def test_retrieval_bad_inputs():
    texts, cells = np.eye(3), np.eye(3)
    with pytest.raises(LangCellInputError, match="do not match"):
        retrieval_metrics(cells[:, :2], texts, [0, 1, 2])
    with pytest.raises(LangCellInputError, match=r"indices in \[-1, 2\]"):
        retrieval_metrics(cells, texts, [0, 1, 3])
    with pytest.raises(LangCellInputError, match="No cell has a true text"):
        retrieval_metrics(cells, texts, [-1, -1, -1])


def test_embed_texts_equals_the_model_text_encoder(test_data_dir, single_torch_thread):
    from lightning_langcell.inference.annotate import load_zero_shot_model
    from lightning_langcell.text import tokenize_texts

    model, tokenizer, _ = load_zero_shot_model(str(test_data_dir / "langcell-official-tiny"))
    texts = ["cell type: B cell. A lymphocyte of B lineage; ", "cell type: T cell; ",
             "cell type: natural killer cell; "]
    with single_torch_thread():
        got = embed_texts(model, texts, tokenizer, batch_size=2)
        for text, row in zip(texts, got):
            encoded = tokenize_texts([text], tokenizer)
            _, expected = model.encode_texts(encoded["input_ids"], encoded["attention_mask"])
            torch.testing.assert_close(row, expected[0], atol=1e-5, rtol=0)
    assert got.shape == (3, model.config.embed_dim)
    torch.testing.assert_close(got.norm(dim=1), torch.ones(3), atol=1e-5, rtol=0)
