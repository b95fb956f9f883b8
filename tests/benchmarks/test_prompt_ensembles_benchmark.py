"""The prompt-ensemble rows: the default's rule on hand-made rows, the leaderboard section from a
hand-made results dict, and what a quick quality run writes."""

from __future__ import annotations

import json

import pytest

from benchmarks.leaderboard import prompt_section
from benchmarks.prompt_ensembles import PROMPT_SETS, choose, results


def _rows(official: float, ensemble: float, role: str = "pretraining", dataset: str = "pbmc68k_reduced") -> list:
    scores = {"official": official, "synonyms": 0.2, "label": 0.1, "parent": 0.3, "ensemble": ensemble}
    return [{"dataset": dataset, "role": role, "prompts": label, "alpha": 0.1, "n_test": 70, "n_classes": 10,
             "n_texts": 10, "macro_f1": scores[label], "balanced_accuracy": scores[label] / 2, "accuracy": 0.5}
            for label in PROMPT_SETS]


@pytest.mark.parametrize(("official", "ensemble", "chosen"),
                         [(0.5, 0.5, "official"), (0.5, 0.504, "official"), (0.5, 0.51, "ensemble"),
                          (0.6, 0.4, "official")])
def test_the_default_rule_reads_the_pretraining_rows_only(official, ensemble, chosen):
    never_seen = _rows(0.0, 0.9, role="unseen", dataset="pbmc3k")  # must not sway the choice
    choice = choose(_rows(official, ensemble) + never_seen)
    assert choice["chosen"] == chosen
    assert choice["pretraining_mean_macro_f1"]["ensemble"] == pytest.approx(ensemble)
    assert choose(never_seen)["chosen"] is None


def test_leaderboard_section_shows_every_prompt_set_and_the_choice():
    quality = {"checkpoint": {"name": "langcell-tiny-bundled", "training_datasets": ["pbmc68k_reduced"]},
               "datasets": {"pbmc68k_reduced": {"role": "labels seen in pre-training (held-out cells)"},
                            "pbmc3k": {"role": "never seen (cells and labels)"}},
               "prompt_ensembles": results(_rows(0.6331, 0.5866) + _rows(0.1318, 0.0848, "unseen", "pbmc3k"))}
    text = "\n".join(prompt_section(quality))
    assert "| official | synonyms | label | parent | ensemble |" in text
    assert "| pbmc3k | never seen | 0.132 / 0.066 | 0.200 / 0.100 | 0.100 / 0.050 | 0.300 / 0.150 | 0.085 / 0.042 |" \
        in text
    assert text.index("| pbmc3k |") < text.index("| pbmc68k_reduced |")  # never-seen first
    assert "| **mean, never seen** | never seen | 0.132 / 0.066 |" in text
    assert "**official** (mean macro-F1 there: official 0.633" in text and "prompts='official'" in text
    assert prompt_section({"prompt_ensembles": {}}) == []


def test_quick_run_writes_the_prompt_rows(quick_run):
    quality = json.loads((quick_run / "results/quality.json").read_text())
    prompts = quality["prompt_ensembles"]
    assert [row["prompts"] for row in prompts["rows"]] == list(PROMPT_SETS)
    zero_shot = next(r for r in quality["rows"] if r["setting"] == "zero-shot" and r["alpha"] == 0.1)
    official = prompts["rows"][0]
    assert official["macro_f1"] == pytest.approx(zero_shot["macro_f1"], abs=1e-4)  # same cells, classes, α
    assert official["n_texts"] == 3 and prompts["rows"][-1]["n_texts"] > 3
    assert prompts["chosen"] is None and prompts["default"] == "official"  # no pre-training dataset in this run
    assert quality["timings"]["garnett_pbmc_facs"]["prompt_ensembles_s"] > 0
    assert "### Prompt ensembles" in (quick_run / "LEADERBOARD.md").read_text()
