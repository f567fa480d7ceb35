"""GLUE tsv -> fairseq binary data for ``sentence_prediction``, in one process (console: fairseq-npu-preprocess-glue).

Writes ``DEST/TASK-bin/{input0,input1,label}/`` exactly as fairseq's examples/roberta/preprocess_GLUE_tasks.sh
does (for RoBERTa byte-identical ``.bin``/``.idx``/``dict.txt``), or the same layout with ALBERT's SentencePiece
vocabulary. Python use::

    from fairseq_npu.preprocess import preprocess_task
    preprocess_task("glue_data", "RTE", dest="data", vocab_dir="gpt2_bpe")                  # RoBERTa
    preprocess_task("glue_data", "RTE", dest="data", model="albert", vocab_dir="albert")    # ALBERT
    preprocess_task("demo", "SST-2", dest="data", model="albert", train_spm_vocab_size=500)  # from scratch

Everything is read and checked before anything is written; the result is assembled in a hidden temporary folder
beside ``TASK-bin`` and swapped into place only when complete (output_swap.py), so an interrupted or failed run
never leaves a ``TASK-bin`` that looks done (a previous complete one stays as it was). A missing test split is
skipped with a notice; train and dev are required.
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
from fairseq.data import Dictionary
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.dataclass.utils import gen_parser_from_dataclass

from fairseq_npu import albert_vocab
from fairseq_npu.dict_file import dict_file_problem
from fairseq_npu.preprocess import albert_spm, gpt2_bpe, output_swap
from fairseq_npu.preprocess.binarize import build_label_dictionary, encode_labels, write_dataset
from fairseq_npu.preprocess.manifest import MANIFEST
from fairseq_npu.glue_tasks import ALL_TASKS, GLUE_TASKS, GlueTask, glue_task
from fairseq_npu.preprocess.tsv_reader import GlueInputError, SplitRows, read_split, stsb_target

logger = logging.getLogger("fairseq_npu.preprocess.glue")

BAD_INPUT = 2  # exit status for bad input (files, flags), as argparse uses for bad usage


@dataclass
class GluePreprocessConfig(FairseqDataclass):
    model: ChoiceEnum(["roberta", "albert"]) = field(
        default="roberta",
        metadata={"help": "roberta: GPT-2 BPE (encoder.json, vocab.bpe, dict.txt); albert: SentencePiece"},
    )
    vocab_dir: Optional[str] = field(
        default=None,
        metadata={"help": "folder with the vocabulary: encoder.json, vocab.bpe and dict.txt (roberta; fetched "
                  "from fairseq's URLs when absent and online, default ~/.cache/fairseq_npu/gpt2_bpe) or "
                  "spiece.model / 30k-clean.model (albert)"},
    )
    dest: str = field(default=".", metadata={"help": "write DEST/TASK-bin"})
    workers: int = field(default=os.cpu_count() or 1, metadata={"help": "threads for BPE / SentencePiece"})
    spm_model: Optional[str] = field(
        default=None, metadata={"help": "albert: SentencePiece model file (overrides --vocab-dir)"}
    )
    train_spm: int = field(
        default=0,
        metadata={"help": "albert: train a SentencePiece model of up to this many pieces on the train split "
                  "(from-scratch runs) instead of using --spm-model / --vocab-dir"},
    )
    skip_bad_rows: bool = field(
        default=False,
        metadata={"help": "skip rows with a wrong field count, an empty sentence, a missing or unknown label or "
                  "non-UTF-8 bytes, and report how many, instead of stopping at the first"},
    )
    bpe_backend: ChoiceEnum(["auto", "tiktoken", "fairseq"]) = field(
        default="auto",
        metadata={"help": "roberta: GPT-2 BPE implementation; tiktoken (fast) and fairseq (reference) give "
                  "identical ids; auto = tiktoken when installed"},
    )
    no_download: bool = field(default=False, metadata={"help": "roberta: never fetch missing GPT-2 BPE files"})


# --------------------------------------------------------------------------------------------------------------
# vocabularies


class _Vocabulary:
    """The input dictionary and the encoder that goes with it, for one model family."""

    def __init__(self, dictionary_file: Path, encoder, normalize, files: dict):
        try:
            self.dictionary = Dictionary.load(str(dictionary_file))
        except Exception as err:  # fairseq raises a bare Exception for bytes that are not UTF-8
            problem = dict_file_problem(dictionary_file) or f"{dictionary_file}: not a fairseq dict.txt ({err})"
            raise GlueInputError(problem) from None
        self.dictionary_file = dictionary_file
        self.copy_dict_file = False  # True: input*/dict.txt is a copy of dictionary_file, not Dictionary.save
        self.encoder = encoder
        self.normalize = normalize
        self.files = files


_VOCAB_CACHE = {}  # one GPT-2 vocabulary per process (ALL, or a caller preprocessing several tasks): ~0.5 s each


def _roberta_vocabulary(vocab_dir, workers, bpe_backend, download) -> _Vocabulary:
    files = gpt2_bpe.find_vocab_files(vocab_dir, download=download)
    key = (bpe_backend,) + tuple((str(p.resolve()), p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    if key not in _VOCAB_CACHE:
        _VOCAB_CACHE.clear()
        _VOCAB_CACHE[key] = _load_roberta_vocabulary(files, bpe_backend)
    vocab = _VOCAB_CACHE[key]
    vocab.encoder.workers = max(1, int(workers))
    return vocab


def _load_roberta_vocabulary(files, bpe_backend) -> _Vocabulary:
    encoder_json, vocab_bpe, dict_txt = files
    workers = 1
    vocab = _Vocabulary(dict_txt, None, str.strip, {"encoder_json": encoder_json, "vocab_bpe": vocab_bpe,
                                                    "dict": dict_txt})
    vocab.encoder = gpt2_bpe.Gpt2BpeEncoder(encoder_json, vocab_bpe, vocab.dictionary, bpe_backend, workers)
    vocab.files["bpe_backend"] = vocab.encoder.backend
    return vocab


def _albert_vocabulary(model_path: Path, workdir: Path, workers) -> _Vocabulary:
    encoder = albert_spm.AlbertSpmEncoder(model_path, workers)
    dict_txt = workdir / "albert.dict.txt"
    try:
        albert_vocab.write_fairseq_dict(model_path, dict_txt)
    except albert_vocab.AlbertVocabError as err:
        raise GlueInputError(str(err)) from None
    vocab = _Vocabulary(dict_txt, encoder, albert_spm.albert_normalize, {"spm_source": model_path})
    vocab.copy_dict_file = True  # keeps albert_vocab's #fairseq:overwrite marks, which Dictionary.save drops
    try:
        albert_vocab.check_fairseq_dictionary(vocab.dictionary, len(encoder), dict_txt)
    except albert_vocab.AlbertVocabError as err:
        raise GlueInputError(str(err)) from None
    return vocab


# --------------------------------------------------------------------------------------------------------------
# one task


def _task_dir(glue_dir, layout: GlueTask, task_dir) -> Path:
    return Path(task_dir) if task_dir else Path(glue_dir) / layout.folder


def _encode_split(rows: SplitRows, vocab: _Vocabulary, skip_bad_rows: bool):
    """Encode every input column of a split; rows whose sentence encodes to nothing are errors (or skipped)."""
    while True:
        encoded = [vocab.encoder.encode(col) for col in rows.sentences]
        empty = sorted({int(i) for _, sizes in encoded for i in np.flatnonzero(sizes <= 1)})
        if not empty:
            return encoded
        messages = [f"{rows.path}:{rows.line_numbers[i]}: sentence has no tokens after normalisation" for i in empty]
        if not skip_bad_rows:
            raise GlueInputError(messages[0])
        rows.drop_rows(empty, "empty sentence", messages)


def preprocess_task(
    glue_dir,
    task: str,
    dest=".",
    model: str = "roberta",
    vocab_dir=None,
    workers: int = 1,
    spm_model=None,
    train_spm_vocab_size: Optional[int] = None,
    skip_bad_rows: bool = False,
    bpe_backend: str = "auto",
    download: bool = True,
    task_dir=None,
) -> Path:
    """Preprocess one GLUE task; returns the path of ``DEST/TASK-bin``.

    ``glue_dir`` holds one folder per task as the GLUE download script writes them (``task_dir`` points at the
    task's folder directly instead). ``model="albert"`` uses ``spm_model`` or the model found in ``vocab_dir``,
    or with ``train_spm_vocab_size=N`` trains a SentencePiece model of up to N pieces on the train split and
    writes it to ``TASK-bin/spiece.model``. Raises :class:`GlueInputError` (message ``file:line: reason``) on
    bad input, leaving ``TASK-bin`` as it was (after repairing what a killed earlier run left, see output_swap).
    """
    started = time.time()
    layout = glue_task(task)
    source = _task_dir(glue_dir, layout, task_dir)
    dest = Path(dest)
    final = dest / f"{layout.name}-bin"
    if dest.is_dir():  # first undo what a killed earlier run left, whatever happens to this one
        try:
            output_swap.recover(final)
        except OSError as err:
            raise GlueInputError(f"--dest {dest}: cannot write there ({err.strerror or err})") from None
    if model not in ("roberta", "albert"):
        raise GlueInputError(f"--model must be roberta or albert, not {model!r}")
    if train_spm_vocab_size and model != "albert":
        raise GlueInputError("--train-spm trains a SentencePiece vocabulary: it needs --model albert")
    if not source.is_dir():
        raise GlueInputError(f"{source}: missing {layout.name} folder (expected {layout.folder}/ in the GLUE folder)")
    splits = _present_splits(layout, source)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        tmp = output_swap.make_temp_dir(final)
    except OSError as err:
        raise GlueInputError(f"--dest {dest}: cannot write there ({err.strerror or err})") from None
    try:
        _build(layout, splits, source, tmp, dest, model, vocab_dir, workers, spm_model, train_spm_vocab_size,
               skip_bad_rows, bpe_backend, download)
        output_swap.swap_into_place(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("%s: wrote %s in %.1f s", layout.name, final, time.time() - started)
    return final


def _present_splits(layout: GlueTask, source: Path):
    """The splits to binarize: all of them, except that an absent unlabelled (test) split is skipped with a notice.

    Train and dev are required; so is the only split of a task that has no labelled one (AX's diagnostic.tsv).
    """
    present = []
    for split in layout.splits:  # every required split must be there before any work starts
        if (source / split.tsv).is_file():
            present.append(split)
        elif split.labelled or not layout.labelled:
            raise GlueInputError(f"{source / split.tsv}: missing {layout.name} split '{split.tsv}'")
        else:
            logger.info("%s: no %s in %s; the %s split is skipped (no predictions for it)", layout.name, split.tsv,
                        source, split.output)
    return present


def _check_dev_labels(layout: GlueTask, splits: List[SplitRows], skip_bad_rows: bool) -> None:
    """A dev label that train never has would be written as <unk> and crash the first validation: stop here."""
    if layout.regression:
        return
    labelled = [r for r in splits if r.layout.labelled]
    train = next((r for r in labelled if r.layout.output == "train"), None)
    if train is None:
        return
    known = set(train.labels)
    for rows in labelled:
        if rows is train or rows.labels is None:
            continue
        bad = [i for i, label in enumerate(rows.labels) if label not in known]
        if not bad:
            continue
        messages = [f"{rows.path}:{rows.line_numbers[i]}: label {rows.labels[i]!r} never occurs in {train.path.name}, "
                    f"so the model has no class for it (train labels: {', '.join(sorted(known))})" for i in bad]
        if not skip_bad_rows:
            raise GlueInputError(messages[0])
        rows.drop_rows(bad, "label not in train", messages)


def _require_rows(rows: SplitRows) -> None:
    """An empty split passes fairseq-preprocess but fails training (`cannot mmap an empty file`): stop here."""
    if len(rows):
        return
    if rows.source_rows == 0:
        where = "only a header line, no data rows" if rows.header_lines else "empty file"
        raise GlueInputError(f"{rows.path}:1: {where}; the {rows.layout.output} split would be empty")
    reasons = [f"{count} {reason}" for reason, count in sorted(rows.skipped.items())]
    if rows.dropped_malformed:
        reasons.append(f"{rows.dropped_malformed} without {rows.layout.drop_rows_without_fields} fields")
    raise GlueInputError(f"{rows.path}: none of its {rows.source_rows} data rows was kept ({', '.join(reasons)}); "
                         f"the {rows.layout.output} split would be empty")


def _build(layout, present, source, out, dest, model, vocab_dir, workers, spm_model, train_spm_vocab_size,
           skip_bad_rows, bpe_backend, download):
    work = out / ".work"
    work.mkdir()
    normalize = str.strip if model == "roberta" else albert_spm.albert_normalize
    splits = [read_split(source / s.tsv, s, layout, normalize, skip_bad_rows) for s in present]
    for rows in splits:
        _require_rows(rows)
    _check_dev_labels(layout, splits, skip_bad_rows)

    if model == "roberta":
        vocab = _roberta_vocabulary(vocab_dir, workers, bpe_backend, download)
    else:
        if train_spm_vocab_size:
            train = next((r for r in splits if r.layout.output == "train"), None)
            if train is None:
                raise GlueInputError(f"--train-spm: {layout.name} has no train split to learn a vocabulary from")
            model_path = albert_spm.train_spm(
                (s for col in train.sentences for s in col), train_spm_vocab_size, out / "spiece.model", workers
            )
        else:
            model_path = albert_spm.find_spm_model(spm_model, vocab_dir)
            shutil.copyfile(model_path, out / "spiece.model")
        vocab = _albert_vocabulary(model_path, work, workers)

    manifest = {"task": layout.name, "model": model, "num_classes": layout.num_classes,
                "regression": layout.regression, "source": str(source.resolve()),
                "vocabulary": {k: str(v) for k, v in vocab.files.items()},
                "fairseq_train_args": "--init-token 0 --separator-token 2" if model == "roberta" else "--init-token 0",
                "splits": {}}
    if model == "albert":
        manifest["vocabulary"]["spm_model"] = "spiece.model"  # inside TASK-bin
        if train_spm_vocab_size:
            manifest["vocabulary"]["spm_source"] = f"trained on {splits[0].path.name}, {len(vocab.encoder)} pieces"

    # inputs
    encoded = [_encode_split(rows, vocab, skip_bad_rows) for rows in splits]
    for rows in splits:
        _require_rows(rows)
    for i in range(layout.num_inputs):
        input_dir = out / f"input{i}"
        input_dir.mkdir()
        if vocab.copy_dict_file:
            shutil.copyfile(vocab.dictionary_file, input_dir / "dict.txt")
        else:
            vocab.dictionary.save(str(input_dir / "dict.txt"))  # what fairseq-preprocess --srcdict writes
        for rows, enc in zip(splits, encoded):
            ids, sizes = enc[i]
            write_dataset(input_dir / rows.layout.output, ids, sizes, len(vocab.dictionary))

    # labels
    labelled = [r for r in splits if r.layout.labelled]
    if labelled:
        label_dir = out / "label"
        label_dir.mkdir()
        if layout.regression:
            for rows in labelled:  # fairseq's script writes score / 5 as text: train.label, valid.label
                with open(label_dir / f"{rows.layout.output}.label", "w", encoding="utf-8") as f:
                    f.writelines(stsb_target(label) + "\n" for label in rows.labels)
        else:
            train = next((r for r in labelled if r.layout.output == "train"), labelled[0])
            label_dict = build_label_dictionary(train.labels)
            label_dict.save(str(label_dir / "dict.txt"))
            seen = sorted(set(train.labels))
            if layout.labels and len(seen) < len(layout.labels):  # a subset of the task: the head follows the data
                logger.warning("%s: %s has %d of the %d %s labels (no %s): train with --num-classes %d",
                               layout.name, train.path, len(seen), len(layout.labels), layout.name,
                               ", ".join(sorted(set(layout.labels) - set(seen))), len(seen))
            manifest["num_classes"] = len(seen)
            for rows in labelled:
                ids, sizes = encode_labels(label_dict, rows.labels)
                write_dataset(label_dir / rows.layout.output, ids, sizes, len(label_dict))
    elif layout.name == "AX":
        mnli_labels = dest / "MNLI-bin" / "label" / "dict.txt"
        if mnli_labels.is_file():  # AX is predicted with an MNLI model: same class order
            (out / "label").mkdir()
            shutil.copyfile(mnli_labels, out / "label" / "dict.txt")
            manifest["label_dictionary"] = str(mnli_labels.resolve())
        else:
            logger.info("AX: no %s yet; predictions need the MNLI model's label/dict.txt", mnli_labels)

    for rows in splits:
        info = manifest["splits"][rows.layout.output] = {
            "tsv": str(rows.path.resolve()), "rows": len(rows), "skipped": dict(rows.skipped),
            "dropped_malformed": rows.dropped_malformed,
            # GLUE's index of a row: its index column (test files), else its 0-based data row in the tsv;
            # fairseq-npu-predict numbers the submission with these, so that dropped rows do not shift the later ones
            "source_rows": rows.source_rows, "dropped_indices": rows.dropped_indices(),
        }
        if rows.indices is not None:
            info["index_column"] = rows.layout.index_column
            dropped = set(info["dropped_indices"])
            if rows.indices != [i for i in range(rows.source_rows) if i not in dropped]:
                info["indices"] = rows.indices  # only where the column is not simply 0..N-1 in file order
        _report(layout, rows)
    missing = [s for s in layout.splits if s not in present]
    if missing:
        manifest["missing_splits"] = {s.output: s.tsv for s in missing}
    shutil.rmtree(work)
    with open(out / MANIFEST, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")


def _report(layout: GlueTask, rows: SplitRows) -> None:
    logger.info("%s %s -> %s: %d rows", layout.name, rows.layout.tsv, rows.layout.output, len(rows))
    if rows.dropped_malformed:
        logger.info("%s %s: dropped %d rows without %d fields (fairseq's QQP rule)", layout.name, rows.layout.tsv,
                    rows.dropped_malformed, rows.layout.drop_rows_without_fields)
    for reason, count in sorted(rows.skipped.items()):
        logger.warning("%s %s: skipped %d rows (%s), first: %s", layout.name, rows.layout.tsv, count, reason,
                       rows.first_skipped.get(reason, ""))


# --------------------------------------------------------------------------------------------------------------
# command line


def expand_tasks(tasks: str, glue_dir=None) -> List[str]:
    """``ALL`` -> every GLUE task whose folder is in ``glue_dir``; otherwise a comma-separated list of names."""
    if tasks.strip().upper() == "ALL":
        names = [n for n in ALL_TASKS if glue_dir is None or (Path(glue_dir) / GLUE_TASKS[n].folder).is_dir()]
        if not names:
            raise GlueInputError(f"{glue_dir}: no GLUE task folder found (expected some of "
                                 f"{', '.join(GLUE_TASKS[n].folder for n in ALL_TASKS)})")
        return names
    try:
        return [glue_task(t).name for t in tasks.split(",") if t.strip()]
    except ValueError as err:
        raise GlueInputError(f"TASK: {err}") from None


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fairseq-npu-preprocess-glue",
        description="GLUE tsv files -> fairseq binary data (DEST/TASK-bin/{input0,input1,label}) for "
        "sentence_prediction, with GPT-2 BPE (RoBERTa) or SentencePiece (ALBERT).",
    )
    parser.add_argument("glue_dir", metavar="GLUE_DIR", help="GLUE data folder (one folder per task)")
    parser.add_argument("tasks", metavar="TASK", help=f"a task ({', '.join(ALL_TASKS)}), several joined by "
                        "commas, or ALL (every task found in GLUE_DIR)")
    gen_parser_from_dataclass(parser, GluePreprocessConfig())
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = get_parser().parse_args(argv)
    try:
        tasks = expand_tasks(args.tasks, args.glue_dir if args.tasks.strip().upper() == "ALL" else None)
    except GlueInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return BAD_INPUT
    failed = []
    for task in tasks:
        try:
            preprocess_task(
                args.glue_dir, task, dest=args.dest, model=str(args.model), vocab_dir=args.vocab_dir,
                workers=args.workers, spm_model=args.spm_model, train_spm_vocab_size=args.train_spm or None,
                skip_bad_rows=args.skip_bad_rows, bpe_backend=str(args.bpe_backend), download=not args.no_download,
            )
        except GlueInputError as err:
            print(f"error: {err}", file=sys.stderr)
            failed.append(task)
    if failed:
        if len(tasks) > 1:
            print(f"error: {len(failed)} of {len(tasks)} tasks failed: {', '.join(failed)}", file=sys.stderr)
        return BAD_INPUT
    return 0


def cli_main() -> None:
    logging.basicConfig(
        format="%(asctime)s | %(levelname)s | %(name)s | %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
        level=os.environ.get("LOGLEVEL", "INFO").upper(),
        stream=sys.stderr,
        force=True,  # importing fairseq may already have configured the root logger
    )
    sys.exit(main())


if __name__ == "__main__":
    cli_main()
