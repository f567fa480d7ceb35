"""Binarize a single-sentence GLUE-layout task with a word-level dictionary, via stock fairseq-preprocess.

The foundation tests need fairseq-format data without depending on any vocabulary file: whitespace words
are the tokens, and fairseq's own preprocessor builds the dictionary and the binary files.
"""

from pathlib import Path

from fairseq import options
from fairseq_cli import preprocess


def _split_tsv(tsv: Path, out_dir: Path, split: str):
    lines = tsv.read_text(encoding="utf-8").splitlines()[1:]
    sentences = [line.split("\t")[0] for line in lines]
    labels = [line.split("\t")[1] for line in lines]
    (out_dir / f"{split}.input0").write_text("\n".join(sentences) + "\n", encoding="utf-8")
    (out_dir / f"{split}.label").write_text("\n".join(labels) + "\n", encoding="utf-8")


def _fairseq_preprocess(args):
    parser = options.get_preprocessing_parser()
    preprocess.main(parser.parse_args(args))


def binarize_single_sentence_task(task_dir, dest) -> Path:
    """``task_dir`` holds train.tsv / dev.tsv (``sentence<TAB>label`` with header); writes dest/{input0,label}."""
    task_dir, dest = Path(task_dir), Path(dest)
    raw = dest / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    _split_tsv(task_dir / "train.tsv", raw, "train")
    _split_tsv(task_dir / "dev.tsv", raw, "valid")
    for field in ("input0", "label"):
        _fairseq_preprocess([
            "--only-source", "--trainpref", str(raw / f"train.{field}"), "--validpref", str(raw / f"valid.{field}"),
            "--destdir", str(dest / field), "--workers", "1",
        ])
    return dest
