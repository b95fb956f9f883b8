"""Embedding and retrieval rows of the quality suite (shipped checkpoint, held-out test cells).

Per dataset, on its fixed test split (the cells every other row is scored on):

- label separation of ``X_langcell``: silhouette by label (cosine) and kNN label purity (k = 15);
- cell <-> text retrieval against the distinct class texts of the dataset's labels ("cell type:
  X. <definition>; ", as zero-shot; labels sharing one CL term share one text): cell→text
  recall@1/5/10 (only k < the number of texts), text→cell recall@1/5 and precision@5, ties
  counted in expectation (:func:`lightning_langcell.inference.retrieval.retrieval_metrics`);
- the same label scores for a baseline embedding: PCA-50 of log1p CP10k (fitted on the train split).

Across datasets (batch = dataset, label = Cell Ontology id), on the test splits of the three PBMC
sets: silhouette by label and by batch, kNN label purity and kNN batch mixing, for ``X_langcell``
and for PCA-50 of log1p CP10k over the genes the three sets share (CP10k over those genes;
PCA fitted on their train splits).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

from benchmarks.baselines import PCA_COMPONENTS, log1p_cp10k

PBMC_SETS = ("pbmc3k", "garnett_pbmc_facs", "pbmc68k_reduced")
LABEL_ID = "cell_type_ontology_term_id"
RETRIEVAL_KEYS = ("cell_to_text_recall_at_1", "cell_to_text_recall_at_5", "cell_to_text_recall_at_10",
                  "text_to_cell_recall_at_1", "text_to_cell_recall_at_5", "text_to_cell_precision_at_5")


def pca_embedding(train: np.ndarray, test: np.ndarray, seed: int = 0, components: int = PCA_COMPONENTS) -> np.ndarray:
    """PCA (randomised, fitted on ``train``) projection of ``test`` (log1p CP10k rows)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(components, train.shape[0] - 1, train.shape[1]), svd_solver="randomized",
              random_state=seed).fit(train)
    return pca.transform(test)


def _rounded(scores: dict) -> dict:
    return {key: round(float(value), 4) for key, value in scores.items()}


def dataset_embedding_rows(data, embeddings: np.ndarray, expression: np.ndarray, model, tokenizer,
                           label: str, checkpoint_name: str) -> list[dict]:
    """Rows for one ``benchmarks.quality.Dataset``: X_langcell (label scores + retrieval) and PCA."""
    import torch

    from lightning_langcell.inference.classes import candidate_classes, truth_indices
    from lightning_langcell.inference.embedding_metrics import embedding_scores
    from lightning_langcell.inference.retrieval import deduplicate_texts, embed_texts, retrieval_metrics

    labels = data.labels[data.test]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        classes = candidate_classes(None, data.adata.obs, label, allow_missing_definitions=True)
    texts, text_of_cell = deduplicate_texts(classes.texts, truth_indices(labels, classes))
    text_embeddings = embed_texts(model, texts, tokenizer)
    retrieval = retrieval_metrics(torch.as_tensor(embeddings[data.test]), text_embeddings, text_of_cell)
    common = {"dataset": data.name, "setting": "embedding", "n_test": int(len(data.test))}
    ours = {**common, "method": f"X_langcell ({checkpoint_name})",
            **_rounded(embedding_scores(embeddings[data.test], labels=labels)),
            **{key: round(retrieval[key], 4) for key in RETRIEVAL_KEYS if key in retrieval}, "n_texts": len(texts)}
    baseline = pca_embedding(expression[data.train], expression[data.test])
    pca = {**common, "method": "PCA-50 of log1p CP10k (fitted on train)",
           **_rounded(embedding_scores(baseline, labels=labels))}
    return [ours, pca]


def pbmc_batch_rows(datasets: dict, embeddings: dict, checkpoint_name: str) -> list[dict]:
    """Cross-dataset rows (batch = dataset) over the PBMC sets present in ``datasets``."""
    from lightning_langcell.inference.embedding_metrics import embedding_scores

    names = [name for name in PBMC_SETS if name in datasets and LABEL_ID in datasets[name].adata.obs]
    if len(names) < 2:
        return []
    labels = np.concatenate([datasets[n].adata.obs[LABEL_ID].astype(str).to_numpy()[datasets[n].test] for n in names])
    batches = np.concatenate([np.full(len(datasets[n].test), n, dtype=object) for n in names])
    ours = np.concatenate([embeddings[n][datasets[n].test] for n in names])
    shared = sorted(set.intersection(*(set(datasets[n].adata.var["ensembl_id"].astype(str)) for n in names)))
    train_parts, test_parts = [], []
    for name in names:
        data = datasets[name]
        columns = data.adata.var["ensembl_id"].astype(str).reset_index(drop=True)
        position = {gene: i for i, gene in columns.items()}
        expression = log1p_cp10k(sp.csr_matrix(data.adata.X)[:, [position[g] for g in shared]])
        train_parts.append(expression[data.train])
        test_parts.append(expression[data.test])
    baseline = pca_embedding(np.concatenate(train_parts), np.concatenate(test_parts))
    common = {"dataset": " + ".join(names), "setting": "embedding across datasets", "n_test": int(len(labels)),
              "label": LABEL_ID, "batch": "dataset", "shared_genes": len(shared)}
    return [
        {**common, "method": f"X_langcell ({checkpoint_name})",
         **_rounded(embedding_scores(ours, labels=labels, batches=batches))},
        {**common, "method": "PCA-50 of log1p CP10k over shared genes (fitted on train)",
         **_rounded(embedding_scores(baseline, labels=labels, batches=batches))},
    ]
