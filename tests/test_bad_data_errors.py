"""Input a user must fix ends every command with one line and exit code 2, not a traceback nor a wrong result.

Binarized data that does not fit together (a truncated .bin, the .idx of another split, a dict.txt shorter than the
ids, an empty or garbage .idx, labels of another length), a sentence longer than the model's positions, a split
that does not exist, an --output-dir that is a file, a regression checkpoint on classification data (and the
reverse: predict wrote a submission of floats and exited 0), a converted (masked_lm) model given to evaluate, and
--regression-target on classification data. One case runs the real fairseq-train; the others run the commands'
entry points in this process.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from glue_tiny_data import cli, make_glue_dir, tiny_roberta_args, train_error, train_in_process


def args(data: Path, save: Path, updates: int = 1, extra=()):
    argv = tiny_roberta_args(data, "sentence_prediction_npu", [
        "--max-update", str(updates), "--save-dir", str(save), "--no-epoch-checkpoints", *extra])
    return [a for a in argv if a != "--no-save"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Classification and regression data, and a checkpoint of one update on each."""
    root = tmp_path_factory.mktemp("bad_data")
    cls = make_glue_dir(root / "SST-2-bin", {"train": 16, "valid": 8, "test": 8}, seed=5)
    reg = make_glue_dir(root / "STS-B-bin", {"train": 16, "valid": 8, "test": 8}, regression=True, seed=5)
    train_in_process(args(cls, root / "cls"))
    train_in_process(args(reg, root / "reg", extra=["--num-classes", "1", "--regression-target",
                                                    "--best-checkpoint-metric", "loss"]))
    return root, cls, reg, root / "cls" / "checkpoint_last.pt", root / "reg" / "checkpoint_last.pt"


def damaged_copy(data: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / data.name
    shutil.copytree(data, copy)
    change(copy)
    return copy


def cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# --------------------------------------------------------------------------------------------------------------
# the real command


def test_truncated_bin_is_one_line(tiny, tmp_path):
    root, cls, *_ = tiny
    data = damaged_copy(cls, tmp_path, lambda d: cut(d / "input0" / "train.bin", 40))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    done = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args(data, tmp_path / "save")],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    train = data / "input0" / "train"
    size = (cls / "input0" / "train.bin").stat().st_size
    assert done.stderr.strip().splitlines()[-1] == (
        f"fairseq-train: error: {train}.bin: 40 bytes, but its index train.idx describes {size} (16 sentences); the "
        ".bin is truncated, or the two files come from different splits or runs: binarize the split again")


# --------------------------------------------------------------------------------------------------------------
# fairseq-train, in this process


def _other_split_idx(d):
    shutil.copyfile(d / "input0" / "valid.idx", d / "input0" / "train.idx")


def _short_dict(d):
    lines = (d / "input0" / "dict.txt").read_text().splitlines(keepends=True)
    (d / "input0" / "dict.txt").write_text("".join(lines[:5]))


def _labels_of_valid(d):
    for ext in (".idx", ".bin"):
        shutil.copyfile(d / "label" / f"valid{ext}", d / "label" / f"train{ext}")


CASES = {
    "idx-of-another-split": (_other_split_idx, lambda d: (
        f"{d}/input0/train.bin: {(d / 'input0' / 'train.bin').stat().st_size} bytes, but its index train.idx "
        f"describes {(d / 'input0' / 'valid.bin').stat().st_size} (8 sentences); the .bin is truncated, or the two "
        "files come from different splits or runs: binarize the split again")),
    "dict-shorter-than-ids": (_short_dict, lambda d: (
        f"{d}/input0/train.bin holds token id 33, but {d}/input0/dict.txt gives only 10 ids (0..9, with fairseq's "
        "special symbols); the split was binarized with another dictionary: binarize it again with this dict.txt")),
    "empty-idx": (lambda d: (d / "input0" / "train.idx").write_bytes(b""), lambda d: (
        f"{d}/input0/train.idx: the file is empty; binarize the split again (fairseq-preprocess)")),
    "garbage-idx": (lambda d: (d / "input0" / "train.idx").write_bytes(b"\x07garbage" * 20), lambda d: (
        f"{d}/input0/train.idx: not a fairseq index file (no MMIDIDX header); binarize the split again "
        "(fairseq-preprocess)")),
    "labels-of-another-split": (_labels_of_valid, lambda d: (
        f"{d}/label/train.idx: 8 sentences, but {d}/input0/train.idx has 16; the files of split 'train' come from "
        "different splits or runs: binarize the task again")),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_binarized_data_that_does_not_fit(tiny, tmp_path, capsys, monkeypatch, case):
    root, cls, *_ = tiny
    change, line = CASES[case]
    data = damaged_copy(cls, tmp_path, change)
    assert train_error(args(data, tmp_path / "save"), capsys, monkeypatch) == (2, "fairseq-train: error: " + line(data))


def test_regression_target_on_classification_data(tiny, tmp_path, capsys, monkeypatch):
    root, cls, *_ = tiny
    argv = args(cls, tmp_path / "save", extra=["--num-classes", "1", "--regression-target"])
    assert train_error(argv, capsys, monkeypatch) == (
        2, f"fairseq-train: error: {cls}/label holds class labels (train.bin, dict.txt), but --regression-target asks "
           f"for regression targets (label/train.label, as STS-B): {cls} is a classification task's data; drop "
           "--regression-target and give --num-classes")


def test_sentence_longer_than_max_positions_in_validation(tiny, tmp_path, capsys, monkeypatch):
    root, cls, *_ = tiny
    argv = [a for a in args(cls, tmp_path / "save", extra=["--max-positions", "8"]) if a != "--disable-validation"]
    assert train_error(argv, capsys, monkeypatch) == (
        2, "fairseq-train: error: split 'valid': sentence 6 has 22 tokens, more than the model's max positions (8); "
           "4 of 8 sentences are too long: raise --max-positions when training from scratch (a pretrained model's is "
           "fixed), shorten them, or pass --skip-invalid-size-inputs-valid-test to fairseq-train to skip them")


# --------------------------------------------------------------------------------------------------------------
# fairseq-npu-evaluate and fairseq-npu-predict, in this process


def evaluate(argv, capsys):
    from fairseq_npu.cli.evaluate import cli_main

    return cli(cli_main, argv, capsys)


def predict(argv, capsys):
    from fairseq_npu.cli.predict import cli_main

    return cli(cli_main, argv, capsys)


def test_evaluate_truncated_valid_bin(tiny, tmp_path, capsys):
    root, cls, _, cls_ckpt, _ = tiny
    data = damaged_copy(cls, tmp_path, lambda d: cut(d / "input0" / "valid.bin", 20))
    size = (cls / "input0" / "valid.bin").stat().st_size
    assert evaluate([str(data), "--path", str(cls_ckpt)], capsys) == (
        2, f"fairseq-npu-evaluate: error: {data}/input0/valid.bin: 20 bytes, but its index valid.idx describes {size} "
           "(8 sentences); the .bin is truncated, or the two files come from different splits or runs: binarize the "
           "split again\n")


def test_predict_a_split_that_does_not_exist(tiny, tmp_path, capsys):
    root, cls, _, cls_ckpt, _ = tiny
    assert predict([str(cls), "--path", str(cls_ckpt), "--split", "test7", "--output-dir", str(tmp_path)], capsys) == (
        2, f"fairseq-npu-predict: error: {cls}: no split 'test7' (no input0/test7.bin and .idx); the splits here are: "
           "test, train, valid\n")


def test_predict_output_dir_that_is_a_file(tiny, tmp_path, capsys):
    root, cls, _, cls_ckpt, _ = tiny
    (tmp_path / "out").write_text("x")
    assert predict([str(cls), "--path", str(cls_ckpt), "--output-dir", str(tmp_path / "out")], capsys) == (
        2, f"fairseq-npu-predict: error: --output-dir {tmp_path / 'out'}: {tmp_path / 'out'} is a file, not a "
           "directory\n")


REGRESSION = "a regression checkpoint (one output, --regression-target, as STS-B)"


def _run_on(command, data, checkpoint, tmp_path, capsys):
    """fairseq-npu-evaluate or -predict (into tmp_path) of ``checkpoint`` on ``data``: (exit code, stderr)."""
    run = evaluate if command == "evaluate" else predict
    extra = ["--output-dir", str(tmp_path)] if command == "predict" else []
    return run([str(data), "--path", str(checkpoint), *extra], capsys)


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_regression_checkpoint_on_classification_data(tiny, tmp_path, capsys, command):
    root, cls, _, _, reg_ckpt = tiny
    assert _run_on(command, cls, reg_ckpt, tmp_path, capsys) == (
        2, f"fairseq-npu-{command}: error: --path {reg_ckpt} is {REGRESSION}, but {cls} holds class labels "
           "(label/dict.txt): give a checkpoint trained on this task\n")
    assert list(tmp_path.iterdir()) == []  # no submission of floats


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_classification_checkpoint_on_regression_data(tiny, tmp_path, capsys, command):
    root, _, reg, cls_ckpt, _ = tiny
    assert _run_on(command, reg, cls_ckpt, tmp_path, capsys) == (
        2, f"fairseq-npu-{command}: error: --path {cls_ckpt} is a classification checkpoint, but {reg} holds "
           "regression targets (label/*.label, as STS-B): give a checkpoint trained on this task\n")
    assert list(tmp_path.iterdir()) == []


def test_classification_checkpoint_with_a_regression_glue_task(tiny, tmp_path, capsys):
    root, cls, _, cls_ckpt, _ = tiny
    assert predict([str(cls), "--path", str(cls_ckpt), "--glue-task", "STS-B", "--output-dir", str(tmp_path)],
                   capsys) == (
        2, f"fairseq-npu-predict: error: --path {cls_ckpt} is a classification checkpoint, but STS-B is a regression "
           "task: give a checkpoint trained on this task, or the right --glue-task\n")


def test_evaluate_a_converted_model(tiny, tmp_path, capsys):
    """A pretrained / converted model.pt (task masked_lm) failed on DATA/dict.txt, a path the user never named."""
    import torch

    from fairseq_npu.convert.checkpoint import checkpoint_state, fairseq_cfg

    root, cls, _, cls_ckpt, _ = tiny
    weights = torch.load(cls_ckpt, map_location="cpu", weights_only=False)["model"]
    options = {"max_positions": 64, "encoder_layers": 1, "encoder_embed_dim": 32, "encoder_ffn_embed_dim": 64,
               "encoder_attention_heads": 2}
    model = tmp_path / "model.pt"
    torch.save(checkpoint_state(weights, fairseq_cfg("roberta", options), "hf"), model)
    assert evaluate([str(cls), "--path", str(model)], capsys) == (
        2, f"fairseq-npu-evaluate: error: --path {model}: a masked_lm checkpoint (a pretrained or converted model) "
           f"has no trained classification head; fine-tune it first (fairseq-train --restore-file {model} ...) and "
           "give the checkpoint that run saves\n")


def test_evaluate_an_unlabelled_valid_split_suggests_no_other_valid(tiny, tmp_path, capsys):
    """The line used to say "evaluate a labelled split (e.g. --split valid)" of the valid split itself."""
    root, _, _, cls_ckpt, _ = tiny
    data = make_glue_dir(tmp_path / "SST-2-bin", {"train": 8, "valid": 8}, seed=5, unlabelled=("valid",))
    assert evaluate([str(data), "--path", str(cls_ckpt)], capsys) == (
        2, f"fairseq-npu-evaluate: error: {data}: split 'valid' has no labels; evaluate a labelled split or use "
           "fairseq-npu-predict\n")
