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
        dictionaries = [inputs]
    elif not os.path.isfile(os.path.join(labels, "dict.txt")):
        raise UsageError(f"{os.path.join(labels, 'dict.txt')}: missing; classification needs the label dictionary "
                         "(for a regression task such as STS-B pass --regression-target)")
    else:
        dictionaries = [inputs, os.path.join(labels, "dict.txt")]
    for path in dictionaries:  # fairseq would raise a bare Exception for bytes that are not UTF-8
        problem = dict_file_problem(path)
        if problem:
            raise UsageError(problem)
