"""The pre-training step benchmark: ours against transformers' BertForMaskedLM (SDPA, length-grouped,
padded to the batch maximum, full gene head) at two model sizes, the pad-to-2048 eager context row,
the same-batch loss check and the length scaling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks.pretrain_step_benchmark import (
    PADDED_LENGTH,
    HuggingFaceStep,
    OursPackedStep,
    OursStep,
    budget_batches,
    cell_config,
    main,
    parse_lengths,
    parse_sizes,
    real_cells,
    tensors,
)
from lightning_langcell.data.sampling import padding_efficiency
from lightning_langcell.models.config import PRESETS

TINY = ["--sizes", "tiny,custom", "--context-sizes", "tiny", "--layers", "1", "--hidden", "32", "--heads", "2",
        "--cells", "2", "--batch-size", "1", "--warmup", "0", "--threads", "1", "--gemm-size", "128",
        "--scaling-steps", "1", "--length-source", "synthetic"]


@pytest.fixture(scope="module")
def result():
    return main(TINY + ["--lengths", "64,128"])


def test_rows_ratio_against_the_fair_baseline_at_each_size(result):
    rows = {(row["size"], row["case"]): row for row in result["rows"]}
    packed = ["ours_packed", "ours_packed_budget", "ours_packed_no_attention_dropout"]
    assert list(rows) == [("tiny", "ours"), *(("tiny", case) for case in packed), ("tiny", "hf_sdpa_grouped"),
                          ("tiny", "hf_eager_pad2048"), ("custom", "ours"), *(("custom", case) for case in packed),
                          ("custom", "hf_sdpa_grouped")]
    assert "training change" in rows[("tiny", "ours_packed_no_attention_dropout")]["role"]
    assert result["cases"] is result["rows"]  # the key benchmarks.run reads
    assert rows[("tiny", "hf_eager_pad2048")]["role"].startswith("context")
    assert rows[("tiny", "hf_sdpa_grouped")]["role"] == "headline baseline"
    for (size, case), row in rows.items():
        assert row["step_ms"] > 0 and row["tokens_per_s"] > 0 and row["mfu"] > 0
        assert row["peak_mib"] > 0 and row["peak_source"] == "process_vmhwm"
        assert row["steps"] >= 1 and row["median_tokens_per_s"] > 0 and row["first_step_s"] > 0
        # packed rows compute only real tokens; a padded batch of one cell has no padding either
        if case != "hf_eager_pad2048":
            assert row["padding_efficiency"] == 1.0
        assert row["ratio"] == pytest.approx(row["tokens_per_s"] / rows[(size, "hf_sdpa_grouped")]["tokens_per_s"])
    for size in ("tiny", "custom"):
        assert rows[(size, "hf_sdpa_grouped")]["ratio"] == 1.0
        assert result["headline"][size] == rows[(size, "ours")]["ratio"]
        assert result["packed"][size] == rows[(size, "ours_packed")]["ratio"]
        assert rows[(size, "ours_packed")]["ratio_vs_ours"] == pytest.approx(
            rows[(size, "ours_packed")]["tokens_per_s"] / rows[(size, "ours")]["tokens_per_s"])
    assert rows[("tiny", "hf_eager_pad2048")]["padding_efficiency"] < 1.0
    assert set(result["context"]) == {"tiny"}
    assert result["context"]["tiny"] == pytest.approx(
        rows[("tiny", "ours")]["tokens_per_s"] / rows[("tiny", "hf_eager_pad2048")]["tokens_per_s"])
    # padding every cell to 2048 costs the context row more memory than ours
    assert rows[("tiny", "hf_eager_pad2048")]["peak_mib"] > rows[("tiny", "ours")]["peak_mib"]


def test_only_the_no_attention_dropout_case_drops_the_cell_encoders_attention_dropout():
    ours = OursStep(cell_config("tiny", None), torch.device("cpu"))
    plain, free = OursPackedStep(ours), OursPackedStep(ours, attention_dropout=0.0)

    def rates(step):
        return [m.dropout.p for m in step.model.cell_bert.modules() if type(m).__name__.endswith("SelfAttention")]

    official = PRESETS["tiny"]["cell"]["attention_probs_dropout_prob"]
    assert official > 0 and rates(ours) == rates(plain) == [official] * PRESETS["tiny"]["cell"]["num_hidden_layers"]
    assert rates(free) == [0.0] * len(rates(ours)) and free.model.cell_bert.config.attention_probs_dropout_prob == 0
    assert ours.model.cell_bert.config.attention_probs_dropout_prob == official  # the copy, not ours, changed


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


def test_padding_plan_compares_grouped_and_random_batches_of_the_real_cells(result):
    plan = {(row["batch_size"], row["batching"]): row for row in result["padding_plan"]}
    assert sorted(plan) == [(1, "length-grouped"), (1, "random"), (8, "length-grouped"), (8, "random")]
    for (batch_size, batching), row in plan.items():
        assert row["cells"] > 2000  # every bundled full-gene cell
        if batch_size == 1:  # one cell per batch: nothing to pad
            assert row["token_efficiency"] == row["flops_padded_over_packed"] == 1.0
    grouped, random = plan[(8, "length-grouped")], plan[(8, "random")]
    assert random["token_efficiency"] < grouped["token_efficiency"] < 1.0
    assert 1.0 < grouped["flops_padded_over_packed"] < random["flops_padded_over_packed"]
    assert grouped["attention_pairs_packed_over_padded"] < 1.0


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


def test_budget_batches_hold_ours_largest_padded_batch_and_every_cell_once():
    lengths = np.array([100, 90, 30, 20, 10, 5, 200, 50])
    grouped = [[6, 0], [1, 7], [2, 3], [4, 5]]  # largest padded batch: 2 x 201 tokens
    batches = budget_batches(lengths, grouped, batch_size=2, seed=0)
    assert sorted(i for batch in batches for i in batch) == list(range(8))
    for batch in batches:
        assert int(np.minimum(lengths[batch] + 1, PADDED_LENGTH).sum()) <= 402 or len(batch) == 1
        assert len(batch) <= 8
    assert len(batches) < len(grouped)  # the budget packs more cells per step than ours pads
    assert padding_efficiency(lengths + 1, grouped) < 1.0


def test_real_cells_are_bundled_cells_capped_at_the_model_length():
    cells = real_cells(40, seed=0)
    assert len(cells) == 40 and real_cells(40, seed=0)[5].tolist() == cells[5].tolist()
    lengths = np.array([len(tokens) for tokens in cells])
    assert lengths.max() <= PADDED_LENGTH - 1 and lengths.min() > 0
    assert len(set(lengths.tolist())) > 10  # a spread of real lengths, not one synthetic shape
    assert all(len(np.unique(tokens)) == len(tokens) for tokens in cells)  # each gene once per cell
