"""Classification metrics from a confusion matrix, computed once and logged the same way for every model.

Spark aggregates (true class, predicted class) counts — a k x k table whatever the number of rows — and everything
else (accuracy, balanced accuracy, per-class precision/recall/F1, macro F1) follows from it on the driver. ROC AUC
needs scores and is computed for binary problems only, where it is unambiguous.
"""

from __future__ import annotations

import numpy as np


def confusion(df, label: str, prediction: str, classes: list[str]) -> np.ndarray:
    """``cm[i, j]`` = rows of true class ``classes[i]`` predicted as ``classes[j]``."""
    index = {c: i for i, c in enumerate(classes)}
    cm = np.zeros((len(classes), len(classes)), dtype=np.int64)
    for row in df.groupBy(label, prediction).count().collect():
        t, p = row[label], row[prediction]
        if t in index and p in index:
            cm[index[t], index[p]] += row["count"]
    return cm


def from_confusion(cm: np.ndarray, classes: list[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, macro F1 and per-class precision, recall, F1 and support."""
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = support > 0
    out = {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "balanced_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "f1_macro": float(f1[present].mean()) if present.any() else 0.0,
    }
    for i, c in enumerate(classes):
        out[f"precision_{c}"] = float(precision[i])
        out[f"recall_{c}"] = float(recall[i])
        out[f"f1_{c}"] = float(f1[i])
        out[f"support_{c}"] = float(support[i])
    return out


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with ties counted half); ``labels`` true for the positive class."""
    labels = np.asarray(labels, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    s = scores[order]
    # average ranks over ties
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends - 1) / 2.0 + 1.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def plot_confusion(cm: np.ndarray, classes: list[str], title: str):
    """A confusion-matrix figure (counts, and the row-normalised recall as colour)."""
    # a bare Figure, not pyplot: no global backend switch (a notebook keeps its inline plots), nothing to close
    from matplotlib.figure import Figure

    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig = Figure(figsize=(1.2 * len(classes) + 2.5, 1.1 * len(classes) + 2))
    ax = fig.subplots()
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(classes)):
        for j in range(len(classes)):
            ax.text(j, i, f"{cm[i, j]:,}", ha="center", va="center",
                    color="white" if norm[i, j] > 0.5 else "black", fontsize=9)
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    fig.tight_layout()
    return fig
