"""fairseq-npu-predict: write GLUE predictions of a checkpoint in the leaderboard's submission format.

    fairseq-npu-predict SST-2-bin --path checkpoints/checkpoint_best.pt [--split test] [--output-dir submission]

Writes ``OUTPUT_DIR/<file>`` with a header ``index<TAB>prediction`` and one row per sentence of the split, in index
order. ``index`` is the row's GLUE index: the test file's own index column (read at preprocessing, which refuses a
missing or repeated value), else its 0-based data row in the tsv, also where preprocessing dropped rows
(``--skip-bad-rows``): ``preprocess.json`` records them. A submission that would miss rows (dropped, or absent from
the index column) is refused with their indices, unless ``--allow-missing-rows`` writes it anyway and lists them. ``<file>`` is the leaderboard's name for test splits (``SST-2.tsv``; MNLI's
``test``/``test1`` are ``MNLI-m.tsv``/``MNLI-mm.tsv``), else ``TASK.SPLIT.tsv``; ``--output-file`` overrides it.
Classes are written as their label strings (mapped back through the label dictionary); STS-B scores are the
regression output times 5 (its labels were divided by 5 at preprocessing). The file appears complete or not at all.
"""

import argparse
import os
import sys
import tempfile
from typing import Dict, List

from fairseq_npu.cli.inference import Predictor, add_common_args, quiet_logs
from fairseq_npu.preprocess.manifest import glue_indices, read_manifest

LISTED_INDICES = 20  # missing indices named in a message; more are counted


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fairseq-npu-predict", description=__doc__.split("\n\n")[0])
    add_common_args(parser)
    parser.add_argument("--output-dir", default=".", help="directory for the prediction file (default: .)")
    parser.add_argument("--output-file", default=None, help="exact path of the prediction file (overrides the name)")
    parser.add_argument("--regression-scale", type=float, default=None,
                        help="multiply regression outputs by this (default: 5 for STS-B, else 1)")
    parser.add_argument("--allow-missing-rows", action="store_true",
                        help="write the file even if rows of the GLUE split have no prediction (preprocessing "
                             "dropped them), and list their indices; the leaderboard refuses such files")
    return parser


def format_indices(indices: List[int]) -> str:
    shown = ", ".join(str(i) for i in indices[:LISTED_INDICES])
    more = len(indices) - LISTED_INDICES
    return f"{shown}, ... ({more} more)" if more > 0 else shown


def _why_missing(data: str, split: str, missing: List[int], dropped_words="preprocessing dropped them") -> str:
    """Which missing indices preprocessing dropped, and which the tsv's index column never had."""
    info = (((read_manifest(data) or {}).get("splits") or {}).get(split)) or {}
    known = set(info.get("dropped_indices", ()))
    dropped = [i for i in missing if i in known]
    absent = [i for i in missing if i not in known]
    parts = [f"{dropped_words} (indices {format_indices(dropped)})"] if dropped else []
    if absent:
        parts.append(f"the index column of {info.get('tsv', split)} lacks indices {format_indices(absent)}")
    return ", and ".join(parts)


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
            for i in sorted(rows):
                f.write(f"{i}\t{rows[i]}\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def check_output_location(args) -> None:
    """A ValueError naming the flag if the prediction file could not be written where it is asked for."""
    flag, where = ("--output-file", args.output_file) if args.output_file else ("--output-dir", args.output_dir)
    if args.output_file and os.path.isdir(args.output_file):
        raise ValueError(f"--output-file {args.output_file}: is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(args.output_file)) if args.output_file else os.path.abspath(where)
    while not os.path.exists(folder):
        folder = os.path.dirname(folder)
    if not os.path.isdir(folder):
        raise ValueError(f"{flag} {where}: {folder} is a file, not a directory")


def cli_main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    quiet_logs()
    split = args.split or "test"
    try:
        check_output_location(args)  # before the model runs
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
        skipped = ((read_manifest(args.data) or {}).get("missing_splits") or {}).get(split)
        if skipped:
            raise ValueError(f"{args.data}: no {split} split: {skipped} was missing when the task was preprocessed")
        rows = predictions(predictor, split, scale)
        expected = predictor.num_sentences(split)
        missing = sorted(set(range(expected)) - set(rows))
        if missing:
            raise ValueError(f"{args.data} {split}: no prediction for {len(missing)} of {expected} sentences "
                             f"(first: line {missing[0]}); were some longer than the model's max positions?")
        index_of, source_rows, dropped = glue_indices(args.data, split, expected)
        rows = {index_of[i]: text for i, text in rows.items()}  # written in index order, whatever the file's order
        if dropped and not args.allow_missing_rows:
            raise ValueError(f"{args.data} {split}: {len(dropped)} of {source_rows} GLUE rows have no prediction, "
                             f"{_why_missing(args.data, split, dropped)}; fix them and preprocess again, or pass "
                             "--allow-missing-rows to write the file without them")
        try:
            write_atomically(path, rows)
        except OSError as err:  # a full disk, a read-only folder
            raise ValueError(f"cannot write {path}: {err.strerror or err}") from None
    except (FileNotFoundError, ValueError) as err:
        print(f"fairseq-npu-predict: error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {len(rows)} predictions to {path}")
    if dropped:
        print(f"fairseq-npu-predict: warning: {path} lacks {len(dropped)} of {source_rows} GLUE rows, "
              f"{_why_missing(args.data, split, dropped, 'dropped at preprocessing')}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(cli_main())
