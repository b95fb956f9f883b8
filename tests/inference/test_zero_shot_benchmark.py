"""The zero-shot speed benchmark on the tiny model: exact mode equals the official loop, the
headline ratio is against the official algorithm with equal settings (SDPA), the released eager
attention is its own row, the class-count and cell-count tables hold what was asked, the bf16
autocast rows (main table and real cells) agree with a direct recomputation, and the real cells
are never-seen ones."""

import argparse

import numpy as np
import pytest
import torch

from benchmarks.zero_shot_benchmark import (
    BF16,
    OFFICIAL,
    OFFICIAL_EAGER,
    autocast,
    bf16_autocast,
    build_inputs,
    first_classes,
    main,
    official_per_class,
    ours,
)
from lightning_langcell.errors import LangCellInputError

REAL_CELLS = 40
REAL_DATA = "data/cells/garnett_pbmc_facs.h5ad"  # never seen in pre-training


@pytest.fixture(scope="module")
def results(repo_root):
    return main(["--quick", "--cells", "2", "--genes", "40", "--classes", "4", "--ks", "1,2", "--threads", "1",
                 "--scaling", "1,2", "--class-scaling", "2,3", "--class-scaling-k", "2", "--bf16",
                 "--real-data", str(repo_root / REAL_DATA), "--real-cells", str(REAL_CELLS),
                 "--real-model", str(repo_root / "tests/data/langcell-official-tiny")])


def test_exact_and_full_top_k_match_the_official_loop(results):
    cases = {row["case"]: row for row in results["cases"]}
    assert cases["ours exact"]["agreement"] == 1.0 and cases["ours exact"]["max_abs_diff"] < 1e-5
    assert cases[OFFICIAL]["speedup_cpu"] == 1.0
    for row in results["cases"]:
        assert row["peak_mib"] > 0
        assert row["speedup_cpu"] == pytest.approx(cases[OFFICIAL]["cpu_s"] / row["cpu_s"])
        assert row["speedup_wall"] == pytest.approx(cases[OFFICIAL]["wall_s"] / row["wall_s"])


def test_headline_baseline_has_our_attention_and_eager_is_its_own_row(results):
    """Every "x official" ratio divides by the SDPA baseline; the released eager attention is a
    separate row whose gain (eager time / SDPA time) is reported on its own."""
    cases = {row["case"]: row for row in results["cases"]}
    assert results["baseline"]["case"] == OFFICIAL and results["baseline"]["attention"] == "sdpa"
    assert cases[OFFICIAL]["attention"] == "sdpa" and cases[OFFICIAL_EAGER]["attention"] == "eager"
    assert {row["attention"] for name, row in cases.items() if name != OFFICIAL_EAGER} == {"sdpa"}
    eager, sdpa = cases[OFFICIAL_EAGER], cases[OFFICIAL]
    assert results["sdpa_gain"]["wall"] == pytest.approx(eager["wall_s"] / sdpa["wall_s"])
    assert results["sdpa_gain"]["cpu"] == pytest.approx(eager["cpu_s"] / sdpa["cpu_s"])
    assert eager["speedup_wall"] == pytest.approx(1 / results["sdpa_gain"]["wall"])
    assert eager["agreement"] == 1.0 and eager["max_abs_diff"] < 1e-5  # same algorithm, same numbers


def test_official_baseline_runs_with_the_requested_attention(monkeypatch):
    """The baseline really switches the attention it is given, and restores SDPA afterwards."""
    settings = argparse.Namespace(seed=0, quick=True, classes=2, class_scaling=[], cells=1, scaling=[], genes=10)
    model, encoded, cells = build_inputs(settings)
    seen = []
    attention = type(model.text_bert.encoder.layer[0].attention.self)
    original = attention.attend
    monkeypatch.setattr(attention, "attend", lambda self, *a: seen.append(self.implementation) or original(self, *a))
    with torch.inference_mode():
        official_per_class(model, first_classes(encoded, 2), cells[:1], "eager")
        assert set(seen) == {"eager"}
        seen.clear()
        official_per_class(model, first_classes(encoded, 2), cells[:1])
    assert set(seen) == {"sdpa"}
    assert {module.implementation for module in model.modules() if hasattr(module, "implementation")} == {"sdpa"}


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
        assert row["dataset"] == "garnett_pbmc_facs" and row["cells"] == REAL_CELLS
        assert row["cells_from"] == "never seen in pre-training"
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

    adata = anndata.read_h5ad(repo_root / REAL_DATA)
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


@pytest.mark.parametrize("seen", ["pbmc68k_reduced", "zeisel_mouse_brain"])
def test_cells_seen_in_pretraining_are_refused(seen):
    """No agreement or accuracy figure on cells the shipped checkpoint trained on."""
    with pytest.raises(LangCellInputError, match="pre-trained on"):
        main(["--quick", "--real-data", f"data/cells/{seen}.h5ad"])
