"""Render ``benchmarks/LEADERBOARD.md`` and its PNG plots from the results JSON files alone.

``render(quality, speed)`` → Markdown text (deterministic: the same JSON gives the same text);
``plot(quality, speed, folder)`` → PNG paths (matplotlib, Agg backend).
"""

from __future__ import annotations

from pathlib import Path

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
HEADER = "| accuracy | balanced acc. | macro-F1 | weighted-F1 |"
HEADLINE_ALPHA = 0.1


def _metrics(row: dict) -> str:
    if "accuracy_sd" in row:
        return " | ".join(f"{row[m]:.3f} ± {row[m + '_sd']:.3f}" for m in METRICS)
    return " | ".join(f"{row[m]:.3f}" for m in METRICS)


def _rows(quality: dict, setting: str) -> list[dict]:
    return [row for row in quality["rows"] if row["setting"] == setting]


def _find(quality: dict, dataset: str, setting: str, method: str | None = None, **match) -> dict | None:
    for row in quality["rows"]:
        if row["dataset"] == dataset and row["setting"] == setting and (method is None or row["method"] == method) \
                and all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def headline(quality: dict) -> list[str]:
    """Dataset × method table of macro-F1 (accuracy in brackets) on each dataset's test split."""
    from benchmarks.baselines import BASELINES

    columns = [("zero-shot α=0.1", "zero-shot", None, {"alpha": HEADLINE_ALPHA}),
               ("linear probe", "linear probe", None, {}),
               ("few-shot LR k=5", "few-shot", None, {"k": 5})]
    columns += [(name.split(" (")[0], "supervised reference", name, {}) for name in BASELINES]
    lines = ["| dataset | test cells | " + " | ".join(c[0] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for name, info in quality["datasets"].items():
        cells = []
        for _, setting, method, match in columns:
            row = _find(quality, name, setting, method, **match)
            cells.append("–" if row is None else f"{row['macro_f1']:.3f} ({row['accuracy']:.3f})")
        lines.append(f"| {name} | {info['split']['n_test']} | " + " | ".join(cells) + " |")
    return lines


def quality_section(quality: dict) -> list[str]:
    out = ["## Quality (real cells)", "",
           f"Checkpoint `{quality['checkpoint']['name']}`: pre-trained on {quality['checkpoint']['pretrained_on']}. "
           "Every row of a dataset is scored on the same test cells; no pre-training cell is a test cell. "
           "Zero-shot classes are all labels of the dataset; labels sharing one CL term share one class text "
           "(ties go to the first class: mouse_lung_injury's AEC2 states). Supervised rows are upper references "
           "(trained on the dataset's own labelled train split), not zero-shot competitors.", ""]
    if quality["quick"]:
        out += ["**Quick mode** (subsampled datasets, fewer α / k / seeds): a smoke run, "
                "not the reference numbers.", ""]
    out += ["### Headline: macro-F1 (accuracy)", "", *headline(quality), "",
            "### Datasets and splits", "", "| dataset | role | cells | genes | train | test | split |",
            "|---|---|---|---|---|---|---|"]
    for name, info in quality["datasets"].items():
        split = info["split"]
        out.append(f"| {name} | {info['role']} | {info['n_cells']} | {info['n_genes']} | {split['n_train']} | "
                   f"{split['n_test']} | {split['how']} |")
    out += ["", "### Zero-shot (`langcell-tiny-bundled`, max 256 tokens, all dataset labels as classes)", "",
            "| dataset | α | " + HEADER[2:], "|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['alpha']} | {_metrics(r)} |" for r in _rows(quality, "zero-shot")]
    out += ["", "### Supervised references (upper reference) and linear probe, trained on the train split", "",
            "| dataset | method | train cells | " + HEADER[2:], "|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['method']} | {r['n_train']} | {_metrics(r)} |"
            for r in _rows(quality, "supervised reference") + _rows(quality, "linear probe")]
    seeds = quality["seeds"]["few_shot"]
    out += ["", f"### Few-shot logistic regression (k cells per class from the train split; mean ± sd over "
                f"seeds {seeds}; classes with < k training cells dropped, their test cells count as errors)", "",
            "| dataset | k | train cells (seed 0) | " + HEADER[2:], "|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['k']} | {r['n_train']} | {_metrics(r)} |" for r in _rows(quality, "few-shot")]
    out += ["", f"### LangCell few-shot fine-tuning: {quality['config']['few_shot_langcell']}", ""]
    fine_tuned = _rows(quality, "few-shot LangCell")
    if fine_tuned:
        out += ["Paired with a logistic regression trained on the same k cells and scored on the same test "
                "cells (mean ± sd over seeds " + str(fine_tuned[0]["seeds"]) + ").", "",
                "| dataset | method | k | train cells | test cells | " + HEADER[2:], "|---" * 9 + "|"]
        out += [f"| {r['dataset']} | {r['method']} | {r['k']} | {r['n_train']} | {r['n_test']} | {_metrics(r)} |"
                for r in fine_tuned]
    out += [
            "", "Plots: ![macro-F1 by method](plots/quality_macro_f1.png) ![few-shot](plots/few_shot.png) "
                "![zero-shot alpha](plots/zero_shot_alpha.png)", ""]
    return out


def speed_section(speed: dict) -> list[str]:
    out = ["## Speed (provisional: small quick arguments on a shared CPU)", ""]
    for name, bench in speed["benchmarks"].items():
        out += [f"### {name}", "", f"`{bench['argv']}` — {bench['seconds']:.1f} s", ""]
        if bench.get("error"):
            out += [f"Failed: {bench['error']}", ""]
            continue
        rows = bench["rows"]
        if not rows:
            out += ["(no rows returned; printed table:)", "", "```", bench.get("printed", "").strip(), "```", ""]
            continue
        keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float, str)) and k != "tokens"]
        out += ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        for row in rows:
            out.append("| " + " | ".join(_cell(row.get(k)) for k in keys) + " |")
        out.append("")
    out += ["![speed ratios](plots/speed.png)", ""]
    return out


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(quality: dict | None, speed: dict | None) -> str:
    """The Markdown leaderboard from the results dicts (either may be None)."""
    out = ["# lightning_langcell benchmarks", "",
           "Generated by `python -m benchmarks.run --suite quality|speed|all [--quick]` from "
           "`benchmarks/results/*.json` (do not edit by hand).", ""]
    for label, results in (("quality", quality), ("speed", speed)):
        if results:
            machine = results["machine"]
            out.append(f"- {label}: commit `{results['commit']}`, {results['created']}, {machine['platform']}, "
                       f"{machine['cpu_count']} CPUs, torch {machine['torch']}")
    out.append("")
    if quality:
        out += quality_section(quality)
    if speed:
        out += speed_section(speed)
    return "\n".join(out).rstrip() + "\n"


def plot(quality: dict | None, speed: dict | None, folder: Path) -> list[Path]:
    """Write the PNG plots; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    written = []

    def save(figure, name):
        figure.tight_layout()
        figure.savefig(folder / name, dpi=90)
        plt.close(figure)
        written.append(folder / name)

    if quality:
        names = list(quality["datasets"])
        methods = [("zero-shot α=0.1", "zero-shot", {"alpha": HEADLINE_ALPHA}), ("linear probe", "linear probe", {}),
                   ("few-shot LR k=5", "few-shot", {"k": 5})]
        methods += [(r["method"].split(" (")[0], "supervised reference", {"method": r["method"]})
                    for r in _rows(quality, "supervised reference") if r["dataset"] == names[0]]
        figure, axes = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
        width = 0.8 / len(methods)
        for i, (label, setting, match) in enumerate(methods):
            values = [(_find(quality, n, setting, **match) or {}).get("macro_f1", np.nan) for n in names]
            axes.bar(np.arange(len(names)) + i * width, values, width, label=label)
        axes.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names, rotation=20, ha="right", fontsize=8)
        axes.set_ylabel("macro-F1 (test split)")
        axes.legend(fontsize=7)
        save(figure, "quality_macro_f1.png")
        figure, axes = plt.subplots(figsize=(6, 4))
        for name in names:
            rows = [r for r in _rows(quality, "few-shot") if r["dataset"] == name]
            axes.errorbar([r["k"] for r in rows], [r["macro_f1"] for r in rows],
                          [r["macro_f1_sd"] for r in rows], marker="o", capsize=3, label=name)
        axes.set_xlabel("k cells per class")
        axes.set_ylabel("macro-F1 (few-shot logistic regression)")
        axes.legend(fontsize=7)
        save(figure, "few_shot.png")
        figure, axes = plt.subplots(figsize=(6, 4))
        for name in names:
            rows = [r for r in _rows(quality, "zero-shot") if r["dataset"] == name]
            axes.plot([r["alpha"] for r in rows], [r["accuracy"] for r in rows], marker="o", label=name)
        axes.set_xlabel("α (CTC weight of the blend)")
        axes.set_ylabel("zero-shot accuracy")
        axes.legend(fontsize=7)
        save(figure, "zero_shot_alpha.png")
    if speed:
        labels, ratios = [], []
        for name, bench in speed["benchmarks"].items():
            for row in bench.get("rows") or []:
                ratio = row.get("ratio", row.get("speedup_wall"))
                if isinstance(ratio, (int, float)):
                    labels.append(f"{name.replace('_benchmark', '')}: {row.get('case')}")
                    ratios.append(ratio)
        if ratios:
            figure, axes = plt.subplots(figsize=(7, 0.35 * len(ratios) + 1.5))
            axes.barh(labels, ratios)
            axes.axvline(1.0, color="black", lw=0.8)
            axes.set_xlabel("speed vs the benchmark's baseline (×)")
            axes.tick_params(axis="y", labelsize=7)
            save(figure, "speed.png")
    return written
