"""Classification metrics a clinician asks for: per-class sensitivity and specificity, ROC-AUC."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(y_true: np.ndarray, probs: np.ndarray, labels: Sequence[str], y_pred: np.ndarray | None = None) -> dict:
    """Accuracy, per-class precision/recall/F1/sensitivity/specificity/ROC-AUC, confusion matrix.

    Decisions are the argmax of `probs` unless `y_pred` gives them (an operating point's).
    ROC-AUC is one-vs-rest per class (and macro-averaged); it is null for a class with no
    positives or no negatives in `y_true`, where it is undefined.
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, roc_auc_score

    k = len(labels)
    y_pred = probs.argmax(axis=1) if y_pred is None else np.asarray(y_pred)
    cm = confusion_matrix(y_true, y_pred, labels=list(range(k)))
    precision, recall, f1, support = precision_recall_fscore_support(y_true, y_pred, labels=list(range(k)), zero_division=0)
    total = cm.sum()
    per_class = {}
    aucs = []
    for i, label in enumerate(labels):
        tp = cm[i, i]
        fp = cm[:, i].sum() - tp
        fn = cm[i, :].sum() - tp
        tn = total - tp - fp - fn
        positives = y_true == i
        auc = None
        if 0 < positives.sum() < len(y_true):
            auc = float(roc_auc_score(positives, probs[:, i]))
            aucs.append(auc)
        per_class[label] = {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
            "specificity": float(tn / (tn + fp)) if tn + fp else None,
            "roc_auc": auc,
            "support": int(support[i]),
        }
    return {
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else None,
        "n": int(len(y_true)),
        "macro_f1": float(np.mean(f1)),
        "roc_auc_macro": float(np.mean(aucs)) if aucs else None,
        "per_class": per_class,
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
    }
