"""fairseq-npu-evaluate: score a sentence-prediction checkpoint on a split with the task's official GLUE metric.

    fairseq-npu-evaluate SST-2-bin --path checkpoints/checkpoint_best.pt [--split valid] [--glue-task SST-2]

Prints one ``name value`` line per metric (percentages) and, last, ``glue <value> (<official metric>)``; with
``--json`` one JSON object per split instead, with the throughput of the loop (``samples_per_second``).
``--split valid,valid1`` scores several splits (MNLI matched and mismatched). Under torchrun every process
scores its shard and rank 0 prints the metrics of the whole split (test/train_eval_8p.sh runs it so). Works for
checkpoints of ``sentence_prediction`` and ``sentence_prediction_npu`` alike, RoBERTa or ALBERT.
"""

import argparse
import json
import sys
from typing import Dict, List

import numpy as np

from fairseq_npu import glue_tasks
from fairseq_npu.cli.inference import Predictor, add_common_args, gather, quiet_logs
from fairseq_npu.metrics import glue as glue_metrics


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairseq-npu-evaluate", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    return parser


def evaluate(predictor: Predictor, split: str) -> Dict[str, object]:
    """Metrics of one split, over every process's shard, with the loop's throughput (all processes together)."""
    data = predictor.task.cfg.data
    predictor.task.load_dataset(split)
    dataset = predictor.task.dataset(split)
    if len(dataset) == 0:
        raise ValueError(f"{data}: split {split!r} is empty")
    if "target" not in dataset[0]:  # the same answer on every process: none of them starts the loop
        other = " (e.g. --split valid)" if split != "valid" else ""  # never suggest the split that was given
        raise ValueError(f"{data}: split {split!r} has no labels; evaluate a labelled split{other} "
                         "or use fairseq-npu-predict")
    preds: List[np.ndarray] = []
    targets: List[np.ndarray] = []
    num_classes = 1
    for batch in predictor.batches(split):
        num_classes = batch.outputs.size(-1)
        if predictor.regression:
            preds.append(batch.outputs.reshape(-1).numpy())
            targets.append(batch.targets.float().reshape(-1).numpy())
        else:
            preds.append(batch.outputs.argmax(dim=-1).reshape(-1).numpy())
            targets.append(batch.targets.reshape(-1).numpy())
    timing = predictor.timing[split]
    local = (np.concatenate(preds) if preds else np.zeros(0), np.concatenate(targets) if targets else np.zeros(0),
             num_classes, timing)
    shards = gather(local, predictor.world)
    p = np.concatenate([g[0] for g in shards])
    t = np.concatenate([g[1] for g in shards])
    num_classes = max(g[2] for g in shards)
    if predictor.regression:
        values = glue_metrics.correlation_metrics(p, t)
    else:
        pos = glue_tasks.positive_class(predictor.task.label_dictionary, num_classes)
        values = glue_metrics.classification_metrics(
            glue_metrics.confusion_counts(p.astype(np.int64), t.astype(np.int64), num_classes), pos)
    task = predictor.glue_task
    timed = [g[3] for g in shards]
    slowest = max(tm.seconds for tm in timed)
    result: Dict[str, object] = {
        "task": task.name if task else None,
        "split": split,
        "sentences": int(len(p)),
        **values,
        "glue": glue_metrics.glue_score(task, values, predictor.regression),
        "metric": glue_metrics.official_metric_name(task, predictor.regression),
        "world_size": predictor.world,
        # samples after each process's first batch over the slowest process's time; None for a single batch
        "samples_per_second": round(sum(tm.timed_samples for tm in timed) / slowest, 3) if slowest > 0 else None,
        "seconds": round(slowest, 6),
    }
    return result


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    quiet_logs()
    try:
        predictor = Predictor(args)
        results = [evaluate(predictor, split) for split in (args.split or "valid").split(",")]
    except (FileNotFoundError, ValueError) as err:
        print(f"fairseq-npu-evaluate: error: {err}", file=sys.stderr)
        return 2
    if predictor.rank != 0:
        return 0
    for result in results:
        if args.json:
            print(json.dumps(result))
            continue
        print(f"task {result['task'] or 'unknown'}, split {result['split']}, {result['sentences']} sentences")
        for name in ("accuracy", "f1", "mcc", "pearson", "spearman"):
            if name in result:
                print(f"{name} {result[name]:.4f}")
        print(f"glue {result['glue']:.4f} ({result['metric']})")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
