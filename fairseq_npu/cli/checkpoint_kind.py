"""Does a checkpoint fit the data it is asked to evaluate or predict? Checked before the model is built.

A regression checkpoint (STS-B: one output, ``--regression-target``) on classification data found no
``label/valid.label`` and said "split 'valid' has no labels" of the very split asked for; fairseq-npu-predict wrote
a classification task's submission full of floats and exited 0. A classifier on regression data failed on a
``label/dict.txt`` it told the user to fix with a flag evaluate does not have. A pretrained or converted model
(``masked_lm``, no classification head) failed on ``DATA/dict.txt``, a path the user never named. Each is one
UsageError naming the checkpoint and what it is.
"""

import glob
import os

from fairseq_npu.errors import UsageError

SENTENCE_PREDICTION = ("sentence_prediction", "sentence_prediction_npu")


def _task_cfg(state) -> dict:
    from omegaconf import OmegaConf

    cfg = state.get("cfg")
    if cfg is not None and cfg.get("task") is not None:
        task = cfg["task"]
        return OmegaConf.to_container(task, resolve=False) if OmegaConf.is_config(task) else dict(task)
    args = state.get("args")
    if args is not None:
        return {"_name": getattr(args, "task", None), **vars(args)}
    return {}


def _data_labels(data: str):
    """"class", "regression" or None (no labels in ``data``)."""
    label_dir = os.path.join(data, "label")
    if os.path.isfile(os.path.join(label_dir, "dict.txt")):
        return "class"
    if glob.glob(os.path.join(label_dir, "*.label")):
        return "regression"
    return None


def check_checkpoint_kind(path: str, state: dict, data: str, glue_task=None) -> None:
    """Raise UsageError unless the checkpoint at ``path`` (its loaded ``state``) is a sentence-prediction model
    whose head (classes or a regression score) matches the labels of ``data`` and the GLUE task, if known."""
    task = _task_cfg(state)
    name = task.get("_name")
    if name not in SENTENCE_PREDICTION:
        raise UsageError(f"--path {path}: a {name or 'non-sentence-prediction'} checkpoint (a pretrained or converted "
                         "model) has no trained classification head; fine-tune it first (fairseq-train "
                         f"--restore-file {path} ...) and give the checkpoint that run saves")
    regression = bool(task.get("regression_target"))
    kind = "a regression checkpoint (one output, --regression-target, as STS-B)" if regression else \
        "a classification checkpoint"
    labels = _data_labels(data)
    if labels == "class" and regression:
        raise UsageError(f"--path {path} is {kind}, but {data} holds class labels (label/dict.txt): give a "
                         "checkpoint trained on this task")
    if labels == "regression" and not regression:
        raise UsageError(f"--path {path} is {kind}, but {data} holds regression targets (label/*.label, as "
                         "STS-B): give a checkpoint trained on this task")
    if glue_task is not None and glue_task.regression != regression:
        what = "a regression task" if glue_task.regression else "a classification task"
        raise UsageError(f"--path {path} is {kind}, but {glue_task.name} is {what}: give a checkpoint trained on "
                         "this task, or the right --glue-task")
