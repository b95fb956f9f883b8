"""Render ``benchmarks/LEADERBOARD.md`` and its PNG plots from the results JSON files alone.

``render(quality, speed, data)`` → Markdown text (deterministic: the same JSON gives the same text);
``plot(quality, speed, folder)`` → PNG paths (matplotlib, Agg backend).
"""

from __future__ import annotations

from pathlib import Path

from benchmarks.shipped_checkpoint import NEVER_SEEN, SEEN, group_of

METRICS = ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")
HEADER = "| accuracy | balanced acc. | macro-F1 | weighted-F1 |"
HEADLINE_ALPHA = 0.1


def _metrics(row: dict) -> str:
    if "accuracy_sd" in row:
        return " | ".join(f"{row[m]:.3f} ± {row[m + '_sd']:.3f}" for m in METRICS)
    return " | ".join(f"{row[m]:.3f}" for m in METRICS)


def _rows(quality: dict, setting: str) -> list[dict]:
    return [row for row in quality["rows"] if row["setting"] == setting]


def _seen(quality: dict, dataset: str) -> str:
    """Short pre-training status of a dataset's labels for a table column."""
    return "never seen" if group_of(quality, dataset) == NEVER_SEEN else "labels seen, cells held out"


def _never_seen_first(quality: dict, rows: list[dict]) -> list[dict]:
    """``rows`` with the never-seen datasets first (stable), each with its ``pre-training`` status."""
    marked = [{**row, "pre-training": _seen(quality, row["dataset"])} for row in rows]
    return sorted(marked, key=lambda row: row["pre-training"] != "never seen")


def _find(quality: dict, dataset: str, setting: str, method: str | None = None, **match) -> dict | None:
    for row in quality["rows"]:
        if row["dataset"] == dataset and row["setting"] == setting and (method is None or row["method"] == method) \
                and all(row.get(key) == value for key, value in match.items()):
            return row
    return None


def headline_columns(quality: dict) -> list[tuple[str, str, dict]]:
    """(column title, setting, row match) of the headline table and bar plot."""
    from benchmarks.baselines import BASELINES

    columns = [("zero-shot α=0.1", "zero-shot", {"alpha": HEADLINE_ALPHA}), ("linear probe", "linear probe", {}),
               ("few-shot LR k=5", "few-shot", {"k": 5}), ("few-shot LangCell k=5", "few-shot LangCell", {"k": 5}),
               ("fine-tune lr 1e-3", "fine-tune", {"learning_rate": 1e-3})]
    columns = [column for column in columns if _rows(quality, column[1])]
    return columns + [(name.split(" (")[0], "supervised reference", {"method": name}) for name in BASELINES]


def headline(quality: dict, group: str = NEVER_SEEN) -> list[str]:
    """Dataset × method table of macro-F1 (accuracy in brackets) on each test split of one group
    (:data:`~benchmarks.shipped_checkpoint.NEVER_SEEN` or ``SEEN``)."""
    columns = headline_columns(quality)
    lines = ["| dataset | test cells | " + " | ".join(c[0] for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for name, info in quality["datasets"].items():
        if group_of(quality, name) != group:
            continue
        cells = []
        for _, setting, match in columns:
            row = _find(quality, name, setting, **match)
            cells.append("–" if row is None else f"{row['macro_f1']:.3f} ({row['accuracy']:.3f})")
        lines.append(f"| {name} | {info['split']['n_test']} | " + " | ".join(cells) + " |")
    return lines


def _mean_sd(row: dict, metric: str) -> str:
    return f"{row[metric]:.3f} ± {row[metric + '_sd']:.3f}"


def langcell_sections(quality: dict) -> list[str]:
    """Few-shot LangCell vs paired LR, LangCell-CE fine-tuning, reverse cross-dataset zero-shot."""
    config, out = quality["config"], []
    reduced = config.get("reduced", {})
    few_shot = _rows(quality, "few-shot LangCell")
    if few_shot:
        out += ["", "### Few-shot LangCell vs logistic regression on the same cells", "",
                f"`FewShotLangCell` from `{quality['checkpoint']['name']}` with recipes/few_shot.yaml settings "
                f"(Adam lr 1e-5, batch 12, CE(sim/0.05) + CE over CTM, α = 0.1, max 256 tokens, CPU) for "
                f"**{config['langcell_few_shot']['epochs']} epochs** ({reduced.get('langcell_few_shot', '')}). "
                "Per (dataset, k, seed) both methods train on the same k cells per class of the train split and "
                "are scored on the same full test split; mean ± sd over seeds "
                f"{few_shot[0]['seeds']}; Δ = LangCell − LR macro-F1, paired per seed. Classes sharing one CL term "
                "get the dataset label in their text; classes with < k training cells are dropped from training "
                "(LangCell can still predict them from their text, LR cannot).", "",
                "| dataset | pre-training | k | train cells (seed 0) | LangCell macro-F1 | LR macro-F1 | "
                "Δ macro-F1 (paired) | LangCell accuracy | LR accuracy |", "|---" * 9 + "|"]
        for row in _never_seen_first(quality, few_shot):
            paired = _find(quality, row["dataset"], "few-shot", k=row["k"])
            delta = f"{row['macro_f1_minus_paired']:+.3f} ± {row['macro_f1_minus_paired_sd']:.3f}"
            out.append(f"| {row['dataset']} | {row['pre-training']} | {row['k']} | {row['n_train']} | "
                       f"{_mean_sd(row, 'macro_f1')} | "
                       f"{_mean_sd(paired, 'macro_f1')} | {delta} | {_mean_sd(row, 'accuracy')} | "
                       f"{_mean_sd(paired, 'accuracy')} |")
    fine_tuned = _rows(quality, "fine-tune")
    if fine_tuned:
        first = fine_tuned[0]
        features = first.get("features", "cls")
        out += ["", f"### LangCell-CE fine-tuning (cell encoder + head on the `{features}` features), trained on the "
                "train split", "",
                f"`CellTypeClassifier` from `{quality['checkpoint']['name']}` with recipes/finetune.yaml settings "
                f"(AdamW at the recipe's peak lr 5e-5 and at 1e-3 (column peak lr), weight decay 0.001, batch 16, "
                f"clip 1.0, cosine to 0, max 256 tokens, CPU, seed "
                f"{first['seed']}) for **{first['epochs']} epochs instead of {first['recipe_epochs']}** and "
                f"{first['recipe_warmup_steps']} × {first['epochs']}/{first['recipe_epochs']} warm-up steps. "
                "The head reads the pooled cell state (`features: pooled`): the `<cls>` state for the released "
                "model, the mean gene state for the tiny checkpoint (its `<cls>` state is untrained).", "",
                "| dataset | pre-training | train cells | peak lr | epochs | steps | warm-up | " + HEADER[2:],
                "|---" * 11 + "|"]
        out += [f"| {r['dataset']} | {r['pre-training']} | {r['n_train']} | {r.get('learning_rate', 5e-5):g} | "
                f"{r['epochs']} | {r['steps']} | {r['warmup_steps']} | {_metrics(r)} |"
                for r in _never_seen_first(quality, fine_tuned)]
    reverse = _rows(quality, "reverse zero-shot")
    if reverse:
        info = quality["reverse_pretraining"]
        trained = ", ".join(f"{name} ({v['cells']} cells)" for name, v in info["trained_on"].items())
        sources = " + ".join(info["trained_on"])
        out += ["", f"### Reverse cross-dataset zero-shot: pre-trained on the {sources} train splits", "",
                f"A tiny model pre-trained from scratch with {info['recipe']} (all four objectives, CPU) on the "
                f"train splits of {trained} only, every cell in training, no validation: {info['steps']} steps "
                f"(max {info['max_epochs']} epochs"
                + (f", max {info['max_steps']} steps" if info.get("max_steps") else "") + f", {info['seconds']} s). "
                "Zero-shot on each dataset's test split (all its labels as classes); 'own' marks the test split of "
                "a dataset whose train split pre-trained it.", "",
                "| dataset | pre-trained on its train split | α | " + HEADER[2:], "|---|---|---|---|---|---|---|"]
        out += [f"| {r['dataset']} | {'own' if r['seen_in_pretraining'] else 'never seen'} | {r['alpha']} | "
                f"{_metrics(r)} |" for r in reverse]
    return out


def _table(rows: list[dict], keys: list[str],
           first: tuple[str, ...] = ("dataset", "pre-training", "method", "n_test")) -> list[str]:
    """Markdown table of ``first`` + ``keys`` columns (– where a row lacks a key)."""
    columns = [*first, *keys]
    return ["| " + " | ".join(c.replace("_", " ") for c in columns) + " |", "|" + "---|" * len(columns),
            *["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in rows]]


def embedding_section(quality: dict) -> list[str]:
    """Label separation, batch mixing and cell <-> text retrieval of the frozen embeddings."""
    within, across = _rows(quality, "embedding"), _rows(quality, "embedding across datasets")
    if not within and not across:
        return []
    out = ["", "### Embeddings and retrieval (frozen, test split of each dataset)", "",
           "scib's label silhouette ((ASW + 1) / 2, cosine) and kNN label purity (k = 15) of `X_langcell` and, as "
           "a baseline, of PCA-50 of log1p CP10k (fitted on the train split); cell → text recall@k against the "
           "distinct class texts of the dataset's labels (labels sharing one CL term share one text; recall@k "
           "left out (–) where k ≥ the number of texts, as it is 1 by construction), text → cell recall@k and "
           "precision@5; ties count in expectation under random tie-breaking, so an encoder that gives every "
           "text the same score gets recall@1 = 1 / texts (`lightning_langcell.inference.retrieval`).", ""]
    within, across = _never_seen_first(quality, within), _never_seen_first(quality, across)
    out += _table(within, ["silhouette_label", "knn_purity", "cell_to_text_recall_at_1", "cell_to_text_recall_at_5",
                           "text_to_cell_recall_at_1", "text_to_cell_precision_at_5", "n_texts"])
    if across:
        out += ["", f"Across datasets (batch = dataset, label = Cell Ontology id, test splits; the baseline's PCA "
                    f"uses the {across[0]['shared_genes']} genes the sets share): a good embedding has a high "
                    "label silhouette / purity and a low batch silhouette / high batch mixing.", ""]
        out += _table(across, ["silhouette_label", "knn_purity", "silhouette_batch", "knn_batch_mixing"])
    return out


def _mean_sd_cell(row: dict, metric: str) -> str:
    """``mean ± sd`` where the row has ``<metric>_sd``, else the value; – when missing."""
    if row.get(metric) is None:
        return "–"
    return _mean_sd(row, metric) if f"{metric}_sd" in row else f"{row[metric]:.3f}"


def _marked_table(quality: dict, rows: list[dict], columns: list[tuple[str, str]]) -> list[str]:
    """Table of (title, key) columns after dataset and pre-training, never-seen datasets first;
    metrics as mean ± sd where the row has an ``_sd``."""
    lines = ["| dataset | pre-training | " + " | ".join(title for title, _ in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    for row in _never_seen_first(quality, rows):
        cells = [_mean_sd_cell(row, key) if isinstance(row.get(key), float) else _cell(row.get(key))
                 for _, key in columns]
        lines.append(f"| {row['dataset']} | {row['pre-training']} | " + " | ".join(cells) + " |")
    return lines


def annotation_section(quality: dict) -> list[str]:
    """Few-shot adapters, open-set AUROC and ontology hierarchy rows (absent keys: no section)."""
    out = []
    adapters = (quality.get("few_shot_adapters") or {}).get("rows")
    if adapters:
        info = quality["few_shot_adapters"]
        out += ["", "### Few-shot adapters (frozen model)", "",
                f"`{quality['checkpoint']['name']}` embeds every cell and class text once (zero-shot α = "
                f"{info['alpha']}); per (dataset, k, seed) k labelled cells per class from the train split "
                "(classes with < k cells dropped) fit each method on the frozen embeddings, scored on the full "
                f"test split; mean ± sd over seeds {info['seeds']}. Zero-shot and CTC only (α = 1) use no labels; "
                "logistic regression is fitted on the same standardised embeddings of the same cells; the prototype "
                "adapter blends class prototypes with the zero-shot scores (weight by leave-one-out), the probe "
                "adapter is a logistic regression on the same standardised embeddings whose weights are pulled "
                "toward the class texts (the CTC classifier, scale 0.5) "
                "(`lightning_langcell.inference.adapters`).", "",
                *_marked_table(quality, adapters, [("k", "k"), ("method", "method"),
                                                   ("train cells (last seed)", "n_train"),
                                                   ("test cells", "n_test"), ("accuracy", "accuracy"),
                                                   ("balanced acc.", "balanced_accuracy"),
                                                   ("macro-F1", "macro_f1")])]
    open_set = (quality.get("open_set") or {}).get("rows")
    if open_set:
        out += ["", "### Open-set: unknown score AUROC", "",
                "Each cell type of the dataset is left out of the candidate classes in turn; the test cells (a "
                f"stratified subsample of at most {quality['open_set']['max_cells']}) are annotated against the "
                "other types and the AUROC of the unknown score (normalised entropy of the final probabilities, "
                "the default chosen on the pre-training data by `benchmarks/unknown_score_selection.py`; 1 − margin "
                "of the two best classes; 1 − the best probability; `lightning_langcell.inference.open_set`) "
                "separates the left-out type's cells from the rest; mean ± sd over the left-out types "
                "(0.5 = chance).", "",
                *_marked_table(quality, open_set, [("cells", "n_cells"), ("left-out types", "n_types"),
                                                   ("AUROC entropy (default)", "auroc_entropy"),
                                                   ("AUROC margin", "auroc_margin"),
                                                   ("AUROC max probability", "auroc_max_probability")])]
    hierarchy = (quality.get("hierarchy") or {}).get("rows")
    thresholds = quality.get("hierarchy_thresholds") or {}
    if hierarchy or thresholds.get("rows"):
        columns = [("method", "method"), ("exact accuracy", "accuracy"), ("hierarchical F1", "hierarchical_f1"),
                   ("correct or ancestor", "correct_or_ancestor")]
        out += ["", "### Ontology hierarchy", "",
                "Zero-shot predictions on each test split mapped to their Cell Ontology ids and scored by "
                "`lightning_langcell.inference.hierarchy.hierarchical_scores`: exact accuracy, hierarchical F1 "
                "(precision / recall over the ancestor sets, roots excluded, micro-averaged over cells) and the "
                "fraction of predictions equal to the truth or one of its ancestors.", ""]
        if hierarchy:
            out += _marked_table(quality, hierarchy, [*columns, ("test cells", "n_test")])
        if thresholds.get("rows"):
            chosen = thresholds["chosen"]
            out += ["", "#### Back-off thresholds, chosen on the pre-training datasets (labels seen in pre-training, "
                        "held-out cells)", "",
                    f"Chosen on the held-out test cells of the checkpoint's pre-training datasets (never on the "
                    f"never-seen sets), {thresholds['criterion']}, over {thresholds['grid_size']} threshold pairs: "
                    f"threshold {chosen['threshold']}, ancestor threshold {chosen['ancestor_threshold']}.", "",
                    *_marked_table(quality, thresholds["rows"], [*columns, ("backed off", "backoff_fraction")])]
        elif thresholds.get("skipped"):
            out += ["", f"Back-off thresholds: {thresholds['skipped']}."]
    return out


def prompt_section(quality: dict) -> list[str]:
    """Prompt ensembles: macro-F1 / balanced accuracy per dataset and prompt set, and the chosen default."""
    info = quality.get("prompt_ensembles") or {}
    if not info.get("rows"):
        return []
    sets = list(info["prompt_sets"])
    by = {(row["dataset"], row["prompts"]): row for row in info["rows"]}
    datasets = list(dict.fromkeys(row["dataset"] for row in _never_seen_first(quality, info["rows"])))
    lines = ["| dataset | pre-training | " + " | ".join(sets) + " |", "|---|---|" + "---|" * len(sets)]
    for name in datasets:
        cells = [f"{by[name, label]['macro_f1']:.3f} / {by[name, label]['balanced_accuracy']:.3f}"
                 if (name, label) in by else "–" for label in sets]
        lines.append(f"| {name} | {_seen(quality, name)} | " + " | ".join(cells) + " |")
    never = [name for name in datasets if group_of(quality, name) == NEVER_SEEN]
    if never:
        means = [" / ".join(f"{sum(by[n, label][m] for n in never) / len(never):.3f}"
                            for m in ("macro_f1", "balanced_accuracy")) for label in sets]
        lines.append("| **mean, never seen** | never seen | " + " | ".join(means) + " |")
    texts = ", ".join(f"{label} = {' + '.join(templates)}" for label, templates in info["prompt_sets"].items())
    chosen = (f"Chosen by the rule on the pre-training datasets: **{info['chosen']}** (mean macro-F1 there: "
              + ", ".join(f"{k} {v:.3f}" for k, v in info["pretraining_mean_macro_f1"].items())
              + f"); shipped default `prompts={info['default']!r}`." if info.get("chosen") else
              f"No pre-training dataset in this run: nothing chosen; shipped default `prompts={info['default']!r}`.")
    return ["", "### Prompt ensembles", "",
            f"Zero-shot α = {info['alpha']} on each test split, every label of the dataset as a class, with several "
            f"class texts per class (`lightning_langcell.inference.prompts`; {texts}): mean of the texts' normalised "
            "embeddings for the similarity, mean of their match probabilities for the matcher. Cells: macro-F1 / "
            "balanced accuracy. A class with no text from a template keeps its official text. Identical texts "
            "shared by several classes are scored once (ties go to the first class).", "", *lines, "",
            f"Rule: {info['rule']}. {chosen}"]


def ontology_quality_lines(quality: dict) -> list[str]:
    """"Zero-shot at ontology scale" quality table: exact vs top-k at each class count (absent: none)."""
    info = quality.get("class_scaling") or {}
    if not info.get("rows"):
        return []
    out = ["", "### Zero-shot at ontology scale: quality, never seen", "",
           f"At most {info['max_cells']} test cells per never-seen dataset (stratified), truth = each label's Cell "
           "Ontology id; candidates at each count: the dataset's true classes, then the hematopoietic subtree "
           "(`CL:0000988+`), then every other bundled CL term with a definition (id order); 'all' = every term. "
           f"α = {info['alpha']}; exact = the matcher on every class, top-k = on each cell's k best CTC classes "
           "(`benchmarks/class_scaling_quality.py`). Balanced accuracy = mean recall over the true classes; "
           "hierarchical F1 and correct-or-ancestor as in the hierarchy rows.", ""]
    out += ["| dataset | classes | mode | cells | accuracy | balanced acc. | hierarchical F1 | correct or ancestor |",
            "|---" * 8 + "|"]
    out += [f"| {r['dataset']} | {r['classes']} | {r['mode']} | {r['n_cells']} | {r['accuracy']:.3f} | "
            f"{r['balanced_accuracy']:.3f} | {r['hierarchical_f1']:.3f} | {r['correct_or_ancestor']:.3f} |"
            for r in info["rows"]]
    return out


def ontology_speed_lines(bench: dict) -> list[str]:
    """"Zero-shot at ontology scale" speed table of :mod:`benchmarks.ontology_scaling_benchmark`."""
    info = bench.get("ontology_scaling") or {}
    measured = ", ".join(str(count) for count in info.get("official_measured_s_per_cell", {}))
    out = ["#### Zero-shot at ontology scale: speed", "",
           f"{info.get('cells', '?')} cell(s) at the official sizes (random weights), ours top-{info.get('k', '?')} "
           f"per cell against the official per-class algorithm, **measured at {measured} class(es) only and fitted "
           f"as {info.get('official_fit_fixed_s', float('nan')):.2f} + "
           f"{info.get('official_fit_s_per_class', float('nan')):.3f} × classes s/cell beyond** (rows marked "
           "'fitted'). Class texts are embedded once per checkpoint and text set (one-off column; cached on disk "
           "in real use).", "",
           "| classes | official s/cell | ours top-k s/cell | × official | one-off class texts s |", "|---" * 5 + "|"]
    for row in bench["rows"]:
        mark = "" if row["official_measured"] else " (fitted)"
        text = "" if row["text_measured"] else " (fitted)"
        out.append(f"| {row['classes']} | {row['official_s_per_cell']:.2f}{mark} | {row['ours_s_per_cell']:.2f} | "
                   f"{row['speedup']:.1f}{mark} | {row['text_one_off_s']:.1f}{text} |")
    return out


def quality_section(quality: dict) -> list[str]:
    out = ["## Quality (real cells)", "",
           f"Checkpoint `{quality['checkpoint']['name']}`: pre-trained on {quality['checkpoint']['pretrained_on']}. "
           "Every row of a dataset is scored on the same test cells; no pre-training cell is a test cell. "
           f"Datasets are split into **{NEVER_SEEN}** (the zero-shot headline) and **{SEEN}**. "
           "Zero-shot classes are all labels of the dataset; labels sharing one CL term share one class text "
           "(ties go to the first class: mouse_lung_injury's AEC2 states). Supervised rows are upper references "
           "(trained on the dataset's own labelled train split), not zero-shot competitors.", ""]
    if quality["quick"]:
        out += ["**Quick mode** (subsampled datasets, fewer α / k / seeds): a smoke run, "
                "not the reference numbers.", ""]
    seen_note = ("The checkpoint's pre-training texts were built from these datasets' labels (its recipe "
                 f"`{quality['checkpoint'].get('recipe', 'recipes/pretrain.yaml')}`): its zero-shot rows here are a "
                 "supervised text head scored on held-out test cells, not zero-shot.")
    out += [f"### Headline, {NEVER_SEEN}: macro-F1 (accuracy)", "", *headline(quality, NEVER_SEEN), "",
            f"### {SEEN[0].upper() + SEEN[1:]}: macro-F1 (accuracy)", "", seen_note, "", *headline(quality, SEEN), "",
            "### Datasets and splits", "", "| dataset | pre-training | cells | genes | train | test | split |",
            "|---|---|---|---|---|---|---|"]
    for name, info in quality["datasets"].items():
        split = info["split"]
        out.append(f"| {name} | {group_of(quality, name)} | {info['n_cells']} | {info['n_genes']} | "
                   f"{split['n_train']} | {split['n_test']} | {split['how']} |")
    for group, title in ((NEVER_SEEN, "Zero-shot, never seen (cells and labels): the zero-shot numbers"),
                         (SEEN, "Labels seen in pre-training (held-out cells): not zero-shot")):
        out += ["", f"### {title} (`{quality['checkpoint']['name']}`, max 256 tokens, all dataset labels as classes)",
                "", *([seen_note, ""] if group == SEEN else []), "| dataset | α | " + HEADER[2:],
                "|---|---|---|---|---|---|"]
        out += [f"| {r['dataset']} | {r['alpha']} | {_metrics(r)} |" for r in _rows(quality, "zero-shot")
                if group_of(quality, r["dataset"]) == group]
    out += ["", "### Supervised references (upper reference) and linear probe, trained on the train split", "",
            "| dataset | pre-training | method | train cells | " + HEADER[2:], "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['pre-training']} | {r['method']} | {r['n_train']} | {_metrics(r)} |"
            for r in _never_seen_first(quality, _rows(quality, "supervised reference") + _rows(quality, "linear probe"))]
    seeds = quality["seeds"]["few_shot"]
    out += ["", f"### Few-shot logistic regression (k cells per class from the train split; mean ± sd over "
                f"seeds {seeds}; classes with < k training cells dropped, their test cells count as errors)", "",
            "| dataset | pre-training | k | train cells (seed 0) | " + HEADER[2:], "|---|---|---|---|---|---|---|---|"]
    out += [f"| {r['dataset']} | {r['pre-training']} | {r['k']} | {r['n_train']} | {_metrics(r)} |"
            for r in _never_seen_first(quality, _rows(quality, "few-shot"))]
    out += langcell_sections(quality)
    out += embedding_section(quality)
    out += annotation_section(quality)
    out += prompt_section(quality)
    out += ontology_quality_lines(quality)
    out += [
            "", "Plots: ![macro-F1 by method](plots/quality_macro_f1.png) ![few-shot](plots/few_shot.png) "
                "![zero-shot alpha](plots/zero_shot_alpha.png)"
                + (" ![few-shot LangCell vs LR](plots/few_shot_langcell.png)" if few_shot_panels(quality) else ""), ""]
    return out


def speed_section(speed: dict) -> list[str]:
    out = ["## Speed (ratios against baselines run in the same process; see each benchmark's arguments)", ""]
    for name, bench in speed["benchmarks"].items():
        out += [f"### {name}", "", f"`{bench['argv']}` — {bench['seconds']:.1f} s", ""]
        if bench.get("error"):
            out += [f"Failed: {bench['error']}", ""]
            continue
        rows = bench["rows"]
        if not rows:
            out += ["(no rows returned; printed table:)", "", "```", bench.get("printed", "").strip(), "```", ""]
            continue
        out += [*(ontology_speed_lines(bench) if bench.get("ontology_scaling") else _plain_table(rows)), ""]
        if name in COST_RATIOS:
            out += ["(ratio here = seconds / the baseline's seconds: a cost, lower is cheaper)", ""]
        for key, series in (bench.get("scaling") or {}).items():
            out += [f"{key.replace('_', ' ')}:", "", *_plain_table(series), ""]
    out += ["![speed ratios](plots/speed.png)"]
    if any(bench.get("scaling") for bench in speed["benchmarks"].values()):
        out += [" ![scaling](plots/speed_scaling.png)"]
    return out + [""]


def _plain_table(rows: list[dict]) -> list[str]:
    """Markdown table of every scalar field of ``rows`` (the first row's keys)."""
    keys = [k for k in rows[0] if isinstance(rows[0][k], (int, float, str, type(None))) and k != "tokens"]
    return ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
            *["| " + " | ".join(_cell(row.get(k)) for k in keys) + " |" for row in rows]]


COST_RATIOS = {"corpus_verify_benchmark"}  # their "ratio" is seconds / the baseline's (a cost), not a speed-up

SCALING_PLOTS = {  # (benchmark, scaling key) -> (x field, y field, title)
    ("tokenizer_benchmark", "scaling"): ("cells", "cells_per_s", "tokenizer: cells/s (CPU time) vs cells"),
    ("pretrain_step_benchmark", "scaling"): ("length", "step_ms", "training step: ms vs sequence length"),
    ("zero_shot_benchmark", "scaling"): ("cells", "cpu_s", "zero-shot (ours exact): CPU s vs cells"),
    ("zero_shot_benchmark", "class_scaling"): ("classes", "cpu_s", "zero-shot: CPU s vs classes"),
}


def scaling_panels(speed: dict) -> list[tuple[str, str, str, dict[str, list[tuple[float, float]]]]]:
    """(title, x label, y label, {case: [(x, y)]}) of each scaling series in the speed results."""
    panels = []
    for (name, key), (x, y, title) in SCALING_PLOTS.items():
        series = ((speed["benchmarks"].get(name) or {}).get("scaling") or {}).get(key) or []
        lines: dict[str, list[tuple[float, float]]] = {}
        for row in series:
            if x in row and isinstance(row.get(y), (int, float)):
                lines.setdefault(row.get("case", "ours exact"), []).append((row[x], row[y]))
        if lines:
            panels.append((title, x, y, lines))
    return panels


def speed_bars(speed: dict) -> dict[str, float]:
    """``"<benchmark>: <case>"`` -> speed against the benchmark's baseline (×) of every speed row."""
    bars = {}
    for name, bench in speed["benchmarks"].items():
        for row in bench.get("rows") or []:
            ratio = row.get("ratio", row.get("speedup_wall"))
            if isinstance(ratio, (int, float)) and name in COST_RATIOS:
                ratio = 1 / ratio if ratio > 0 else None  # seconds / the baseline's -> speed
            if isinstance(ratio, (int, float)):
                bars[f"{name.replace('_benchmark', '')}: {row.get('case')}"] = ratio
    return bars


def _cell(value) -> str:
    if value is None:
        return "–"
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def render(quality: dict | None, speed: dict | None, data: dict | None = None) -> str:
    """The Markdown leaderboard from the results dicts (any may be None; ``data``: data_path.json)."""
    out = ["# lightning_langcell benchmarks", "",
           "Generated by `python -m benchmarks.run --suite quality|speed|data|all [--quick]` from "
           "`benchmarks/results/*.json` (do not edit by hand).", ""]
    for label, results in (("quality", quality), ("speed", speed), ("data path", data)):
        if results:
            machine = results["machine"]
            wall = f", suite wall time {results['wall_s'] / 60:.1f} min" if "wall_s" in results else ""
            out.append(f"- {label}: commit `{results['commit']}`, {results['created']}, {machine['platform']}, "
                       f"{machine['cpu_count']} CPUs, torch {machine['torch']}{wall}")
    out.append("")
    if quality:
        out += quality_section(quality)
    if speed:
        out += speed_section(speed)
    if data:
        out += data_path_section(data)
    return "\n".join(out).rstrip() + "\n"


DATA_PATH_COLUMNS = (("cells", "cells"), ("ranks", "ranks"), ("open_s", "open s"), ("setup_s", "setup s"),
                     ("setup_peak_mb", "setup peak MB"), ("held_mb", "held MB"), ("hwm_mb", "RSS hwm MB"),
                     ("first_batch_s_w0", "1st batch s (0 w)"), ("cells_per_s_w0", "cells/s (0 w)"),
                     ("tokens_per_s_w0", "tokens/s (0 w)"), ("cells_per_s_w2", "cells/s (2 w)"),
                     ("tokens_per_s_w2", "tokens/s (2 w)"))


def data_path_section(data: dict) -> list[str]:
    """Corpus-scale data path (``benchmarks.data_path_benchmark``): per size and rank count, the fit
    extrapolated to 27.5M cells against its targets, and the loader against the model
    (``benchmarks.loader_vs_model``)."""
    out = ["## Data path at corpus scale", ""]
    bench = data.get("data_path_benchmark") or {}
    if bench.get("error"):
        out += [f"Failed: {bench['error']}", ""]
    elif bench.get("rows"):
        settings = bench.get("settings", {})
        low, high = settings.get("genes_per_cell", ["?", "?"])
        out += [f"`{bench['argv']}` — {bench['seconds']:.1f} s. Synthetic corpora, {low}-{high} genes per cell, "
                f"{settings.get('cell_types', '?')} cell types, split 0.9/0.1, masked batches of "
                f"{settings.get('batch_size', '?')} cells; memory beyond the memory map (RssAnon) above the "
                "imports; 2 ranks run at the same time (slower rank's times, larger rank's memory).", "",
                "| " + " | ".join(label for _, label in DATA_PATH_COLUMNS) + " |", "|" + "---|" * len(DATA_PATH_COLUMNS)]
        for row in bench["rows"]:
            out.append("| " + " | ".join(_data_cell(key, row.get(key)) for key, _ in DATA_PATH_COLUMNS) + " |")
        out += ["", "Linear fit against cells, extrapolated (targets: setup ≤ 30 s, ≤ 2 GiB per rank "
                "beyond the memory map):", "",
                "| ranks | column | per 1M cells | intercept | at 27.5M cells | target | meets |", "|---|---|---|---|---|---|---|"]
        for fit in bench.get("fits", []):
            meets = "" if fit.get("meets_target") is None else ("yes" if fit["meets_target"] else "**no**")
            out.append(f"| {fit['ranks']} | {fit['column']} | {_cell(fit['per_million_cells'])} | "
                       f"{_cell(fit['intercept'])} | {fit['extrapolated']:.2f} | {_cell(fit.get('target'))} | {meets} |")
        out.append("")
    ratio = data.get("loader_vs_model") or {}
    if ratio.get("error"):
        out += ["### Loader against the model", "", f"Failed: {ratio['error']}", ""]
    elif ratio.get("rows"):
        settings = ratio.get("settings", {})
        out += ["### Loader against the model", "",
                f"`{ratio['argv']}` — {ratio['seconds']:.1f} s. Model: forward + backward of the MGM objective, "
                f"{settings.get('size')} cell encoder, {settings.get('precision')}, batches of "
                f"{settings.get('model_batch')} cells; loader: masked pre-training batches of "
                f"{settings.get('loader_batch')} cells over {settings.get('corpus_cells'):,} cells; lengths "
                f"{settings.get('lengths')}.", "",
                *_plain_table([{k: row[k] for k in ("side", "setting", "cells", "cells_per_s", "tokens_per_s")}
                               for row in ratio["rows"]]), "",
                f"Loader / model (slowest loader over fastest model, {' vs '.join(ratio['ratio_min_between'])}): "
                f"**{ratio['ratio_min']:,.1f}×** (target ≥ {ratio['target']:.0f}×: "
                f"{'met' if ratio['meets_target'] else 'not met'}).", ""]
    return out


def _data_cell(key: str, value) -> str:
    if isinstance(value, (int, float)) and key.startswith(("cells_per_s", "tokens_per_s", "cells")):
        return f"{value:,.0f}"
    return _cell(value)


def few_shot_panels(quality: dict) -> dict[str, dict[str, list[dict]]]:
    """{dataset: {"LangCell": rows, "logistic regression": rows}} for datasets with few-shot LangCell rows."""
    panels = {}
    for name in quality["datasets"]:
        langcell = [r for r in _rows(quality, "few-shot LangCell") if r["dataset"] == name]
        if langcell:
            panels[name] = {"LangCell": langcell,
                            "logistic regression": [r for r in _rows(quality, "few-shot") if r["dataset"] == name]}
    return panels


def _errorbar_by_k(axes, rows: list[dict], label: str) -> None:
    """Mean macro-F1 ± sd over seeds against k (x axis: k cells per class)."""
    axes.errorbar([r["k"] for r in rows], [r["macro_f1"] for r in rows], [r["macro_f1_sd"] for r in rows],
                  marker="o", capsize=3, label=label)
    axes.set_xlabel("k cells per class")
    axes.legend(fontsize=7)


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
        methods = headline_columns(quality)
        figure, axes = plt.subplots(figsize=(max(6, 1.4 * len(names)), 4))
        width = 0.8 / len(methods)
        for i, (label, setting, match) in enumerate(methods):
            values = [(_find(quality, n, setting, **match) or {}).get("macro_f1", np.nan) for n in names]
            axes.bar(np.arange(len(names)) + i * width, values, width, label=label)
        shown = [n if group_of(quality, n) == NEVER_SEEN else f"{n} (labels seen)" for n in names]
        axes.set_xticks(np.arange(len(names)) + 0.4 - width / 2, shown, rotation=20, ha="right", fontsize=8)
        axes.set_ylabel("macro-F1 (test split)")
        axes.legend(fontsize=7)
        save(figure, "quality_macro_f1.png")
        figure, axes = plt.subplots(figsize=(6, 4))
        for name in names:
            _errorbar_by_k(axes, [r for r in _rows(quality, "few-shot") if r["dataset"] == name], name)
        axes.set_ylabel("macro-F1 (few-shot logistic regression)")
        save(figure, "few_shot.png")
        panels = few_shot_panels(quality)
        if panels:
            columns = min(4, len(panels))
            figure, grid = plt.subplots((len(panels) + columns - 1) // columns, columns, squeeze=False,
                                        figsize=(3.2 * columns, 2.8 * ((len(panels) + columns - 1) // columns)))
            for axes, (name, series) in zip(grid.flat, panels.items()):
                for label, rows in series.items():
                    _errorbar_by_k(axes, rows, label)
                axes.set_title(name, fontsize=9)
                axes.set_ylabel("macro-F1")
            for axes in list(grid.flat)[len(panels):]:
                axes.set_visible(False)
            save(figure, "few_shot_langcell.png")
        figure, axes = plt.subplots(figsize=(6, 4))
        for name in names:
            rows = [r for r in _rows(quality, "zero-shot") if r["dataset"] == name]
            seen = group_of(quality, name) != NEVER_SEEN
            axes.plot([r["alpha"] for r in rows], [r["accuracy"] for r in rows], marker="o",
                      linestyle="--" if seen else "-", label=f"{name} (labels seen)" if seen else name)
        axes.set_xlabel("α (CTC weight of the blend)")
        axes.set_ylabel("zero-shot accuracy")
        axes.legend(fontsize=7)
        save(figure, "zero_shot_alpha.png")
    if speed:
        bars = speed_bars(speed)
        labels, ratios = list(bars), list(bars.values())
        if ratios:
            figure, axes = plt.subplots(figsize=(7, 0.35 * len(ratios) + 1.5))
            axes.barh(labels, ratios)
            axes.axvline(1.0, color="black", lw=0.8)
            axes.set_xlabel("speed vs the benchmark's baseline (×)")
            axes.tick_params(axis="y", labelsize=7)
            save(figure, "speed.png")
        panels = scaling_panels(speed)
        if panels:
            figure, grid = plt.subplots(1, len(panels), squeeze=False, figsize=(3.6 * len(panels), 3.2))
            for axes, (title, x, y, lines) in zip(grid.flat, panels):
                for case, points in lines.items():
                    axes.plot(*zip(*sorted(points)), marker="o", label=case)
                axes.set_title(title, fontsize=8)
                axes.set_xlabel(x)
                axes.set_ylabel(y)
                axes.legend(fontsize=7)
            save(figure, "speed_scaling.png")
    return written
