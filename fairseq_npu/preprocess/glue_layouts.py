"""Where each GLUE task keeps its sentences and labels: the column map of fairseq's preprocess_GLUE_tasks.sh.

Column numbers are 1-based, as in the ``cut -f`` calls of fairseq's examples/roberta/preprocess_GLUE_tasks.sh, so the
two can be compared line by line. WNLI (same layout as RTE) and the AX diagnostic set (MNLI-style pairs, test only)
are not in fairseq's script; their columns follow the GLUE files.
"""

from dataclasses import dataclass
from typing import Dict, Optional, Tuple


@dataclass(frozen=True)
class SplitLayout:
    tsv: str  # file name inside the task folder
    output: str  # fairseq split name written to TASK-bin (train, valid, valid1, test, test1)
    input_columns: Tuple[int, ...]
    label_column: Optional[int] = None  # None: no labels (test splits)
    has_header: bool = True
    # rows whose field count differs from this are dropped silently (QQP's awk NF==6 rule); None: they are errors
    drop_rows_without_fields: Optional[int] = None
    # field count to expect when the file has no header (CoLA train/dev)
    fields_without_header: Optional[int] = None

    @property
    def labelled(self) -> bool:
        return self.label_column is not None


@dataclass(frozen=True)
class TaskLayout:
    name: str
    folder: str  # folder under GLUE_DIR
    splits: Tuple[SplitLayout, ...]
    labels: Optional[Tuple[str, ...]]  # the label set; None for STS-B (scores) and AX (no labels)
    num_classes: int
    regression: bool = False  # STS-B: labels are similarity scores in [0, 5], written as score / 5

    @property
    def num_inputs(self) -> int:
        return len(self.splits[0].input_columns)

    @property
    def labelled(self) -> bool:
        return any(s.labelled for s in self.splits)


def _standard(name, columns, label_column, labels, test_columns=None, num_classes=None, regression=False, **train_dev):
    test_columns = test_columns or columns
    return TaskLayout(
        name=name,
        folder=name,
        splits=(
            SplitLayout("train.tsv", "train", columns, label_column, **train_dev),
            SplitLayout("dev.tsv", "valid", columns, label_column, **train_dev),
            SplitLayout("test.tsv", "test", test_columns),
        ),
        labels=labels,
        num_classes=num_classes or len(labels),
        regression=regression,
    )


BINARY = ("0", "1")
ENTAILMENT2 = ("entailment", "not_entailment")
MNLI_LABELS = ("contradiction", "entailment", "neutral")

GLUE_TASKS: Dict[str, TaskLayout] = {
    t.name: t
    for t in (
        _standard("CoLA", (4,), 2, BINARY, test_columns=(2,), has_header=False, fields_without_header=4),
        _standard("SST-2", (1,), 2, BINARY, test_columns=(2,)),
        _standard("MRPC", (4, 5), 1, BINARY),
        _standard("STS-B", (8, 9), 10, None, num_classes=1, regression=True),
        _standard("QQP", (4, 5), 6, BINARY, test_columns=(2, 3), drop_rows_without_fields=6),
        TaskLayout(
            name="MNLI",
            folder="MNLI",
            splits=(
                SplitLayout("train.tsv", "train", (9, 10), 12),
                SplitLayout("dev_matched.tsv", "valid", (9, 10), 16),
                SplitLayout("dev_mismatched.tsv", "valid1", (9, 10), 16),
                SplitLayout("test_matched.tsv", "test", (9, 10)),
                SplitLayout("test_mismatched.tsv", "test1", (9, 10)),
            ),
            labels=MNLI_LABELS,
            num_classes=3,
        ),
        _standard("QNLI", (2, 3), 4, ENTAILMENT2),
        _standard("RTE", (2, 3), 4, ENTAILMENT2),
        _standard("WNLI", (2, 3), 4, BINARY),
        # the diagnostic set is predicted with an MNLI model: unlabelled pairs, test split only
        TaskLayout(
            name="AX",
            folder="diagnostic",
            splits=(SplitLayout("diagnostic.tsv", "test", (2, 3)),),
            labels=None,
            num_classes=3,
        ),
    )
}

# order of ALL: fairseq's script order for its eight tasks, then WNLI and AX (which reuses MNLI's label dictionary)
ALL_TASKS = ("QQP", "MNLI", "QNLI", "MRPC", "RTE", "STS-B", "SST-2", "CoLA", "WNLI", "AX")

_ALIASES = {n.lower().replace("-", ""): n for n in GLUE_TASKS}
_ALIASES.update({"diagnostic": "AX", "stsb": "STS-B", "sst2": "SST-2"})


def task_layout(name: str) -> TaskLayout:
    """The layout of a GLUE task, by its GLUE name (case and dashes do not matter: sst2, STS-B, ax)."""
    key = _ALIASES.get(name.lower().replace("-", "").replace("_", ""))
    if key is None:
        raise ValueError(f"unknown GLUE task {name!r} (known: {', '.join(ALL_TASKS)} or ALL)")
    return GLUE_TASKS[key]
