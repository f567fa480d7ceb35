"""fairseq-npu-predict: write GLUE predictions of a checkpoint in the leaderboard's submission format.

    fairseq-npu-predict SST-2-bin --path checkpoints/checkpoint_best.pt [--split test] [--output-dir submission]

Writes ``OUTPUT_DIR/<file>`` with a header ``index<TAB>prediction`` and one row per sentence of the split, in the
split's order (index = line number). ``<file>`` is the leaderboard's name for test splits (``SST-2.tsv``; MNLI's
``test``/``test1`` are ``MNLI-m.tsv``/``MNLI-mm.tsv``), else ``TASK.SPLIT.tsv``; ``--output-file`` overrides it.
Classes are written as their label strings (mapped back through the label dictionary); STS-B scores are the
regression output times 5 (its labels were divided by 5 at preprocessing). The file appears complete or not at all.
"""

import argparse
import os
import sys
import tempfile
from typing import Dict

from fairseq_npu.cli.inference import Predictor, add_common_args, quiet_logs


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairseq-npu-predict", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--output-dir", default=".", help="directory for the prediction file (default: .)")
    parser.add_argument("--output-file", default=None, help="exact path of the prediction file (overrides the name)")
    parser.add_argument("--regression-scale", type=float, default=None,
                        help="multiply regression outputs by this (default: 5 for STS-B, else 1)")
    return parser


def predictions(predictor: Predictor, split: str, scale: float) -> Dict[int, str]:
    labels = predictor.task.label_dictionary
    rows: Dict[int, str] = {}
    for batch in predictor.batches(split):
        if predictor.regression:
            values = (batch.outputs.reshape(len(batch.ids), -1)[:, 0] * scale).tolist()
            texts = [f"{v:.3f}" for v in values]
        else:
            texts = [labels[int(c) + labels.nspecial] for c in batch.outputs.argmax(dim=-1).tolist()]
        for i, text in zip(batch.ids.tolist(), texts):
            rows[int(i)] = text
    return rows


def write_atomically(path: str, rows: Dict[int, str]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".predict-", suffix=".tsv", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write("index\tprediction\n")
            for i in range(len(rows)):
                f.write(f"{i}\t{rows[i]}\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    quiet_logs()
    split = args.split or "test"
    try:
        predictor = Predictor(args)
        task = predictor.glue_task
        if args.output_file:
            path = args.output_file
        elif task is not None:
            path = os.path.join(args.output_dir, task.submission_file(split))
        else:
            raise ValueError(f"cannot tell the GLUE task of {args.data}: give --glue-task or --output-file")
        scale = args.regression_scale
        if scale is None:
            scale = task.label_scale if task is not None else 1.0  # STS-B: scores were divided by 5
        rows = predictions(predictor, split, scale)
        expected = predictor.num_sentences(split)
        missing = sorted(set(range(expected)) - set(rows))
        if missing:
            raise ValueError(f"{args.data} {split}: no prediction for {len(missing)} of {expected} sentences "
                             f"(first: line {missing[0]}); were some longer than the model's max positions?")
        write_atomically(path, rows)
    except (FileNotFoundError, ValueError) as err:
        print(f"fairseq-npu-predict: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} predictions to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
