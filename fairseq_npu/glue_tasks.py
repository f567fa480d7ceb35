"""The GLUE tasks: every fact the plugin knows about each task, in one table (standard library only).

Preprocessing (where the sentences and labels are in each tsv), metrics (the official metric), the launch recipes
(train size, validation subsets) and prediction (submission file names, the STS-B scale) all read this module;
:func:`glue_task` is the one name normaliser (``sst2``, ``SST-2``, ``sts_b``, ``diagnostic`` all work).

Column numbers are 1-based, as in the ``cut -f`` calls of fairseq's examples/roberta/preprocess_GLUE_tasks.sh, so
the two can be compared line by line. WNLI (same layout as RTE) and the AX diagnostic set (MNLI-style pairs, test
only) are not in fairseq's script; their columns follow the GLUE files.

Official metrics are the GLUE benchmark's (Wang et al. 2018, table 1 and the leaderboard): MRPC and QQP report F1
and accuracy, STS-B Pearson and Spearman correlation, CoLA and AX Matthews correlation, the rest accuracy. A task's
GLUE score is the mean of its metrics; the first one listed is the leaderboard's headline column.
"""

import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class Split:
    """One tsv file of a task and the fairseq split it is binarized into."""

    tsv: str  # file name inside the task folder
    output: str  # fairseq split name written to TASK-bin (train, valid, valid1, test, test1)
    input_columns: Tuple[int, ...]
    label_column: Optional[int] = None  # None: no labels (test splits)
    has_header: bool = True
    # rows whose field count differs from this are dropped silently (QQP's awk NF==6 rule); None: they are errors
    drop_rows_without_fields: Optional[int] = None
    # field count to expect when the file has no header (CoLA train/dev)
    fields_without_header: Optional[int] = None
    submission: Optional[str] = None  # leaderboard file name of this split's predictions (test splits)
    # column of GLUE's row index (test splits: ``index``, QQP ``id``); the submission is numbered by it
    index_column: Optional[int] = None

    @property
    def labelled(self) -> bool:
        return self.label_column is not None


@dataclass(frozen=True)
class GlueTask:
    name: str  # the GLUE spelling, e.g. "SST-2"
    folder: str  # folder under GLUE_DIR
    splits: Tuple[Split, ...]
    labels: Optional[Tuple[str, ...]]  # the label set; None for STS-B (scores) and AX (no labels)
    num_classes: int
    metrics: Tuple[str, ...]  # the official metric(s); their mean is the task's GLUE score
    train_size: Optional[int]  # rows of the GLUE train split: what the published update counts were made for
    regression: bool = False
    # regression labels are written to TASK-bin as score / label_scale (fairseq's script divides STS-B by 5), and
    # predictions are multiplied back
    label_scale: float = 1.0

    @property
    def num_inputs(self) -> int:
        return len(self.splits[0].input_columns)

    @property
    def labelled(self) -> bool:
        return any(s.labelled for s in self.splits)

    @property
    def valid_subsets(self) -> str:
        """fairseq ``--valid-subset`` value: every labelled dev split (MNLI: matched, then mismatched)."""
        return ",".join(s.output for s in self.splits if s.output.startswith("valid"))

    @property
    def positive_label(self) -> Optional[str]:
        """The label F1 counts as positive (GLUE's "1"), for binary tasks with 0/1 labels; else None."""
        return POSITIVE_LABEL if self.labels == BINARY else None

    def submission_file(self, split: str) -> str:
        """File name for ``split`` in a submission archive (test splits), else ``TASK.split.tsv``."""
        for s in self.splits:
            if s.output == split and s.submission:
                return s.submission
        return f"{self.name}.{split}.tsv"


BINARY = ("0", "1")
POSITIVE_LABEL = "1"
ENTAILMENT2 = ("entailment", "not_entailment")
MNLI_LABELS = ("contradiction", "entailment", "neutral")
STSB_SCALE = 5.0  # STS-B similarity scores lie in [0, 5]


def _standard(name, columns, label_column, labels, metrics, train_size, test_columns=None, num_classes=None,
              regression=False, label_scale=1.0, **train_dev):
    return GlueTask(
        name=name,
        folder=name,
        splits=(
            Split("train.tsv", "train", columns, label_column, **train_dev),
            Split("dev.tsv", "valid", columns, label_column, **train_dev),
            Split("test.tsv", "test", test_columns or columns, submission=f"{name}.tsv", index_column=1),
        ),
        labels=labels,
        num_classes=num_classes or len(labels),
        metrics=metrics,
        train_size=train_size,
        regression=regression,
        label_scale=label_scale,
    )


_TABLE = (
    _standard("CoLA", (4,), 2, BINARY, ("mcc",), 8551, test_columns=(2,), has_header=False,
              fields_without_header=4),
    _standard("SST-2", (1,), 2, BINARY, ("accuracy",), 67349, test_columns=(2,)),
    _standard("MRPC", (4, 5), 1, BINARY, ("f1", "accuracy"), 3668),
    _standard("STS-B", (8, 9), 10, None, ("pearson", "spearman"), 5749, num_classes=1, regression=True,
              label_scale=STSB_SCALE),
    _standard("QQP", (4, 5), 6, BINARY, ("f1", "accuracy"), 363846, test_columns=(2, 3),
              drop_rows_without_fields=6),
    GlueTask(
        name="MNLI",
        folder="MNLI",
        splits=(
            Split("train.tsv", "train", (9, 10), 12),
            Split("dev_matched.tsv", "valid", (9, 10), 16),
            Split("dev_mismatched.tsv", "valid1", (9, 10), 16),
            Split("test_matched.tsv", "test", (9, 10), submission="MNLI-m.tsv", index_column=1),
            Split("test_mismatched.tsv", "test1", (9, 10), submission="MNLI-mm.tsv", index_column=1),
        ),
        labels=MNLI_LABELS,
        num_classes=3,
        metrics=("accuracy",),
        train_size=392702,
    ),
    _standard("QNLI", (2, 3), 4, ENTAILMENT2, ("accuracy",), 104743),
    _standard("RTE", (2, 3), 4, ENTAILMENT2, ("accuracy",), 2490),
    _standard("WNLI", (2, 3), 4, BINARY, ("accuracy",), 635),
    # the diagnostic set is predicted with an MNLI model: unlabelled pairs, test split only
    GlueTask(
        name="AX",
        folder="diagnostic",
        splits=(Split("diagnostic.tsv", "test", (2, 3), submission="AX.tsv", index_column=1),),
        labels=None,
        num_classes=3,
        metrics=("mcc",),
        train_size=None,
    ),
)

GLUE_TASKS: Dict[str, GlueTask] = {t.name: t for t in _TABLE}  # in the GLUE paper's order

# order of preprocessing ALL: fairseq's script order for its eight tasks, then WNLI and AX (which reuses MNLI's
# label dictionary, so it comes after MNLI)
ALL_TASKS = ("QQP", "MNLI", "QNLI", "MRPC", "RTE", "STS-B", "SST-2", "CoLA", "WNLI", "AX")


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_KEY = {_key(t.name): t for t in _TABLE}
_BY_KEY["diagnostic"] = GLUE_TASKS["AX"]


def glue_task(name: str) -> GlueTask:
    """The task called ``name``: case, dashes, underscores and spaces do not matter (``sst2``, ``STS-B``,
    ``diagnostic`` for AX). Unknown names raise ValueError listing the known ones."""
    task = _BY_KEY.get(_key(name))
    if task is None:
        raise ValueError(f"unknown GLUE task {name!r}; expected one of: {', '.join(GLUE_TASKS)}")
    return task


def infer_glue_task(data_dir: str) -> Optional[GlueTask]:
    """The GLUE task a data directory holds, from its name (``SST-2-bin``, ``glue/MRPC``...), else None."""
    base = _key(os.path.basename(os.path.normpath(str(data_dir))))
    # longest names first, so that "mnli" is not mistaken for a shorter task name it contains
    for key in sorted(_BY_KEY, key=len, reverse=True):
        if base.startswith(key):
            return _BY_KEY[key]
    return None


def positive_class(label_dictionary, num_classes: int) -> Optional[int]:
    """Class index of the positive label ("1") in a binary task's fairseq label dictionary, else None.

    Only a dictionary's ``indices``, ``index()`` and ``nspecial`` are read, so this needs no fairseq import."""
    if num_classes != 2 or POSITIVE_LABEL not in label_dictionary.indices:
        return None
    return label_dictionary.index(POSITIVE_LABEL) - label_dictionary.nspecial
