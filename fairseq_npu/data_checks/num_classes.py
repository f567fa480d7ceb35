"""``--num-classes`` against the label dictionary of a sentence-prediction data directory.

A classification head larger than the label set trains without complaint (the extra outputs are never a
target), and binary-task metrics such as F1 then silently disappear; a smaller one fails only at the first batch
with an out-of-range target. Both are refused when the task is set up, naming both numbers.
"""

import os
import re

from fairseq_npu.errors import UsageError

# not labels: fairseq-preprocess pads a dictionary to a multiple of --padding-factor (8) with never-seen
# madeupwordNNNN symbols, and sentence_prediction's load_dictionary appends <mask> to every dictionary it loads
_NOT_A_LABEL = re.compile(r"madeupword\d{4}|<mask>")


def labels_of(label_dictionary) -> list:
    """The label strings of a fairseq label dictionary (no special or padding symbols), in class-index order."""
    return [s for s in label_dictionary.symbols[label_dictionary.nspecial:] if not _NOT_A_LABEL.fullmatch(s)]


def check_num_classes(cfg, label_dictionary) -> None:
    """Raise UsageError if a classification task's ``--num-classes`` differs from its number of labels."""
    if getattr(cfg, "regression_target", False) or label_dictionary is None:
        return
    labels = labels_of(label_dictionary)
    if cfg.num_classes != len(labels):
        shown = ", ".join(labels[:10]) + (", ..." if len(labels) > 10 else "")
        raise UsageError(
            f"--num-classes {cfg.num_classes} does not match the {len(labels)} labels of the label dictionary "
            f"{os.path.join(str(cfg.data).split(os.pathsep)[0], 'label', 'dict.txt')} ({shown}); "
            f"pass --num-classes {len(labels)}"
        )
