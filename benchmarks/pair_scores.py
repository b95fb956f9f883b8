"""Every (cell, class) score of the shipped checkpoint once: CTC probabilities and raw match probabilities.

The matcher scores each (cell, class) pair alone and CTC is a softmax over cell–text logits, so
any subset of the classes (fewer candidates, a left-out type, a top-k rule) is scored exactly from
these two arrays without another model pass (:mod:`benchmarks.class_scaling_quality`,
:mod:`benchmarks.unknown_score_selection`).
"""

from __future__ import annotations

import warnings

import numpy as np

from benchmarks.shipped_checkpoint import CHECKPOINT


def pair_scores(adata, term_ids: list[str], model: str = str(CHECKPOINT), batch_size: int = 32,
                text_cache=True) -> dict:
    """{"rows": scored obs positions [n], "ctc_probs", "match_prob": [n, C]} of the cells against
    ``term_ids`` (exact mode, all pairs; ``text_cache`` as in ``annotate``)."""
    import torch

    from lightning_langcell.data.collate import pad_token_lists
    from lightning_langcell.inference.annotate import (_cell_tokenizer, build_scorer, load_zero_shot_model,
                                                       tokenize_cells)
    from lightning_langcell.inference.classes import candidate_classes
    from lightning_langcell.tokenization import CLS_ID

    network, text_tokenizer, vocabulary = load_zero_shot_model(model)
    max_length = network.config.cell_max_length()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scorer = build_scorer(network, candidate_classes(term_ids), text_tokenizer, torch.device("cpu"),
                              text_cache)
        rows, tokens = tokenize_cells(adata, _cell_tokenizer(vocabulary, max_length, False))
    ctc, match = [], []
    for start in range(0, len(tokens), batch_size):
        out = scorer(*pad_token_lists(tokens[start:start + batch_size], CLS_ID, max_length))
        ctc.append(out.ctc_probs.float().numpy())
        match.append(out.match_prob.float().numpy())
    return {"rows": rows, "ctc_probs": np.concatenate(ctc), "match_prob": np.concatenate(match)}
