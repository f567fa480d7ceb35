"""GLUE metrics: which metric each task is scored with, and how to compute it exactly across batches and workers.

Accuracy, F1 and Matthews correlation depend on the predictions only through the confusion matrix, so validation
logs per-batch confusion counts (which can be summed over batches and all-reduced over workers) and the metric is
computed once, at the end, by scikit-learn on label arrays rebuilt from those counts. Pearson and Spearman
correlations need every prediction (Spearman ranks them all), so for regression tasks the predictions themselves
are gathered.

The ``glue`` value is the GLUE benchmark's task score: the task's metric, or the mean of its two metrics for
MRPC and QQP (F1, accuracy) and STS-B (Pearson, Spearman), as in the GLUE paper. All values are percentages.
"""

import re
import warnings
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class GlueTask:
    name: str  # the GLUE spelling, e.g. "SST-2"
    metrics: Tuple[str, ...]  # the official metric(s); "glue" is their mean
    regression: bool = False
    # leaderboard submission file name for each test split as fairseq binarizes it
    submission_files: Tuple[Tuple[str, str], ...] = ()

    def submission_file(self, split: str) -> str:
        """File name for ``split`` in a submission archive (test splits), else ``TASK.split.tsv``."""
        return dict(self.submission_files).get(split, f"{self.name}.{split}.tsv")


def _task(name, metrics, regression=False, files=None):
    return GlueTask(name, tuple(metrics), regression, tuple((files or {"test": f"{name}.tsv"}).items()))


GLUE_TASKS: Dict[str, GlueTask] = {
    t.name: t
    for t in (
        _task("CoLA", ["mcc"]),
        _task("SST-2", ["accuracy"]),
        _task("MRPC", ["f1", "accuracy"]),
        _task("STS-B", ["pearson", "spearman"], regression=True),
        _task("QQP", ["f1", "accuracy"]),
        # fairseq's GLUE preprocessing binarizes test_matched as "test" and test_mismatched as "test1"
        _task("MNLI", ["accuracy"], files={"test": "MNLI-m.tsv", "test1": "MNLI-mm.tsv"}),
        _task("QNLI", ["accuracy"]),
        _task("RTE", ["accuracy"]),
        _task("WNLI", ["accuracy"]),
        _task("AX", ["mcc"]),  # the diagnostic set, predicted with an MNLI model
    )
}


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def glue_task_by_name(name: str) -> GlueTask:
    """The task called ``name`` (any case, with or without the hyphen); ValueError naming the choices if unknown."""
    for task in GLUE_TASKS.values():
        if _key(task.name) == _key(name):
            return task
    raise ValueError(f"unknown GLUE task {name!r}; expected one of: {', '.join(GLUE_TASKS)}")


def infer_glue_task(data_dir: str) -> Optional[GlueTask]:
    """The GLUE task a data directory holds, from its name (``SST-2-bin``, ``glue/MRPC``...), else None."""
    import os

    base = _key(os.path.basename(os.path.normpath(data_dir)))
    # longest names first, so that "mnli" is not mistaken for a shorter task name it contains
    for task in sorted(GLUE_TASKS.values(), key=lambda t: -len(_key(t.name))):
        if base.startswith(_key(task.name)):
            return task
    return None


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


def glue_score(task: Optional[GlueTask], values: Dict[str, float], regression: bool) -> Optional[float]:
    """The task score: mean of the task's official metrics (defaults: accuracy, or Pearson/Spearman)."""
    names = task.metrics if task is not None else (("pearson", "spearman") if regression else ("accuracy",))
    if not all(n in values for n in names):
        return None
    return float(np.mean([values[n] for n in names]))


def official_metric_name(task: Optional[GlueTask], regression: bool) -> str:
    names = task.metrics if task is not None else (("pearson", "spearman") if regression else ("accuracy",))
    return "/".join(names)
