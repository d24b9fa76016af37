"""Classification metrics from logits: pure functions, scikit-learn underneath.

One module for every caller (training's model selection, the final test
report, ``peftsent.eval``, merge parity), so every number is computed alike.
"""

from __future__ import annotations

import numpy as np

#: metrics that are plain floats (the rest: confusion_matrix, count)
SCALAR_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1", "weighted_f1", "roc_auc", "ece", "log_loss",
                  "mae", "off_by_one")
#: metrics of two classes only (the positive class's): other label sets select on macro_f1 instead
BINARY_ONLY_METRICS = ("precision", "recall", "f1")
#: metrics the Trainer reports on validation, usable as ``train.metric_for_best_model`` and ``tune.metric``
SELECTION_METRICS = ("accuracy", "precision", "recall", "f1", "macro_f1", "weighted_f1", "roc_auc", "ece", "log_loss",
                     "mae", "off_by_one", "loss")
#: selection metrics where a lower value is better (greater_is_better defaults to False for them)
LOWER_IS_BETTER = ("loss", "log_loss", "ece", "mae")


def greater_is_better(metric: str) -> bool:
    """Direction of a selection metric (``train.metric_for_best_model``): False for loss, log_loss and ece,
    True otherwise; an ``eval_`` prefix is ignored."""
    return str(metric).removeprefix("eval_") not in LOWER_IS_BETTER


def softmax(logits: np.ndarray) -> np.ndarray:
    """Class probabilities. ``logits``: (n, num_labels) -> (n, num_labels) float64, rows sum to 1."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def reliability_bins(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> list[dict]:
    """Equal-width confidence bins of a reliability diagram (Guo et al. 2017, "On Calibration of Modern NNs").

    ``probs``: (n, num_labels); ``labels``: (n,) ints. Confidence = max class probability.
    Returns one dict per bin: ``lower``, ``upper`` (confidence edges), ``count`` (reviews),
    ``confidence`` (mean, None when empty), ``accuracy`` (fraction correct, None when empty).
    """
    probs = np.asarray(probs, dtype=np.float64)
    confidence = probs.max(axis=-1)
    correct = (probs.argmax(axis=-1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, n_bins - 1)
    out = []
    for b in range(n_bins):
        mask = bins == b
        out.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": int(mask.sum()),
                    "confidence": float(confidence[mask].mean()) if mask.any() else None,
                    "accuracy": float(correct[mask].mean()) if mask.any() else None})
    return out


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, n_bins: int = 15) -> float:
    """ECE with ``n_bins`` equal-width confidence bins (Guo et al. 2017, "On Calibration of Modern NNs"):
    sum over bins of (share of reviews) x |accuracy - mean confidence|.

    ``probs``: (n, num_labels); ``labels``: (n,) ints. Returns a fraction in [0, 1].
    """
    n = max(len(labels), 1)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(probs, labels, n_bins) if b["count"]))


def is_ordered(label_names) -> bool:
    """Whether classes are ordered grades (every name an integer, e.g. star ratings ``1``..``5``): then
    mean absolute error and off-by-one accuracy are reported, in units of the integers."""
    return bool(label_names) and len(label_names) > 2 and all(str(n).strip().lstrip("-").isdigit()
                                                               for n in label_names)


def classification_metrics(labels, logits, ece_bins: int = 15, label_names=None) -> dict:
    """Metrics of sentiment predictions over ``num_labels`` classes.

    ``labels``: (n,) class ids; ``logits``: (n, num_labels) float; ``label_names``: the class names in id
    order (default ``0``, ``1``, ...). Two classes (binary): accuracy, precision / recall / f1 of the
    positive class (1), macro_f1, roc_auc (None when only one class is present), ece, log_loss (nats per
    review), confusion_matrix ``[[tn, fp], [fn, tp]]`` and count. More classes: accuracy, macro_f1,
    weighted_f1, roc_auc (one-vs-rest, macro over the classes present with both outcomes), ece, log_loss,
    confusion_matrix (rows gold, columns predicted, in id order), count, ``per_class`` ({name: precision,
    recall, f1, support}) and, for integer names (:func:`is_ordered`), ``mae`` and ``off_by_one`` (share of
    predictions at most one grade away).
    """
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        log_loss,
        precision_recall_fscore_support,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    labels = np.asarray(labels).astype(int)
    probs = softmax(logits)
    preds = probs.argmax(axis=-1)
    k = probs.shape[-1]
    classes = list(range(k))
    if k == 2:
        both = len(np.unique(labels)) > 1
        return {
            "accuracy": float(accuracy_score(labels, preds)),
            "precision": float(precision_score(labels, preds, zero_division=0)),
            "recall": float(recall_score(labels, preds, zero_division=0)),
            "f1": float(f1_score(labels, preds, zero_division=0)),
            "macro_f1": float(f1_score(labels, preds, average="macro", zero_division=0)),
            "roc_auc": float(roc_auc_score(labels, probs[:, 1])) if both else None,
            "ece": expected_calibration_error(probs, labels, ece_bins),
            "log_loss": float(log_loss(labels, probs, labels=[0, 1])),
            "confusion_matrix": confusion_matrix(labels, preds, labels=[0, 1]).tolist(),
            "count": int(len(labels)),
        }
    names = [str(n) for n in label_names] if label_names is not None else [str(i) for i in classes]
    precision, recall, f1, support = precision_recall_fscore_support(labels, preds, labels=classes, zero_division=0)
    aucs = [roc_auc_score(labels == c, probs[:, c]) for c in classes if 0 < (labels == c).sum() < len(labels)]
    result = {
        "accuracy": float(accuracy_score(labels, preds)),
        "macro_f1": float(f1_score(labels, preds, labels=classes, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(labels, preds, labels=classes, average="weighted", zero_division=0)),
        "roc_auc": float(np.mean(aucs)) if aucs else None,
        "ece": expected_calibration_error(probs, labels, ece_bins),
        "log_loss": float(log_loss(labels, probs, labels=classes)),
        "confusion_matrix": confusion_matrix(labels, preds, labels=classes).tolist(),
        "count": int(len(labels)),
        "per_class": {name: {"precision": float(precision[c]), "recall": float(recall[c]), "f1": float(f1[c]),
                             "support": int(support[c])} for c, name in enumerate(names)},
    }
    if is_ordered(names):
        grades = np.array([int(n) for n in names])
        distance = np.abs(grades[preds] - grades[labels])
        result["mae"] = float(distance.mean())
        result["off_by_one"] = float((distance <= 1).mean())
    return result


def trainer_metrics(ece_bins: int = 15, label_names=None):
    """A ``compute_metrics`` for ``transformers.Trainer``: the scalar metrics of an EvalPrediction."""

    def compute(prediction) -> dict:
        logits = prediction.predictions[0] if isinstance(prediction.predictions, tuple) else prediction.predictions
        result = classification_metrics(prediction.label_ids, logits, ece_bins, label_names)
        return {k: result[k] for k in SCALAR_METRICS if result.get(k) is not None}

    return compute


def per_class_table(metrics: dict) -> str:
    """A Markdown table of ``per_class`` metrics (precision, recall, F1, support), one row per class."""
    lines = ["| class | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    for name, row in metrics.get("per_class", {}).items():
        lines.append(f"| {name} | {row['precision']:.4f} | {row['recall']:.4f} | {row['f1']:.4f} | {row['support']} |")
    return "\n".join(lines)


def confusion_table(matrix, label_names) -> str:
    """A Markdown confusion matrix: rows gold class, columns predicted class, counts of reviews."""
    names = [str(n) for n in label_names]
    lines = ["| gold \\ predicted | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for name, row in zip(names, matrix):
        lines.append(f"| {name} | " + " | ".join(str(v) for v in row) + " |")
    return "\n".join(lines)


def mcnemar_p(a_correct, b_correct) -> float:
    """McNemar's exact test (two-sided) of two classifiers scored on the same reviews: the binomial test of
    the reviews only A gets right against those only B gets right. ``a_correct``, ``b_correct``: (n,) bool.
    Returns the p-value (1.0 when they never disagree)."""
    from scipy.stats import binomtest

    a_ok, b_ok = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    a_wins, b_wins = int((a_ok & ~b_ok).sum()), int((~a_ok & b_ok).sum())
    return float(binomtest(a_wins, a_wins + b_wins, 0.5).pvalue) if a_wins + b_wins else 1.0


def format_table(rows: dict[str, dict]) -> str:
    """A Markdown table of scalar metrics, one column per named result (e.g. validation, test)."""
    names = list(rows)
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for metric in (*SCALAR_METRICS, "count"):
        if all(rows[name].get(metric) is None for name in names) and metric in (*BINARY_ONLY_METRICS, "weighted_f1", "mae", "off_by_one"):
            continue  # metrics of another label set (binary tables stay as they were)
        cells = []
        for name in names:
            value = rows[name].get(metric)
            cells.append("n/a" if value is None else (str(value) if metric == "count" else f"{value:.4f}"))
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
