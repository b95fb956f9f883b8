"""Cell ↔ text retrieval: recall@k / precision@k against a brute-force ranking and hand-counted
values; chunking does not change the numbers; texts embed like zero-shot class texts."""

import numpy as np
import pytest
import torch

from lightning_langcell.errors import LangCellInputError
from lightning_langcell.inference.retrieval import embed_texts, retrieval_metrics


def _brute_force(cells, texts, truth, ks):
    cells = cells / np.linalg.norm(cells, axis=1, keepdims=True)
    texts = texts / np.linalg.norm(texts, axis=1, keepdims=True)
    keep = truth >= 0
    cells, truth = cells[keep], truth[keep]
    sim = cells @ texts.T  # [N, T]
    out = {}
    for k in ks:
        ranks = np.argsort(-sim, axis=1)[:, :k]
        out[f"cell_to_text_recall_at_{k}"] = np.mean([truth[i] in ranks[i] for i in range(len(cells))])
        recalls, precisions = [], []
        for t in np.unique(truth):
            top = np.argsort(-sim[:, t])[: min(k, len(cells))]
            recalls.append((truth[top] == t).any())
            precisions.append((truth[top] == t).mean())
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
    assert got["cell_to_text_recall_at_500"] == 1.0  # k capped at T
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
    assert got["cell_to_text_recall_at_2"] == 1.0
    # text 0 ranks cells 0, 3, 1, 2; text 1 ranks cells 2, 1, 3, 0
    assert got["text_to_cell_recall_at_1"] == 1.0
    assert got["text_to_cell_precision_at_1"] == 1.0
    assert got["text_to_cell_precision_at_2"] == 1.0
    got = retrieval_metrics(cells, texts, [1, 1, 1, 0], ks=(1, 2))  # text 0 owns only cell 3
    assert got["text_to_cell_recall_at_1"] == 0.5  # text 0's best cell is cell 0 (a text-1 cell)
    assert got["text_to_cell_recall_at_2"] == 1.0
    assert got["text_to_cell_precision_at_2"] == pytest.approx((0.5 + 1.0) / 2)


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
