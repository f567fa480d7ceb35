"""GLUE metrics: each task's official metric, computed exactly across batches and workers.

Accuracy, F1 and Matthews correlation depend on the predictions only through the confusion matrix, so validation
logs per-batch confusion counts (which can be summed over batches and all-reduced over workers) and the metric is
computed once, at the end, by scikit-learn on label arrays rebuilt from those counts. Pearson and Spearman
correlations need every prediction (Spearman ranks them all), so for regression tasks the predictions themselves
are gathered.

The ``glue`` value is the GLUE benchmark's task score: the mean of the task's official metrics
(``fairseq_npu.glue_tasks``: F1 and accuracy for MRPC and QQP, Pearson and Spearman for STS-B, one metric for the
others), as in the GLUE paper. All values are percentages.
"""

import warnings
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from fairseq_npu.glue_tasks import GlueTask


# ------------------------------------------------------------------------------------------------------------------
# classification: confusion counts, then scikit-learn


def confusion_counts(preds, targets, num_classes: int) -> np.ndarray:
    """Flattened confusion matrix (row = true class, column = predicted class) of integer arrays."""
    preds = np.asarray(preds, dtype=np.int64).reshape(-1)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if preds.shape != targets.shape:
        raise ValueError(f"{preds.size} predictions for {targets.size} targets")
    return np.bincount(targets * num_classes + preds, minlength=num_classes * num_classes)


def _labels_from_confusion(confusion: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    confusion = np.asarray(confusion).reshape(-1)
    k = int(round(np.sqrt(confusion.size)))
    if k * k != confusion.size:
        raise ValueError(f"a confusion matrix has k*k cells, got {confusion.size}")
    counts = np.rint(confusion).astype(np.int64)  # all-reduce may hand them back as floats
    cells = np.repeat(np.arange(k * k), counts)
    return cells // k, cells % k  # y_true, y_pred


def classification_metrics(confusion, positive_class: Optional[int] = None) -> Dict[str, float]:
    """accuracy, mcc and (given the positive class index of a binary task) f1, in percent."""
    from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

    y_true, y_pred = _labels_from_confusion(confusion)
    if y_true.size == 0:
        return {}
    out = {
        "accuracy": 100.0 * accuracy_score(y_true, y_pred),
        "mcc": 100.0 * matthews_corrcoef(y_true, y_pred),
    }
    if positive_class is not None:
        out["f1"] = 100.0 * f1_score(y_true, y_pred, pos_label=positive_class, average="binary", zero_division=0.0)
    return out


# ------------------------------------------------------------------------------------------------------------------
# regression: scipy on every prediction


def correlation_metrics(preds: Sequence[float], targets: Sequence[float]) -> Dict[str, float]:
    """pearson and spearman in percent; nan where undefined (fewer than 2 values, or a constant input)."""
    from scipy.stats import pearsonr, spearmanr

    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    targets = np.asarray(targets, dtype=np.float64).reshape(-1)
    if preds.shape != targets.shape:
        raise ValueError(f"{preds.size} predictions for {targets.size} targets")
    if preds.size < 2:
        return {"pearson": float("nan"), "spearman": float("nan")}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input yields nan with a warning; nan says it already
        return {
            "pearson": 100.0 * float(pearsonr(preds, targets)[0]),
            "spearman": 100.0 * float(spearmanr(preds, targets)[0]),
        }


def _metric_names(task: Optional[GlueTask], regression: bool) -> Tuple[str, ...]:
    """The task's official metrics; without a known task, accuracy or (regression) Pearson and Spearman."""
    if task is not None:
        return task.metrics
    return ("pearson", "spearman") if regression else ("accuracy",)


def glue_score(task: Optional[GlueTask], values: Dict[str, float], regression: bool) -> Optional[float]:
    """The task score: mean of the task's official metrics, None until all of them are known."""
    names = _metric_names(task, regression)
    if not all(n in values for n in names):
        return None
    return float(np.mean([values[n] for n in names]))


def official_metric_name(task: Optional[GlueTask], regression: bool) -> str:
    return "/".join(_metric_names(task, regression))
