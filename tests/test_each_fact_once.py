"""Facts the code used to write more than once now have one home: the fp16 recipe, the GLUE task list."""

import re
from pathlib import Path

from fairseq_npu import glue_tasks
from fairseq_npu.launch import recipes

REPO = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("fairseq_npu", "benchmarks", "test", "glue_scripts") for p in sorted((REPO / d).rglob("*"))
           if p.suffix in (".py", ".sh")]


def test_the_fp16_recipe_is_defined_once():
    from benchmarks import common

    assert common.FP16_FLAGS is recipes.FP16_ARGS
    where = [p.relative_to(REPO).as_posix() for p in SOURCES if '"--fp16-scale-window", "128"' in p.read_text()]
    assert where == ["fairseq_npu/launch/recipes.py"]


def test_the_glue_task_list_is_written_once():
    names = [re.compile(r"(?<![\w-])" + re.escape(n) + r"(?![\w-])") for n in glue_tasks.GLUE_TASKS]
    lists = [(p.relative_to(REPO).as_posix(), line.split("=")[0].strip()) for p in SOURCES
             for line in p.read_text().splitlines() if sum(bool(n.search(line)) for n in names) >= 6]
    assert lists == [("fairseq_npu/glue_tasks.py", "ALL_TASKS")]  # the preprocessing order, beside the table


def test_help_texts_list_the_registry_tasks():
    import argparse

    from fairseq_npu.cli import inference
    from fairseq_npu.tasks.sentence_prediction_npu import SentencePredictionNpuConfig

    parser = argparse.ArgumentParser()
    inference.add_common_args(parser)
    listed = ", ".join(glue_tasks.GLUE_TASKS)
    assert f"GLUE task ({listed}); default" in " ".join(parser.format_help().split())
    help_text = SentencePredictionNpuConfig.__dataclass_fields__["glue_task"].metadata["help"]
    assert f"({listed}); default" in help_text
