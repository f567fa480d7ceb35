"""Binarized SST-2 and STS-B for the benchmarks, in fairseq's GLUE layout (``TASK-bin/{input0,input1,label}``).

The benchmarks must compare stock fairseq and the plugin on exactly the same data, so the data is built once here
and cached. It follows fairseq's ``preprocess_GLUE_tasks.sh`` output: GPT-2 BPE ids mapped through the RoBERTa
``dict.txt`` (what ``multiprocessing_bpe_encoder.py`` + ``fairseq-preprocess --srcdict`` write) for RoBERTa, and
the ALBERT SentencePiece ids under the ``fairseq_npu.albert_vocab`` contract for ALBERT. Labels are a label
dictionary (classification) or the raw scores in ``label/{split}.label`` (regression), as stock writes them.

Everything is done in-process with fairseq's Dictionary, GPT-2 BPE and mmap dataset builder; a finished
``TASK-bin`` directory is renamed into place only when complete, so an interrupted build is rebuilt next time.
"""

import argparse
import csv
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

from benchmarks import common

DEFAULT_DATA = common.SHARED_DATA
DEFAULT_CACHE = common.WORK / "data"

# task -> (sentence columns, label column, regression)
TASKS: Dict[str, Tuple[Tuple[int, ...], int, bool]] = {
    "SST-2": ((0,), 1, False),
    "STS-B": ((7, 8), 9, True),
}
SPLITS = {"train": "train", "dev": "valid"}


def read_tsv(path: Path, columns: Tuple[int, ...], label_col: int) -> Tuple[List[List[str]], List[str]]:
    """Sentence columns and labels of a GLUE tsv (header skipped); a short row is an error naming file and line."""
    sentences: List[List[str]] = [[] for _ in columns]
    labels: List[str] = []
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        next(reader)
        for line_no, row in enumerate(reader, start=2):
            need = max(*columns, label_col) + 1
            if len(row) < need:
                raise ValueError(f"{path}:{line_no}: expected at least {need} tab-separated columns, got {len(row)}")
            for out, col in zip(sentences, columns):
                out.append(row[col])
            labels.append(row[label_col].strip())
    return sentences, labels


class _RobertaEncoder:
    def __init__(self, vocab_dir: Path):
        from fairseq.data import Dictionary
        from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

        self.bpe = get_encoder(str(vocab_dir / "gpt2_bpe" / "encoder.json"), str(vocab_dir / "gpt2_bpe" / "vocab.bpe"))
        self.dictionary = Dictionary.load(str(vocab_dir / "gpt2_bpe" / "dict.txt"))

    def encode(self, text: str):
        bpe_ids = " ".join(map(str, self.bpe.encode(text.strip())))
        return self.dictionary.encode_line(bpe_ids, append_eos=True, add_if_not_exist=False).long()


class _AlbertEncoder:
    def __init__(self, vocab_dir: Path, workdir: Path):
        import sentencepiece as spm
        import torch
        from fairseq.data import Dictionary

        from fairseq_npu import albert_vocab

        self._torch = torch
        self._albert_vocab = albert_vocab
        self.processor = spm.SentencePieceProcessor(model_file=str(vocab_dir / "albert" / "30k-clean.rebuilt.model"))
        dict_path = albert_vocab.write_fairseq_dict(vocab_dir / "albert" / "30k-clean.vocab", workdir / "albert.dict.txt")
        self.dictionary = Dictionary.load(str(dict_path))

    def encode(self, text: str):
        ids = self._albert_vocab.encode_text(self.processor, text)
        ids = self._torch.as_tensor(list(ids), dtype=self._torch.long)
        return self._torch.cat([ids, self._torch.tensor([self.dictionary.eos()])])


def _write_split(encoder, texts: List[str], prefix: Path) -> None:
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=len(encoder.dictionary))
    for text in texts:
        builder.add_item(encoder.encode(text))
    builder.finalize(str(prefix) + ".idx")


def _write_labels(labels_by_split: Dict[str, List[str]], label_dir: Path, regression: bool) -> None:
    from fairseq.data import Dictionary, indexed_dataset

    label_dir.mkdir(parents=True, exist_ok=True)
    if regression:
        for split, labels in labels_by_split.items():
            (label_dir / f"{split}.label").write_text("\n".join(labels) + "\n", encoding="utf-8")
        return
    # as fairseq-preprocess builds it from the training labels (most frequent first)
    d = Dictionary()
    for label in labels_by_split["train"]:
        d.add_symbol(label)
    d.finalize(padding_factor=1)
    d.save(str(label_dir / "dict.txt"))
    for split, labels in labels_by_split.items():
        builder = indexed_dataset.make_builder(str(label_dir / f"{split}.bin"), impl="mmap", vocab_size=len(d))
        for label in labels:
            builder.add_item(d.encode_line(label, append_eos=True, add_if_not_exist=False).long())
        builder.finalize(str(label_dir / f"{split}.idx"))


def build(model: str, task: str, data_dir: Path = DEFAULT_DATA, cache: Path = DEFAULT_CACHE) -> Path:
    """Path of ``cache/MODEL/TASK-bin``, built first if missing."""
    if task not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {task!r}")
    out = cache / model / f"{task}-bin"
    if (out / ".complete").exists():
        return out
    columns, label_col, regression = TASKS[task]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{task}-bin.", dir=out.parent))
    try:
        if model == "roberta":
            encoder = _RobertaEncoder(data_dir / "vocab")
        elif model == "albert":
            encoder = _AlbertEncoder(data_dir / "vocab", tmp)
        else:
            raise ValueError(f"model must be roberta or albert, got {model!r}")
        labels = {}
        for tsv_split, split in SPLITS.items():
            sentences, labels[split] = read_tsv(data_dir / "glue" / task / f"{tsv_split}.tsv", columns, label_col)
            for i, texts in enumerate(sentences):
                (tmp / f"input{i}").mkdir(exist_ok=True)
                _write_split(encoder, texts, tmp / f"input{i}" / split)
        for i in range(len(columns)):
            encoder.dictionary.save(str(tmp / f"input{i}" / "dict.txt"))
        _write_labels(labels, tmp / "label", regression)
        (tmp / ".complete").write_text("ok\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=("roberta", "albert"), action="append")
    p.add_argument("--task", choices=sorted(TASKS), action="append")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = p.parse_args(argv)
    for model in a.model or ["roberta", "albert"]:
        for task in a.task or sorted(TASKS):
            print(build(model, task, a.data_dir, a.cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
