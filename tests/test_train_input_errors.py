"""Bad flags and data folders stop fairseq-train with one line naming them and exit code 2, not a traceback.

One case runs the fairseq-train console script; the others run the same entry point (fairseq_cli.train.cli_main)
in this process, with sys.argv set as the script would.
"""

import subprocess
import sys
from pathlib import Path

import pytest

from glue_tiny_data import make_glue_dir, tiny_roberta_args

FAIRSEQ_TRAIN = Path(sys.executable).with_name("fairseq-train")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("train_errors") / "SST-2-bin", {"train": 16, "valid": 8})


def train_cli(argv, capsys, monkeypatch):
    """fairseq-train ARGV in this process; returns (exit code, last stderr line)."""
    from fairseq_cli import train

    monkeypatch.setattr(sys, "argv", ["fairseq-train", *argv])
    with pytest.raises(SystemExit) as exit_info:
        train.cli_main()
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err.strip().splitlines()[-1]


def without(data: Path, sub: str, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / data.name
    shutil.copytree(data, copy, ignore=shutil.ignore_patterns(sub))
    return copy


def test_data_dir_without_label_folder_through_the_console_script(data, tmp_path):
    bad = without(data, "label", tmp_path)
    proc = subprocess.run([str(FAIRSEQ_TRAIN), *tiny_roberta_args(bad, "sentence_prediction_npu", ["--max-update", "1"])],
                          capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"fairseq-train: error: {bad}/label/dict.txt: missing; classification needs the label dictionary (for a "
        "regression task such as STS-B pass --regression-target)")


def test_data_dir_without_input0(data, tmp_path, capsys, monkeypatch):
    bad = without(data, "input0", tmp_path)
    assert train_cli(tiny_roberta_args(bad, "sentence_prediction_npu"), capsys, monkeypatch) == (
        2, f"fairseq-train: error: {bad}/input0/dict.txt: missing; {bad} is not a sentence-prediction data directory "
           "(the folder glue_scripts/preprocess_GLUE_tasks.sh writes (TASK-bin: input0/, [input1/,] label/))")


@pytest.mark.parametrize("value,message", [
    ("16,abc", "--pad-buckets takes comma-separated integers, got '16,abc'"),
    ("0,-5", "--pad-buckets takes positive lengths, got '0,-5'"),
])
def test_bad_pad_buckets(data, capsys, monkeypatch, value, message):
    argv = tiny_roberta_args(data, "sentence_prediction_npu", ["--pad-buckets", value])
    assert train_cli(argv, capsys, monkeypatch) == (2, f"fairseq-train: error: {message}")


@pytest.mark.parametrize("value", ["0.9,0.98x", "(0.9)", "(0.9, 1.5)", "__import__('os').system('touch PWNED')"])
def test_bad_adam_betas_are_parsed_as_literals_only(data, tmp_path, capsys, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    argv = tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1"])
    argv[argv.index("adam")] = "fused_adamw"
    code, line = train_cli(argv + ["--adam-betas", value], capsys, monkeypatch)
    assert (code, line) == (2, f"fairseq-train: error: --adam-betas {value!r}: expected two numbers in [0, 1), "
                               "e.g. '(0.9, 0.98)'")
    assert not (tmp_path / "PWNED").exists()  # stock's eval() would have run it


def test_good_adam_betas_forms():
    from fairseq_npu.optim.fused_adamw import parse_betas

    assert parse_betas("(0.9, 0.98)") == parse_betas("0.9,0.98") == parse_betas([0.9, 0.98]) == (0.9, 0.98)


def test_binary_input_dictionary(data, tmp_path, capsys, monkeypatch):
    bad = without(data, "nothing", tmp_path)
    (bad / "input0" / "dict.txt").write_bytes(b"w0 100\n\x80\x81\x00\xff 3\n")
    assert train_cli(tiny_roberta_args(bad, "sentence_prediction_npu"), capsys, monkeypatch) == (
        2, f"fairseq-train: error: {bad}/input0/dict.txt:2: not a fairseq dict.txt (byte 0x80 is not UTF-8 text)")


def test_stock_task_gets_the_same_line(data, tmp_path, capsys, monkeypatch):
    """Stock --task sentence_prediction, through the plugin's load_dictionary hook."""
    bad = without(data, "label", tmp_path)
    assert train_cli(tiny_roberta_args(bad, "sentence_prediction"), capsys, monkeypatch) == (
        2, f"fairseq-train: error: {bad}/label/dict.txt: missing; not a sentence-prediction data directory (the "
           "folder glue_scripts/preprocess_GLUE_tasks.sh writes (TASK-bin: input0/, [input1/,] label/)) (for a "
           "regression task such as STS-B pass --regression-target)")
    (bad / "label").mkdir()
    (bad / "label" / "dict.txt").write_bytes(b"0 10\n1\n")
    assert train_cli(tiny_roberta_args(bad, "sentence_prediction"), capsys, monkeypatch) == (
        2, f"fairseq-train: error: {bad}/label/dict.txt:2: not a fairseq dict.txt (expected '<token> <count>', "
           "got '1')")
