"""Evaluation metrics: the official GLUE metric of each task, computed with scikit-learn and scipy."""

from fairseq_npu.metrics.glue import (  # noqa: F401
    GLUE_TASKS,
    GlueTask,
    classification_metrics,
    confusion_counts,
    correlation_metrics,
    glue_task_by_name,
    infer_glue_task,
)
