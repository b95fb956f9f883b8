"""Check a whole corpus directory and report what was checked: ``verify_corpus(path)``.

The ``verify`` command of the CLI calls it. Checks, in order: the manifest and every file's
size, dtype and shape (milliseconds); the offsets (rising, ending at the token count); every
file's BLAKE3 digest against the manifest (one read of the corpus; skippable); the token ids
against the vocabulary and the categorical codes against their categories (one more read).

The cost of each check, in reads of the corpus, is measured by
``python -m benchmarks.corpus_verify_benchmark`` (speed suite). From a cold disk the disk's
speed bounds the passes that read the whole corpus.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lightning_langcell.data.corpus import CellCorpus
from lightning_langcell.errors import CorpusError

FIX = ("Re-create it from its input files (see manifest.json 'sources') with "
       "`python -m lightning_langcell tokenize ... --output DIR --overwrite`.")


def verify_corpus(path: str | os.PathLike, check_digests: bool = True) -> dict[str, Any]:
    """Check corpus ``path``; return a report, or raise :class:`CorpusError` listing every problem.

    Report keys: ``path``, ``cells``, ``tokens``, ``bytes`` (all files), ``digests_checked``,
    ``digests_ok`` (None when skipped), ``token_id_range`` ([low, high]), ``vocab_size``,
    ``id_range_ok``, ``problems`` (list of str), ``seconds`` and ``digest_mb_per_s``. The
    :class:`CorpusError` carries the same report as ``error.report``.
    """
    started = time.perf_counter()
    corpus = CellCorpus(path, verify_digests=False, check_ids=False)  # structure: raises at once
    files = corpus.manifest["files"]
    report: dict[str, Any] = {
        "path": str(corpus.path),
        "cells": len(corpus),
        "tokens": int(corpus.manifest["n_tokens"]),
        "bytes": int(sum(info["bytes"] for info in files.values())),
        "digests_checked": check_digests,
        "digests_ok": None,
        "vocab_size": int(corpus.manifest["vocab_size"]),
        "problems": [],
    }
    if check_digests:
        hashing = time.perf_counter()
        digest_problems = corpus.digest_problems()
        seconds = time.perf_counter() - hashing
        report["digests_ok"] = not digest_problems
        report["digest_mb_per_s"] = round(report["bytes"] / 1e6 / max(seconds, 1e-9), 1)
        report["problems"] += digest_problems
    low, high = corpus.token_id_range()
    id_problem = corpus.id_range_problem(low, high)
    report["token_id_range"] = [low, high]
    report["id_range_ok"] = id_problem is None
    report["problems"] += [id_problem] if id_problem else []
    report["problems"] += _code_problems(corpus)
    report["seconds"] = round(time.perf_counter() - started, 3)
    if report["problems"]:
        error = CorpusError(f"Corpus {corpus.path} is damaged: {'; '.join(report['problems'])}.", FIX)
        error.report = report
        raise error
    return report


def _code_problems(corpus: CellCorpus) -> list[str]:
    """Categorical columns whose codes point outside their categories."""
    problems = []
    for name in corpus.columns:
        if corpus.column_kind(name) != "categorical":
            continue
        try:
            corpus.column(name)  # pandas refuses codes outside [-1, n_categories)
        except ValueError as error:
            problems.append(f"codes of column {name!r} are outside its categories ({error})")
    return problems
