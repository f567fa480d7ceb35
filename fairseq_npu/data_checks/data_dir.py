"""The layout of a sentence-prediction data directory, checked before fairseq opens its files.

Stock ``sentence_prediction`` opens ``input0/dict.txt`` and ``label/dict.txt`` blindly, so a wrong folder (the
GLUE tsv folder, a parent of TASK-bin, a half-copied one) ends in a FileNotFoundError traceback, and a dict.txt
that is not UTF-8 in a bare Exception. Here each is one UsageError naming the file (and line).
"""

import os

from fairseq_npu.dict_file import dict_file_problem
from fairseq_npu.errors import UsageError

_HINT = "the folder glue_scripts/preprocess_GLUE_tasks.sh writes (TASK-bin: input0/, [input1/,] label/)"


def check_data_dir(cfg) -> None:
    """Raise UsageError unless ``cfg.data`` holds what the task reads first."""
    data = str(cfg.data).split(os.pathsep)[0]
    if not os.path.isdir(data):
        raise UsageError(f"{data}: no such data directory; fairseq-train's first argument is {_HINT}")
    inputs = os.path.join(data, "input0", "dict.txt")
    if not os.path.isfile(inputs):
        raise UsageError(f"{inputs}: missing; {data} is not a sentence-prediction data directory ({_HINT})")
    labels = os.path.join(data, "label")
    if getattr(cfg, "regression_target", False):
        if not os.path.isdir(labels):
            raise UsageError(f"{labels}: missing; regression targets are read from label/SPLIT.label ({_HINT})")
    elif not os.path.isfile(os.path.join(labels, "dict.txt")):
        raise UsageError(f"{os.path.join(labels, 'dict.txt')}: missing; classification needs the label dictionary "
                         "(for a regression task such as STS-B pass --regression-target)")


def check_dictionary_file(filename) -> None:
    """Raise UsageError unless ``filename`` is a readable fairseq dict.txt.

    Run by sentence_prediction's ``load_dictionary`` (fairseq_npu/hooks/tasks.py), so the stock task gets the
    same one line for a missing ``input0/`` or ``label/``, and both tasks for a dict.txt fairseq cannot read."""
    filename = str(filename)
    if "://" in filename:
        return  # a remote path: fairseq's PathManager resolves it
    if not os.path.isfile(filename):
        hint = " (for a regression task such as STS-B pass --regression-target)" \
            if os.path.basename(os.path.dirname(filename)) == "label" else ""
        raise UsageError(f"{filename}: missing; not a sentence-prediction data directory ({_HINT}){hint}")
    problem = dict_file_problem(filename)  # fairseq would raise a bare Exception for bytes that are not UTF-8
    if problem:
        raise UsageError(problem)
