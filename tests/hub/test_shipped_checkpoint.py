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
    assert model.config.cell_pooling == "mean" and model.config.cell["num_hidden_layers"] == 2
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
