"""The leaderboard separates datasets whose labels the shipped checkpoint was pre-trained on from
datasets it never saw: no never-seen table may hold a training dataset (read from the training
recipe, not from the benchmark code), and every other per-dataset table says which is which."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes/pretrain_tiny_bundled.yaml"


def _training_datasets() -> set[str]:
    return {Path(path).stem for path in yaml.safe_load(RECIPE.read_text())["data"]["data"]}


def _sections(text: str, header: bool = False) -> dict[str, list[str]]:
    """{### heading: the table rows (lines starting with '|', the rule and, unless ``header``, the
    header left out) under it}."""
    sections, current = {}, None
    for line in text.splitlines():
        if line.startswith("#"):
            current = line.lstrip("#").strip()
            sections[current] = []
        elif current and line.startswith("|") and not line.startswith("|---"):
            sections[current].append(line)
    return {title: rows if header else rows[1:] for title, rows in sections.items()}  # rows[0]: the header


def _first_cells(rows: list[str]) -> list[str]:
    return [row.split("|")[1].strip() for row in rows]


@pytest.fixture(scope="module")
def rendered() -> tuple[dict, str]:
    from benchmarks.leaderboard import render

    quality = json.loads((REPO / "benchmarks/results/quality.json").read_text())
    return quality, render(quality, None)


def test_training_datasets_come_from_the_recipe():
    from benchmarks.quality import PRETRAINING, UNSEEN

    assert set(PRETRAINING) == _training_datasets() == {
        "pbmc68k_reduced", "baron_mouse_pancreas", "zeisel_mouse_brain", "mouse_lung_injury"}
    assert not set(UNSEEN) & _training_datasets()


def test_never_seen_tables_hold_no_training_dataset(rendered):
    quality, text = rendered
    training = _training_datasets()
    sections = _sections(text)
    never = [title for title in sections if "never seen" in title.lower()]
    assert len(never) == 3  # the headline, the zero-shot table and the ontology-scale quality table
    assert next(iter(t for t in sections if t.startswith("Headline"))).startswith("Headline, never seen")
    for title in never:
        names = set(_first_cells(sections[title]))
        assert names and not names & training, (title, names & training)
        assert names >= {"pbmc3k", "garnett_pbmc_facs"}
    seen = [title for title in sections if title.lower().startswith("labels seen in pre-training")]
    assert len(seen) == 2
    for title in seen:
        assert set(_first_cells(sections[title])) == training


def test_other_tables_mark_the_training_datasets(rendered):
    _, text = rendered
    training = _training_datasets()
    marked, tables = 0, 0
    for title, rows in _sections(text, header=True).items():
        columns = [cell.strip() for cell in rows[0].split("|")[1:-1]] if rows else []
        if "pre-training" not in columns or "headline" in title.lower() or "splits" in title.lower():
            continue
        tables += 1
        for row in rows[1:]:
            cells = [cell.strip() for cell in row.split("|")[1:-1]]
            if "pre-training" in cells:  # a second table under the same heading
                columns = cells
                continue
            status, parts = cells[columns.index("pre-training")], set(cells[0].split(" + "))
            assert status in ("never seen", "labels seen, cells held out"), (title, row)
            assert (status == "labels seen, cells held out") == bool(parts & training), (title, row)
            marked += 1
    assert tables >= 5 and marked > 50  # supervised + probe, few-shot LR / LangCell, fine-tune, embeddings


def test_quick_run_records_the_training_datasets(quick_run):
    results = json.loads((quick_run / "results/quality.json").read_text())
    assert set(results["checkpoint"]["training_datasets"]) == _training_datasets()
    assert results["checkpoint"]["recipe"] == "recipes/pretrain_tiny_bundled.yaml"
    assert results["datasets"]["garnett_pbmc_facs"]["role"] == "never seen (cells and labels)"


ABSOLUTE = re.compile(r"(?<![\w.$])/(?:work|root|tmp|home|Users|mnt|scratch)/")


def test_no_absolute_machine_path_in_benchmarks_or_their_results(quick_run, tmp_path, monkeypatch):
    for source in sorted((REPO / "benchmarks").glob("*.py")):
        assert not ABSOLUTE.search(source.read_text()), source.name
    for written in (quick_run / "results/quality.json", quick_run / "LEADERBOARD.md"):
        assert not ABSOLUTE.search(written.read_text()), written.name
    from benchmarks.quality import shown_path

    monkeypatch.setenv("LANGCELL_SHARED_DATA", str(tmp_path))
    assert shown_path(tmp_path / "actinn_mouse_blood/actinn_train_set.h5ad") == (
        "$LANGCELL_SHARED_DATA/actinn_mouse_blood/actinn_train_set.h5ad")
    assert shown_path(REPO / "data/cells/pbmc3k.h5ad") == "data/cells/pbmc3k.h5ad"


def test_suite_wall_time_is_recorded_and_quoted(quick_run):
    results = json.loads((quick_run / "results/quality.json").read_text())
    assert results["wall_s"] >= results["timings"]["total_s"] > 0
    assert f"suite wall time {results['wall_s'] / 60:.1f} min" in (quick_run / "LEADERBOARD.md").read_text()
