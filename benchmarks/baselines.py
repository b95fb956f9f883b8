"""Supervised reference classifiers of the quality benchmark (scikit-learn, benchmark-only extra).

All take a training matrix ``X_train`` [n_train, features], its labels [n_train] (strings) and a
test matrix ``X_test`` [n_test, features] and return predicted labels [n_test] (strings):

- ``majority``: the most frequent training label for every cell (ties: first in sorted order);
- ``logistic_regression``: multinomial logistic regression (L2, C = 1, lbfgs, bounded
  ``max_iter``) on log1p(CP10k) counts, or on embeddings;
- ``knn_pca``: k-nearest neighbours (k = 10, Euclidean, distance-weighted) on the first 50
  principal components (fitted on the training cells) of log1p(CP10k) counts.

scikit-learn is imported inside this package only (``pip install -e .[benchmarks]``).
"""

from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp

MAX_ITER = 300
PCA_COMPONENTS = 50
KNN_NEIGHBOURS = 10


def log1p_cp10k(counts) -> np.ndarray:
    """log(1 + counts / total · 10⁴) per cell; dense float32 [cells, genes] (cells with 0 counts stay 0)."""
    matrix = sp.csr_matrix(counts, dtype=np.float64)
    totals = np.asarray(matrix.sum(axis=1)).ravel()
    scale = np.divide(1e4, totals, out=np.zeros_like(totals), where=totals > 0)
    normalised = sp.diags(scale) @ matrix
    normalised.data = np.log1p(normalised.data)
    return normalised.toarray().astype(np.float32)


def majority(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray) -> np.ndarray:
    """The most frequent training label for every test cell."""
    labels, counts = np.unique(np.asarray(y_train, dtype=object).astype(str), return_counts=True)
    return np.full(len(X_test), labels[int(np.argmax(counts))], dtype=object)


def _single_class(y_train: np.ndarray, n_test: int) -> np.ndarray | None:
    labels = np.unique(np.asarray(y_train).astype(str))
    return np.full(n_test, labels[0], dtype=object) if len(labels) == 1 else None


def logistic_regression(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """Multinomial L2 logistic regression (C = 1, lbfgs, at most ``MAX_ITER`` iterations)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    trivial = _single_class(y_train, len(X_test))
    if trivial is not None:
        return trivial
    model = LogisticRegression(C=1.0, max_iter=MAX_ITER, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        model.fit(X_train, np.asarray(y_train).astype(str))
    return model.predict(X_test).astype(object)


def knn_pca(X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, seed: int = 0) -> np.ndarray:
    """kNN (k = ``KNN_NEIGHBOURS``, distance-weighted) on ``PCA_COMPONENTS`` PCs fitted on the training cells."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier

    trivial = _single_class(y_train, len(X_test))
    if trivial is not None:
        return trivial
    components = min(PCA_COMPONENTS, X_train.shape[0] - 1, X_train.shape[1])
    pca = PCA(n_components=components, svd_solver="randomized", random_state=seed).fit(X_train)
    knn = KNeighborsClassifier(n_neighbors=min(KNN_NEIGHBOURS, X_train.shape[0]), weights="distance")
    knn.fit(pca.transform(X_train), np.asarray(y_train).astype(str))
    return knn.predict(pca.transform(X_test)).astype(object)


BASELINES = {"majority class": majority, "logistic regression (log1p CP10k)": logistic_regression,
             "kNN on PCA-50 (log1p CP10k)": knn_pca}


def label_metrics(truth: np.ndarray, predicted: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro-F1, weighted-F1 of label arrays [N] over ``classes``.

    Uses the package's metric definitions (:mod:`lightning_langcell.inference.metrics`); a
    prediction outside ``classes`` (e.g. an unscored cell) counts as wrong, as an extra class.
    """
    from lightning_langcell.inference.metrics import classification_scores

    index = {name: i for i, name in enumerate(classes)}
    extra = len(classes)
    target = np.array([index[str(t)] for t in truth], dtype=np.int64)
    preds = np.array([index.get(str(p), extra) for p in predicted], dtype=np.int64)
    values = classification_scores(target, preds, len(classes) + 1)
    return {name: round(float(values[name]), 4)
            for name in ("accuracy", "balanced_accuracy", "macro_f1", "weighted_f1")}
