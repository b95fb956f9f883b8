"""The checkpoint we ship loads offline by name and reproduces its model card's held-out metrics."""

import json
import sys
from pathlib import Path

import anndata
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CHECKPOINT = REPO / "checkpoints" / "langcell-tiny-bundled"
sys.path.insert(0, str(REPO / "scripts"))

pytestmark = pytest.mark.skipif(not CHECKPOINT.is_dir(), reason="shipped checkpoint not in this checkout")


def test_loads_by_name_offline_with_verified_files():
    from lightning_langcell import load_model

    model = load_model("langcell-tiny-bundled")
    assert model.config.cell_pooling == "mean" and model.config.cell.num_hidden_layers == 2
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(2.5e6, rel=0.05)


def test_held_out_zero_shot_matches_the_model_card(tmp_path):
    from evaluate_shipped_checkpoint import evaluate, recipe_test_cells

    card = json.loads((CHECKPOINT / "metrics.json").read_text())["held_out_test_split"]["zeisel_mouse_brain"]
    rows = recipe_test_cells(REPO / "recipes" / "pretrain.yaml", str(tmp_path))
    source = next(s for s in rows if s.endswith("zeisel_mouse_brain.h5ad"))
    adata = anndata.read_h5ad(source)[np.sort(rows[source])].copy()
    assert adata.n_obs == card["cells"] == 55
    result = evaluate(str(CHECKPOINT), adata, [1.0])
    assert result["alpha=1.0"] == card["alpha=1.0"]
    assert result["alpha=1.0"]["accuracy"] > 0.6  # 11 balanced classes: chance is 0.09


def test_top_k_agrees_with_exact_mode_on_real_pbmcs():
    """Top-k keeps the exact mode's CTC/CTM balance (unscored classes stand in with the candidates'
    mean exp(match)): on 200 real PBMCs (10 classes) top-3 agrees with exact on >= 98% of cells,
    where a softmax over the k candidates alone would agree on fewer."""
    import torch

    from lightning_langcell.data.collate import pad_token_lists
    from lightning_langcell.inference.annotate import (_cell_tokenizer, build_scorer, load_zero_shot_model,
                                                       tokenize_cells)
    from lightning_langcell.inference.classes import candidate_classes
    from lightning_langcell.tokenization import CLS_ID

    adata = anndata.read_h5ad(REPO / "data" / "cells" / "pbmc68k_reduced.h5ad")
    adata = adata[np.linspace(0, adata.n_obs - 1, 200).astype(int)].copy()
    model, text_tokenizer, vocabulary = load_zero_shot_model(str(CHECKPOINT))
    classes = candidate_classes(None, adata.obs, "cell_type")
    _, tokens = tokenize_cells(adata, _cell_tokenizer(vocabulary, 2048, False))
    ids, mask = pad_token_lists(tokens, CLS_ID, 2048)
    exact = build_scorer(model, classes, text_tokenizer, torch.device("cpu"))(ids, mask)
    top3 = build_scorer(model, classes, text_tokenizer, torch.device("cpu"), top_k=3)(ids, mask)
    agreement = float((top3.pred == exact.pred).float().mean())
    # the same candidates with their class softmax taken over the 3 alone
    match = exact.match_prob.gather(1, top3.candidates)
    alone = 0.1 * exact.ctc_probs.gather(1, top3.candidates) + 0.9 * match.softmax(-1)
    alone_pred = top3.candidates.gather(1, alone.argmax(1, keepdim=True))[:, 0]
    alone_agreement = float((alone_pred == exact.pred).float().mean())
    print(f"top-3 agreement {agreement:.3f}, softmax over the 3 alone {alone_agreement:.3f}")
    assert agreement >= 0.98 and agreement > alone_agreement, (agreement, alone_agreement)
