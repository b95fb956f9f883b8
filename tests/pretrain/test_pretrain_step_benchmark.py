"""The pre-training step benchmark: ours against transformers' BertForMaskedLM (SDPA, length-grouped,
padded to the batch maximum, full gene head) at two model sizes, the pad-to-2048 eager context row,
the same-batch loss check and the length scaling."""

from __future__ import annotations

import pytest
import torch

from benchmarks.pretrain_step_benchmark import (
    HuggingFaceStep,
    OursStep,
    cell_config,
    main,
    parse_lengths,
    parse_sizes,
    tensors,
)
from lightning_langcell.models.config import PRESETS

TINY = ["--sizes", "tiny,custom", "--context-sizes", "tiny", "--layers", "1", "--hidden", "32", "--heads", "2",
        "--cells", "2", "--batch-size", "1", "--warmup", "0", "--threads", "1", "--gemm-size", "128",
        "--scaling-steps", "1"]


@pytest.fixture(scope="module")
def result():
    return main(TINY + ["--lengths", "64,128"])


def test_rows_ratio_against_the_fair_baseline_at_each_size(result):
    rows = {(row["size"], row["case"]): row for row in result["rows"]}
    assert list(rows) == [("tiny", "ours"), ("tiny", "ours_packed"), ("tiny", "hf_sdpa_grouped"),
                          ("tiny", "hf_eager_pad2048"), ("custom", "ours"), ("custom", "ours_packed"),
                          ("custom", "hf_sdpa_grouped")]
    assert result["cases"] is result["rows"]  # the key benchmarks.run reads
    assert rows[("tiny", "hf_eager_pad2048")]["role"].startswith("context")
    assert rows[("tiny", "hf_sdpa_grouped")]["role"] == "headline baseline"
    for (size, case), row in rows.items():
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] > 0
        assert row["peak_mib"] > 0 and row["peak_source"] == "process_vmhwm"
        assert row["ratio"] == pytest.approx(row["tokens_per_s"] / rows[(size, "hf_sdpa_grouped")]["tokens_per_s"])
    for size in ("tiny", "custom"):
        assert rows[(size, "hf_sdpa_grouped")]["ratio"] == 1.0
        assert result["headline"][size] == rows[(size, "ours")]["ratio"]
        assert result["packed"][size] == rows[(size, "ours_packed")]["ratio"]
        assert rows[(size, "ours_packed")]["ratio_vs_ours"] == pytest.approx(
            rows[(size, "ours_packed")]["tokens_per_s"] / rows[(size, "ours")]["tokens_per_s"])
    assert set(result["context"]) == {"tiny"}
    assert result["context"]["tiny"] == pytest.approx(
        rows[("tiny", "ours")]["tokens_per_s"] / rows[("tiny", "hf_eager_pad2048")]["tokens_per_s"])
    # padding every cell to 2048 costs the context row more memory than ours
    assert rows[("tiny", "hf_eager_pad2048")]["peak_mib"] > rows[("tiny", "ours")]["peak_mib"]


def test_both_sides_compute_the_same_loss_on_the_same_batch(result):
    for size, check in result["loss_check"].items():
        assert check["ours"] > 5.0  # ~ln(25,427) for a fresh gene head
        assert check["ours"] == pytest.approx(check["baseline"], rel=1e-5), size
        assert check["ours_packed"] == pytest.approx(check["ours"], rel=1e-5), size


def test_same_weights_give_the_same_gradients():
    torch.manual_seed(0)
    cell = {**PRESETS["tiny"]["cell"], "num_hidden_layers": 1, "hidden_size": 32, "num_attention_heads": 2,
            "intermediate_size": 64}
    ours = OursStep(cell, torch.device("cpu"))
    baseline = HuggingFaceStep(ours, "sdpa", torch.device("cpu"))
    cells = [torch.arange(2, 2 + n).numpy() * 7 for n in (30, 50, 41)]
    ids, mask, masked_ids, labels = tensors(cells, [0, 1, 2], None, 0, torch.device("cpu"))
    assert ids.shape == (3, 51)  # padded to the batch maximum (CLS + 50 genes)
    ours.train(False)
    baseline.train(False)
    ours.loss(*ours.prepare(ids, mask, masked_ids, labels)).backward()
    baseline.loss(ids, mask, masked_ids, labels).backward()
    ours_grad = ours.model.cell_bert.embeddings.word_embeddings.weight.grad
    baseline_grad = baseline.model.bert.embeddings.word_embeddings.weight.grad
    assert ours_grad.abs().sum() > 0
    torch.testing.assert_close(ours_grad, baseline_grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(ours.model.mgm_head.bias.grad, baseline.model.cls.predictions.bias.grad,
                               rtol=1e-4, atol=1e-7)


def test_length_scaling_times_ours_and_the_fair_baseline_per_length(result):
    scaling = {(row["case"], row["length"]): row for row in result["scaling"]}
    assert sorted(scaling) == [("hf_sdpa_grouped", 64), ("hf_sdpa_grouped", 128), ("ours", 64), ("ours", 128)]
    for (case, length), row in scaling.items():
        assert row["ratio"] == pytest.approx(scaling[("hf_sdpa_grouped", length)]["step_ms"] / row["step_ms"])
        # every cell has exactly `length` real tokens: tokens/s x step time = batch (1) x length
        assert row["tokens_per_s"] * row["step_ms"] / 1000 == pytest.approx(length, rel=0.05)
    assert scaling[("hf_sdpa_grouped", 64)]["ratio"] == 1.0


def test_official_size_is_the_released_cell_encoder_and_arguments_are_validated():
    official = cell_config("official", None)
    assert (official["num_hidden_layers"], official["hidden_size"], official["num_attention_heads"],
            official["intermediate_size"], official["vocab_size"]) == (12, 512, 8, 1024, 25427)
    assert parse_lengths("") == [] and parse_lengths("64, 128") == [64, 128]
    assert parse_sizes("tiny, official") == ["tiny", "official"]
    with pytest.raises(SystemExit):
        main(TINY + ["--lengths", "4096"])
    with pytest.raises(SystemExit):
        main(TINY + ["--sizes", "huge"])
