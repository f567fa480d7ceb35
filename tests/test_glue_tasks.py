"""The GLUE task registry (fairseq_npu/glue_tasks.py): the one table that preprocessing, metrics, recipes and
predict read."""

import ast
import sys
from pathlib import Path

import pytest

from fairseq_npu import glue_tasks
from fairseq_npu.glue_tasks import GLUE_TASKS, glue_task

SOURCE = Path(glue_tasks.__file__)


def test_registry_needs_the_standard_library_only():
    tree = ast.parse(SOURCE.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported and imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


def test_one_name_normaliser_for_every_spelling():
    for spelling, name in [("sst2", "SST-2"), ("SST-2", "SST-2"), ("sst_2", "SST-2"), ("Sts B", "STS-B"),
                           ("cola", "CoLA"), ("diagnostic", "AX"), ("ax", "AX"), ("mnli", "MNLI")]:
        assert glue_task(spelling).name == name
    with pytest.raises(ValueError, match=r"^unknown GLUE task 'SST3'; expected one of: CoLA, SST-2, MRPC, STS-B, "
                                         r"QQP, MNLI, QNLI, RTE, WNLI, AX$"):
        glue_task("SST3")
    assert glue_tasks.infer_glue_task("/data/diagnostic-bin").name == "AX"


def test_official_metrics_are_the_glue_benchmarks():
    metrics = {name: task.metrics for name, task in GLUE_TASKS.items()}
    assert metrics == {
        "CoLA": ("mcc",), "SST-2": ("accuracy",), "MRPC": ("f1", "accuracy"), "STS-B": ("pearson", "spearman"),
        "QQP": ("f1", "accuracy"), "MNLI": ("accuracy",), "QNLI": ("accuracy",), "RTE": ("accuracy",),
        "WNLI": ("accuracy",), "AX": ("mcc",),
    }
    assert [n for n, t in GLUE_TASKS.items() if t.positive_label == "1"] == ["CoLA", "SST-2", "MRPC", "QQP", "WNLI"]


def test_task_facts():
    mnli, stsb = GLUE_TASKS["MNLI"], GLUE_TASKS["STS-B"]
    assert mnli.valid_subsets == "valid,valid1" and GLUE_TASKS["SST-2"].valid_subsets == "valid"
    assert GLUE_TASKS["AX"].valid_subsets == "" and GLUE_TASKS["AX"].folder == "diagnostic"
    assert (stsb.regression, stsb.num_classes, stsb.label_scale, stsb.labels) == (True, 1, 5.0, None)
    assert {n: t.train_size for n, t in GLUE_TASKS.items()} == {
        "CoLA": 8551, "SST-2": 67349, "MRPC": 3668, "STS-B": 5749, "QQP": 363846, "MNLI": 392702, "QNLI": 104743,
        "RTE": 2490, "WNLI": 635, "AX": None}
    assert [mnli.submission_file(s) for s in ("test", "test1", "valid")] == ["MNLI-m.tsv", "MNLI-mm.tsv",
                                                                               "MNLI.valid.tsv"]
    assert GLUE_TASKS["AX"].submission_file("test") == "AX.tsv"
    assert sorted(glue_tasks.ALL_TASKS) == sorted(GLUE_TASKS)


class _LabelDictionary:  # the three members of fairseq's Dictionary that positive_class reads
    def __init__(self, symbols):
        self.nspecial = 4
        self.indices = {s: i for i, s in enumerate(["<s>", "<pad>", "</s>", "<unk>", *symbols])}

    def index(self, symbol):
        return self.indices[symbol]


def test_positive_class_is_label_1_in_the_label_dictionary():
    assert glue_tasks.positive_class(_LabelDictionary(["1", "0"]), 2) == 0
    assert glue_tasks.positive_class(_LabelDictionary(["0", "1"]), 2) == 1
    assert glue_tasks.positive_class(_LabelDictionary(["entailment", "not_entailment"]), 2) is None
    assert glue_tasks.positive_class(_LabelDictionary(["0", "1", "2"]), 3) is None
