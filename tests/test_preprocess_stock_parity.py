"""Byte-identical output to fairseq's own GLUE pipeline on the real SST-2, STS-B, RTE, MRPC and CoLA files.

Two checks, because the stock pipeline is slow (fairseq's Python BPE and Binarizer: minutes for these five tasks
on two cores, far over the test budget):

* live: the steps of the installed fairseq's examples/roberta/preprocess_GLUE_tasks.sh run here with the real
  tools (``tail``/``cut``/``awk``; examples/roberta/multiprocessing_bpe_encoder.py ``main()`` with
  ``--keep-empty``; fairseq_cli/preprocess.py ``main()``), in this process, on the first rows of every split of
  the five tasks; our output must equal theirs byte for byte;
* full: our output for the complete five tasks must have the sha256 of every file that the stock script itself
  wrote (tests/test_preprocess_stock_sha256.json, made by ``python -m benchmarks.bench_preprocess --cases ''
  --write-stock-hashes tests/test_preprocess_stock_sha256.json``, which runs the unmodified script by bash).
"""

import contextlib
import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_npu.preprocess import preprocess_task

# as conftest's shared_data fixture, but usable from module-scoped fixtures
SHARED_DATA = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

STOCK_HASHES = Path(__file__).with_name("test_preprocess_stock_sha256.json")
LIVE_ROWS = 150  # rows per split in the live comparison

PARITY_TASKS = ("SST-2", "STS-B", "RTE", "MRPC", "CoLA")

# the column map of fairseq's preprocess_GLUE_tasks.sh for these tasks:
# (input columns, test input columns, label column, single sentence)
STOCK_COLUMNS = {
    "MRPC": ((4, 5), (4, 5), 1),
    "RTE": ((2, 3), (2, 3), 4),
    "STS-B": ((8, 9), (8, 9), 10),
    "SST-2": ((1,), (2,), 2),
    "CoLA": ((4,), (2,), 2),
}


@contextlib.contextmanager
def _argv(argv):
    saved = sys.argv
    sys.argv = argv
    try:
        yield
    finally:
        sys.argv = saved


def _sh(cmd, out: Path):
    with open(out, "wb") as f:
        subprocess.run(cmd, stdout=f, check=True)


def run_stock_pipeline(task_dir: Path, task: str, dest: Path, vocab: Path, work: Path) -> Path:
    """fairseq's preprocess_GLUE_tasks.sh for one task, step by step with the stock tools; returns TASK-bin."""
    from fairseq.examples.roberta import multiprocessing_bpe_encoder
    from fairseq_cli import preprocess as fairseq_preprocess

    columns, test_columns, label_column = STOCK_COLUMNS[task]
    processed = work / f"{task}-processed"
    processed.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        src, tsv = task_dir / f"{split}.tsv", processed / f"{split}.tsv"
        if task == "CoLA" and split != "test":
            tsv.write_bytes(src.read_bytes())
        else:
            _sh(["tail", "-n", "+2", str(src)], tsv)
        for i, col in enumerate(test_columns if split == "test" else columns):
            _sh(["cut", f"-f{col}", str(tsv)], processed / f"{split}.raw.input{i}")
            with _argv(["multiprocessing_bpe_encoder", "--encoder-json", str(vocab / "encoder.json"),
                        "--vocab-bpe", str(vocab / "vocab.bpe"), "--inputs", str(processed / f"{split}.raw.input{i}"),
                        "--outputs", str(processed / f"{split}.input{i}"), "--workers", "1", "--keep-empty"]):
                multiprocessing_bpe_encoder.main()
        if split != "test":
            _sh(["cut", f"-f{label_column}", str(tsv)], processed / f"{split}.label")

    out = dest / f"{task}-bin"
    parser = fairseq_preprocess.options.get_preprocessing_parser()

    def binarize(argv):
        fairseq_preprocess.main(parser.parse_args(argv))
        for handler in list(fairseq_preprocess.logger.handlers):  # main() adds a preprocess.log handler per call
            if isinstance(handler, logging.FileHandler):
                fairseq_preprocess.logger.removeHandler(handler)
                handler.close()

    for i in range(len(columns)):
        binarize(["--only-source", "--trainpref", str(processed / f"train.input{i}"),
                  "--validpref", str(processed / f"dev.input{i}"), "--testpref", str(processed / f"test.input{i}"),
                  "--destdir", str(out / f"input{i}"), "--workers", "1", "--srcdict", str(vocab / "dict.txt")])
    if task != "STS-B":
        binarize(["--only-source", "--trainpref", str(processed / "train.label"),
                  "--validpref", str(processed / "dev.label"), "--destdir", str(out / "label"), "--workers", "1"])
    else:
        (out / "label").mkdir(parents=True)
        for split, name in (("train", "train"), ("dev", "valid")):
            _sh(["awk", "{print $1 / 5.0 }", str(processed / f"{split}.label")], out / "label" / f"{name}.label")
    return out


def output_files(bin_dir: Path):
    """Relative paths of a TASK-bin, without the logs/manifests that are not data (preprocess.log/.json)."""
    return sorted(
        str(p.relative_to(bin_dir)) for p in bin_dir.rglob("*") if p.is_file() and not p.name.startswith("preprocess.")
    )


def _head(src: Path, dst: Path, rows: int):
    dst.mkdir(parents=True)
    for split in ("train", "dev", "test"):
        lines = (src / f"{split}.tsv").read_bytes().split(b"\n")
        (dst / f"{split}.tsv").write_bytes(b"\n".join(lines[: rows + 1]) + b"\n")


def _shared_data() -> Path:
    if not (SHARED_DATA / "glue").is_dir():
        pytest.skip(f"real GLUE data not found at {SHARED_DATA} (set FAIRSEQ_NPU_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    shared = _shared_data()
    vocab = shared / "vocab" / "gpt2_bpe"
    root = tmp_path_factory.mktemp("parity")
    stock, ours = {}, {}
    for task in PARITY_TASKS:
        _head(shared / "glue" / task, root / "glue" / task, LIVE_ROWS)
        stock[task] = run_stock_pipeline(root / "glue" / task, task, root / "stock", vocab, root / "work")
        ours[task] = preprocess_task(root / "glue", task, dest=root / "ours", vocab_dir=vocab, workers=2,
                                     download=False)
    return stock, ours


@pytest.mark.parametrize("task", PARITY_TASKS)
def test_byte_identical_to_fairseq_pipeline_live(live, task):
    stock, ours = live[0][task], live[1][task]
    files = output_files(stock)
    expected = {"input0/dict.txt", "input0/train.bin", "input0/train.idx", "input0/valid.bin", "input0/valid.idx",
                "input0/test.bin", "input0/test.idx"}
    assert expected <= set(files)
    assert output_files(ours) == files
    for rel in files:
        assert (ours / rel).read_bytes() == (stock / rel).read_bytes(), f"{task}-bin/{rel} differs from fairseq's"


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    shared = _shared_data()
    root = tmp_path_factory.mktemp("full")
    return {task: preprocess_task(shared / "glue", task, dest=root, vocab_dir=shared / "vocab" / "gpt2_bpe",
                                  workers=2, download=False) for task in PARITY_TASKS}


@pytest.mark.parametrize("task", PARITY_TASKS)
def test_full_real_task_has_the_stock_scripts_bytes(full, task):
    expected = json.loads(STOCK_HASHES.read_text())[task]
    got = {rel: hashlib.sha256((full[task] / rel).read_bytes()).hexdigest() for rel in output_files(full[task])}
    assert sorted(got) == sorted(expected)
    assert [rel for rel in expected if got[rel] != expected[rel]] == []


def test_full_outputs_have_the_glue_row_counts(full):
    """The identity above is not vacuous: the real splits are all there (GLUE sizes, minus header lines)."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    assert len(MMapIndexedDataset(str(full["SST-2"] / "input0" / "train"))) == 67349
    assert len(MMapIndexedDataset(str(full["CoLA"] / "input0" / "train"))) == 8551
    assert len(MMapIndexedDataset(str(full["RTE"] / "input1" / "valid"))) == 277
    assert len(MMapIndexedDataset(str(full["MRPC"] / "label" / "train"))) == 3668
    assert (full["STS-B"] / "label" / "valid.label").read_text().count("\n") == 1500
    assert (full["SST-2"] / "label" / "dict.txt").read_text() == "1 37569\n0 29780\nmadeupword0000 0\nmadeupword0001 0\n"
