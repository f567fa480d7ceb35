"""fairseq-npu-evaluate: score a sentence-prediction checkpoint on a split with the task's official GLUE metric.

    fairseq-npu-evaluate SST-2-bin --path checkpoints/checkpoint_best.pt [--split valid] [--glue-task SST-2]

Prints one ``name value`` line per metric (percentages) and, last, ``glue <value> (<official metric>)``; with
``--json`` a single JSON object instead. Works for checkpoints of ``sentence_prediction`` and
``sentence_prediction_npu`` alike, RoBERTa or ALBERT.
"""

import argparse
import json
import sys
from typing import Dict, List

import numpy as np

from fairseq_npu import glue_tasks
from fairseq_npu.cli.inference import Predictor, add_common_args, quiet_logs
from fairseq_npu.metrics import glue as glue_metrics


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairseq-npu-evaluate", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return parser


def evaluate(predictor: Predictor, split: str) -> Dict[str, object]:
    preds: List[np.ndarray] = []
    targets: List[np.ndarray] = []
    num_classes = None
    for batch in predictor.batches(split):
        if batch.targets is None:
            raise ValueError(f"{predictor.task.cfg.data}: split {split!r} has no labels; evaluate a labelled split "
                             f"(e.g. --split valid) or use fairseq-npu-predict")
        num_classes = batch.outputs.size(-1)
        if predictor.regression:
            preds.append(batch.outputs.reshape(-1).numpy())
            targets.append(batch.targets.float().reshape(-1).numpy())
        else:
            preds.append(batch.outputs.argmax(dim=-1).reshape(-1).numpy())
            targets.append(batch.targets.reshape(-1).numpy())
    if not preds:
        raise ValueError(f"{predictor.task.cfg.data}: split {split!r} is empty")
    p, t = np.concatenate(preds), np.concatenate(targets)
    if predictor.regression:
        values = glue_metrics.correlation_metrics(p, t)
    else:
        pos = glue_tasks.positive_class(predictor.task.label_dictionary, num_classes)
        values = glue_metrics.classification_metrics(glue_metrics.confusion_counts(p, t, num_classes), pos)
    task = predictor.glue_task
    result: Dict[str, object] = {
        "task": task.name if task else None,
        "split": split,
        "sentences": int(len(p)),
        **values,
        "glue": glue_metrics.glue_score(task, values, predictor.regression),
        "metric": glue_metrics.official_metric_name(task, predictor.regression),
    }
    return result


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    quiet_logs()
    try:
        predictor = Predictor(args)
        result = evaluate(predictor, args.split or "valid")
    except (FileNotFoundError, ValueError) as err:
        print(f"fairseq-npu-evaluate: error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"task {result['task'] or 'unknown'}, split {result['split']}, {result['sentences']} sentences")
        for name in ("accuracy", "f1", "mcc", "pearson", "spearman"):
            if name in result:
                print(f"{name} {result[name]:.4f}")
        print(f"glue {result['glue']:.4f} ({result['metric']})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
