"""The zero-shot speed benchmark on the tiny model: exact mode equals the official loop, the
class-count and cell-count tables hold what was asked, and the bf16 autocast rows (main table and
real cells) agree with a direct recomputation."""

import argparse

import numpy as np
import pytest
import torch

from benchmarks.zero_shot_benchmark import BF16, autocast, bf16_autocast, build_inputs, first_classes, main, ours

REAL_CELLS = 40


@pytest.fixture(scope="module")
def results(repo_root):
    return main(["--quick", "--cells", "2", "--genes", "40", "--classes", "4", "--ks", "1,2", "--threads", "1",
                 "--scaling", "1,2", "--class-scaling", "2,3", "--class-scaling-k", "2", "--bf16",
                 "--real-data", str(repo_root / "data/cells/pbmc68k_reduced.h5ad"), "--real-cells", str(REAL_CELLS),
                 "--real-model", str(repo_root / "tests/data/langcell-official-tiny")])


def test_exact_and_full_top_k_match_the_official_loop(results):
    cases = {row["case"]: row for row in results["cases"]}
    assert cases["ours exact"]["agreement"] == 1.0 and cases["ours exact"]["max_abs_diff"] < 1e-5
    assert cases["official (per class)"]["speedup_cpu"] == 1.0
    for row in results["cases"]:
        assert row["peak_mib"] > 0
        assert row["speedup_cpu"] == pytest.approx(cases["official (per class)"]["cpu_s"] / row["cpu_s"])


def test_scaling_tables(results):
    assert [row["cells"] for row in results["scaling"]] == [1, 2]
    assert sorted((row["case"], row["classes"]) for row in results["class_scaling"]) == [
        ("official", 2), ("official", 3), ("ours exact", 2), ("ours exact", 3), ("ours top-2", 3)]
    assert all(row["cpu_s"] > 0 and row["cells"] == 2 for row in results["class_scaling"])


def test_bf16_rows_and_their_agreement_fields(results):
    cases = {row["case"]: row for row in results["cases"]}
    bf16 = {name for name, row in cases.items() if row["precision"] == "bf16"}
    assert bf16 == {"ours exact" + BF16, "ours top-1" + BF16, "ours top-2" + BF16, "cell encoder only" + BF16}
    official, exact = cases["official (per class)"]["predictions"], cases["ours exact"]["predictions"]
    for name, row in cases.items():
        if name.startswith("cell encoder only"):
            assert "agreement" not in row
            continue
        assert row["agreement"] == np.mean(np.equal(row["predictions"], official))
        assert row["agreement_exact"] == np.mean(np.equal(row["predictions"], exact))
        assert 0.0 <= row["agreement"] <= 1.0 and 0.0 <= row["agreement_exact"] <= 1.0
    for name in bf16:
        fp32 = cases[name.removesuffix(BF16) + (" (SDPA)" if name.startswith("cell encoder") else "")]
        assert cases[name]["speedup_vs_fp32"] == pytest.approx(fp32["wall_s"] / cases[name]["wall_s"])
        assert fp32["precision"] == "32" and fp32["speedup_vs_fp32"] is None


def test_bf16_exact_probabilities_recomputed(results):
    """bf16 autocast exact mode: fp32 scores within 0.01 of fp32 mode, same numbers as the row."""
    settings = argparse.Namespace(seed=0, quick=True, classes=4, class_scaling=[2, 3], cells=2, scaling=[1, 2],
                                  genes=40)
    model, encoded, cells = build_inputs(settings)
    encoded, cells = first_classes(encoded, 4), cells[:2]
    with torch.inference_mode():
        fp32, reduced = ours(model, encoded, cells), bf16_autocast(ours)(model, encoded, cells)
    assert reduced.dtype == torch.float32  # the scorer keeps its scores in fp32 under autocast
    assert torch.allclose(reduced.sum(1), torch.ones(2)) and (reduced - fp32).abs().max() < 0.01
    row = next(row for row in results["cases"] if row["case"] == "ours exact" + BF16)
    assert row["predictions"] == reduced.argmax(1).tolist()
    official = next(row for row in results["cases"] if row["case"] == "official (per class)")
    assert row["max_abs_diff"] == pytest.approx(float((reduced - fp32).abs().max()), abs=2e-5)
    assert row["agreement"] == np.mean(np.equal(row["predictions"], official["predictions"]))


def test_real_cells_bf16_rows(results, repo_root):
    rows = results["real_cells"]
    n_classes = max(row["k"] for row in rows)
    assert [(row["precision"], row["k"]) for row in rows] == [
        (precision, k) for precision in ("32", "bf16") for k in [n_classes, *range(1, n_classes)]]
    for row in rows:
        assert row["dataset"] == "pbmc68k_reduced" and row["cells"] == REAL_CELLS
        for key in ("agreement", "accuracy", "agreement_fp32_same_k"):
            assert 0.0 <= row[key] <= 1.0
        if row["precision"] == "32":
            assert row["agreement_fp32_same_k"] == 1.0 and row["max_abs_diff_fp32_same_k"] == 0.0
    exact = {row["precision"]: row for row in rows if row["k"] == n_classes}
    assert exact["32"]["agreement"] == 1.0 and exact["bf16"]["max_abs_diff_fp32_same_k"] < 0.01
    assert exact["bf16"]["agreement"] == exact["bf16"]["agreement_fp32_same_k"]
    # direct recomputation of the bf16 exact row
    import anndata

    from lightning_langcell.inference.annotate import build_scorer, load_zero_shot_model, score_cells, tokenize_cells
    from lightning_langcell.inference.classes import candidate_classes, obs_labels, truth_indices
    from lightning_langcell.tokenization import CellTokenizer

    adata = anndata.read_h5ad(repo_root / "data/cells/pbmc68k_reduced.h5ad")
    adata = adata[np.linspace(0, adata.n_obs - 1, REAL_CELLS).astype(int)].copy()
    model, text_tokenizer, _ = load_zero_shot_model(str(repo_root / "tests/data/langcell-official-tiny"))
    classes = candidate_classes(None, adata.obs, "cell_type")
    _, tokens = tokenize_cells(adata, CellTokenizer(max_genes=2047))
    probabilities = {}
    for precision in ("32", "bf16"):
        with torch.inference_mode(), autocast(precision, torch.device("cpu")):
            scorer = build_scorer(model, classes, text_tokenizer, torch.device("cpu"))
            probabilities[precision] = score_cells(scorer, tokens, 32, 2048, torch.device("cpu"))[0]
    predictions = probabilities["bf16"].argmax(1)
    assert len(classes) == n_classes
    assert exact["bf16"]["agreement"] == np.mean(predictions == probabilities["32"].argmax(1))
    assert exact["bf16"]["accuracy"] == np.mean(predictions == truth_indices(obs_labels(adata.obs, "cell_type"),
                                                                              classes))
    assert exact["bf16"]["max_abs_diff_fp32_same_k"] == pytest.approx(
        float(np.abs(probabilities["bf16"] - probabilities["32"]).max()), abs=1e-6)


@pytest.mark.parametrize("memory, retained", [("default", False), ("retained", True)])
def test_memory_option_scopes_every_timing(monkeypatch, memory, retained):
    """``--memory retained`` runs every case (the official one too) inside one retained-memory scope."""
    from benchmarks import zero_shot_benchmark
    from lightning_langcell.inference.cpu_memory import retaining_active, retaining_supported

    monkeypatch.setattr(zero_shot_benchmark, "run", lambda args: {"retained": retaining_active()})
    assert main(["--quick", "--memory", memory]) == {"retained": retained and retaining_supported()}
    assert not retaining_active()
