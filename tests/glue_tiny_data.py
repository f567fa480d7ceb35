"""Tiny binarized sentence-prediction data sets in fairseq's GLUE layout, for the task, metric and CLI tests."""

import logging
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import pytest
from fairseq.data import Dictionary, indexed_dataset


def _write_split(prefix: Path, dictionary: Dictionary, lines: Sequence[str]):
    prefix.parent.mkdir(parents=True, exist_ok=True)
    builder = indexed_dataset.make_builder(str(prefix) + ".bin", impl="mmap", vocab_size=len(dictionary))
    for line in lines:
        builder.add_item(dictionary.encode_line(line, add_if_not_exist=False, append_eos=True).long())
    builder.finalize(str(prefix) + ".idx")


def random_sentences(rng: np.random.RandomState, n: int, vocab: List[str], min_len: int, max_len: int) -> List[str]:
    lengths = rng.randint(min_len, max_len + 1, size=n)
    return [" ".join(rng.choice(vocab, size=k)) for k in lengths]


def make_glue_dir(
    root: Path,
    splits: Dict[str, int],
    pair: bool = False,
    regression: bool = False,
    labels: Sequence[str] = ("0", "1"),
    min_len: int = 2,
    max_len: int = 20,
    seed: int = 0,
    unlabelled: Sequence[str] = ("test",),
) -> Path:
    """Write ``root/{input0,input1,label}`` with ``splits`` = {split: n sentences}; labels follow a learnable rule.

    Classification labels depend on whether token "w0" occurs in the first sentence; regression targets in [0, 1]
    are the share of "w0"..."w4" tokens. Splits named in ``unlabelled`` get no labels, like GLUE test sets.
    """
    rng = np.random.RandomState(seed)
    vocab = [f"w{i}" for i in range(30)]
    d = Dictionary()
    for w in vocab:
        d.add_symbol(w, n=100)
    d.finalize(padding_factor=1)
    for key in ["input0"] + (["input1"] if pair else []):
        (root / key).mkdir(parents=True, exist_ok=True)
        d.save(str(root / key / "dict.txt"))
    label_dict = Dictionary()
    label_lines: Dict[str, List[str]] = {}
    for split, n in splits.items():
        s0 = random_sentences(rng, n, vocab, min_len, max_len)
        _write_split(root / "input0" / split, d, s0)
        if pair:
            _write_split(root / "input1" / split, d, random_sentences(rng, n, vocab, min_len, max_len))
        if split in unlabelled:
            continue
        if regression:
            label_lines[split] = [
                f"{sum(t in {'w0', 'w1', 'w2', 'w3', 'w4'} for t in s.split()) / len(s.split()):.4f}" for s in s0
            ]
        else:
            label_lines[split] = [labels[int("w0" in s.split()) % len(labels)] for s in s0]
    (root / "label").mkdir(parents=True, exist_ok=True)
    if regression:
        for split, lines in label_lines.items():
            (root / "label" / f"{split}.label").write_text("".join(line + "\n" for line in lines))
    else:
        for lines in label_lines.values():
            for line in lines:
                label_dict.add_symbol(line)
        label_dict.finalize(padding_factor=1)  # sorted by frequency, as fairseq-preprocess builds it
        label_dict.save(str(root / "label" / "dict.txt"))
        for split, lines in label_lines.items():
            _write_split(root / "label" / split, label_dict, lines)
    return root


def label_strings(root: Path, split: str) -> Optional[List[str]]:
    """The label (or regression target) lines of ``split`` as written, in order."""
    raw = root / "label" / f"{split}.label"
    if raw.exists():
        return raw.read_text().split()
    d = Dictionary.load(str(root / "label" / "dict.txt"))
    ds = indexed_dataset.MMapIndexedDataset(str(root / "label" / split))
    return [d[int(ds[i][0])] for i in range(len(ds))]


def tiny_roberta_args(data: Path, task: str, extra: Sequence[str] = ()) -> List[str]:
    """fairseq-train arguments for a 1-layer, 32-wide RoBERTa on ``data`` (CPU, no checkpoints)."""
    return [
        str(data), "--user-dir", str(Path(__file__).resolve().parents[1] / "fairseq_npu"),
        "--task", task, "--criterion", "sentence_prediction", "--arch", "roberta",
        "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--max-positions", "64", "--num-classes", "2",
        "--init-token", "0", "--separator-token", "2",
        "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "8", "--required-batch-size-multiple", "1",
        "--cpu", "--seed", "3", "--log-format", "json", "--log-interval", "1", "--no-progress-bar",
        "--no-save", "--disable-validation", "--num-workers", "0", *extra,
    ]


def train_in_process(argv: Sequence[str]) -> List[dict]:
    """Run fairseq-train in this process; returns the JSON records it logged (train_inner, train, valid)."""
    import json
    import logging

    from fairseq import options
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq.logging import progress_bar
    from fairseq_cli import train

    records: List[dict] = []

    class Capture(logging.Handler):
        def emit(self, record):
            try:
                stats = json.loads(record.getMessage())
            except ValueError:
                return
            if isinstance(stats, dict):
                records.append({"tag": record.name, **stats})

    handler = Capture()
    progress_bar.logger.addHandler(handler)
    level = progress_bar.logger.level
    progress_bar.logger.setLevel(logging.INFO)  # records are logged at INFO, whatever the root level
    try:
        parser = options.get_training_parser()
        args = options.parse_args_and_arch(parser, input_args=list(argv))
        distributed_utils.call_main(convert_namespace_to_omegaconf(args), train.main)
    finally:
        progress_bar.logger.removeHandler(handler)
        progress_bar.logger.setLevel(level)
    return records


def train_error(argv, capsys, monkeypatch):
    """fairseq-train ARGV in this process: (exit code, last stderr line)."""
    monkeypatch.setattr(sys, "argv", ["fairseq-train"])
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(argv)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err.strip().splitlines()[-1]


def cli(main, argv, capsys):
    """A console script's cli_main(argv) in this process: (exit code, stderr). The commands set the root logger's
    level, which is put back for the tests after this one."""
    root = logging.getLogger()
    level = root.level
    try:
        code = main(argv)
    finally:
        root.setLevel(level)
    return code, capsys.readouterr().err
