"""Evaluation metrics: the official GLUE metric of each task, computed with scikit-learn and scipy."""

from fairseq_npu.metrics.glue import (  # noqa: F401
    classification_metrics,
    confusion_counts,
    correlation_metrics,
    glue_score,
    official_metric_name,
)
