"""fairseq-train refuses what would silently give a wrong run, in one line with exit code 2, and says when a flag is
ignored: a --restore-file / --finetune-from-model that does not exist, a truncated checkpoint_last.pt, --num-classes
against the label dictionary; --cpu wins over --device-type and $FAIRSEQ_NPU_DEVICE.

Most cases run fairseq-train's entry point (fairseq_cli.train.cli_main) in this process with sys.argv set as the
console script would; the launch script runs as a subprocess.
"""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_npu import device
from glue_tiny_data import make_glue_dir, tiny_roberta_args

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("train_checks") / "SST-2-bin", {"train": 16, "valid": 8}, seed=4)


@pytest.fixture(autouse=True)
def _device_choice(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)  # restored after the test, whatever the run exported
    device.reset()
    yield
    device.reset()


def run_train(argv, monkeypatch):
    from fairseq_cli import train

    monkeypatch.setattr(sys, "argv", ["fairseq-train", *map(str, argv)])
    train.cli_main()


def refused(argv, capsys, monkeypatch):
    """(exit code, last stderr line) of a fairseq-train run that must stop with a one-line error."""
    with pytest.raises(SystemExit) as exit_info:
        run_train(argv, monkeypatch)
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return exit_info.value.code, err.strip().splitlines()[-1]


def saving_args(data, save_dir, extra=()):
    args = tiny_roberta_args(data, "sentence_prediction_npu", ["--save-dir", str(save_dir), *extra])
    return [a for a in args if a != "--no-save"]


# --------------------------------------------------------------------------------------------------------------
# what a run restores from


def test_missing_restore_file_is_an_error(data, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "pretrained" / "model.pt"
    args = saving_args(data, tmp_path / "save", ["--max-update", "1", "--restore-file", missing])
    assert refused(args, capsys, monkeypatch) == (
        2, f"fairseq-train: error: --restore-file {missing}: no such checkpoint file")
    assert not (tmp_path / "save" / "checkpoint_last.pt").exists()


def test_missing_relative_restore_file_names_the_working_directory(data, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = saving_args(data, tmp_path / "save", ["--max-update", "1", "--restore-file", "roberta.base/model.pt"])
    assert refused(args, capsys, monkeypatch) == (
        2, f"fairseq-train: error: --restore-file roberta.base/model.pt: no such checkpoint file (relative to the "
           f"working directory {tmp_path})")


def test_missing_bare_restore_file_is_stocks_fresh_start_with_a_warning(data, tmp_path, caplog, monkeypatch):
    """fairseq's own tests pass --restore-file x.pt to start afresh in a save dir that holds a checkpoint_last.pt."""
    from fairseq import checkpoint_utils

    monkeypatch.chdir(tmp_path)
    save = tmp_path / "save"
    run_train(saving_args(data, save, ["--max-update", "1"]), monkeypatch)
    with caplog.at_level(logging.WARNING, logger="fairseq_npu.checkpoint_restore"):
        run_train(saving_args(data, save, ["--max-update", "1", "--restore-file", "x.pt"]), monkeypatch)
    assert [r.getMessage() for r in caplog.records if r.name == "fairseq_npu.checkpoint_restore"] == [
        f"--restore-file x.pt: no such file (relative to the working directory {tmp_path}); training starts from "
        "scratch (a bare file name is stock's fresh-start idiom; a path with a folder must exist)"]
    state = checkpoint_utils.load_checkpoint_to_cpu(str(save / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == 1  # started again from update 0, not resumed to 2


def test_missing_finetune_from_model_is_an_error(data, tmp_path, capsys, monkeypatch):
    missing = tmp_path / "model.pt"
    args = saving_args(data, tmp_path / "save", ["--max-update", "1", "--finetune-from-model", missing])
    assert refused(args, capsys, monkeypatch) == (
        2, f"fairseq-train: error: --finetune-from-model {missing}: no such checkpoint file")


def test_default_checkpoint_last_absent_is_a_fresh_start(data, tmp_path, monkeypatch):
    from fairseq import checkpoint_utils

    run_train(saving_args(data, tmp_path / "save", ["--max-update", "1"]), monkeypatch)
    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "save" / "checkpoint_last.pt"))
    assert state["optimizer_history"][-1]["num_updates"] == 1


def test_launch_script_with_missing_restore_file_fails(data, tmp_path):
    missing = tmp_path / "roberta.base" / "model.pt"
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(REPO / "test" / "train_full_1p.sh"), f"--data_path={data}", "--model=roberta", "--device=cpu",
         "--task=SST-2", "--batch-size=8", "--max-epoch=1", f"--output_dir={out}", f"--restore-file={missing}",
         "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "2", "--max-positions", "64", "--num-workers", "0"],
        capture_output=True, text=True, timeout=300, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable))
    assert run.returncode == 2, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"fairseq-train: error: --restore-file {missing}: no such checkpoint file\n" in (out / "train.log").read_text()
    assert json.loads((out / "summary.json").read_text())["status"] == "failed"


def test_truncated_checkpoint_last_names_the_newest_intact_checkpoint(data, tmp_path, capsys, monkeypatch):
    save = tmp_path / "save"
    run_train(saving_args(data, save, ["--max-update", "2", "--save-interval-updates", "1",
                                       "--no-epoch-checkpoints"]), monkeypatch)
    last = save / "checkpoint_last.pt"
    last.write_bytes(last.read_bytes()[:5000])  # what a kill during stock's in-place copy leaves
    device.reset()
    assert refused(saving_args(data, save, ["--max-update", "3"]), capsys, monkeypatch) == (
        2, f"fairseq-train: error: checkpoint {last} is truncated or corrupt (incomplete zip archive: File is not a "
           f"zip file); the newest intact checkpoint in {save} is {save / 'checkpoint_1_1.pt'} (resume from it with "
           f"--restore-file {save / 'checkpoint_1_1.pt'})")


# --------------------------------------------------------------------------------------------------------------
# --num-classes against the label dictionary


@pytest.mark.parametrize("task", ["sentence_prediction", "sentence_prediction_npu"])
def test_num_classes_must_match_the_label_dictionary(data, task, capsys, monkeypatch):
    args = tiny_roberta_args(data, task, ["--max-update", "1"])
    args[args.index("--num-classes") + 1] = "3"
    assert refused(args, capsys, monkeypatch) == (
        2, f"fairseq-train: error: --num-classes 3 does not match the 2 labels of the label dictionary "
           f"{data}/label/dict.txt (0, 1); pass --num-classes 2")


def test_num_classes_ignores_padding_symbols(tmp_path, monkeypatch):
    """fairseq-preprocess pads label dictionaries to a multiple of 8 (madeupword0000, ...): still 2 labels."""
    from fairseq.data import Dictionary

    padded = make_glue_dir(tmp_path / "SST-2-bin", {"train": 16, "valid": 8}, seed=4)
    labels = Dictionary.load(str(padded / "label" / "dict.txt"))
    labels.finalize(padding_factor=8)
    labels.save(str(padded / "label" / "dict.txt"))
    assert "madeupword0000" in (padded / "label" / "dict.txt").read_text()
    run_train(tiny_roberta_args(padded, "sentence_prediction_npu", ["--max-update", "1"]), monkeypatch)


# --------------------------------------------------------------------------------------------------------------
# --cpu wins


def _announced(monkeypatch):
    seen = []
    announce = device._announce
    monkeypatch.setattr(device, "_announce", lambda backend: (seen.append(backend.type), announce(backend)))
    return seen


def test_cpu_wins_over_device_type_npu_without_torch_npu(data, monkeypatch):
    seen = _announced(monkeypatch)
    run_train(tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1", "--device-type", "npu"]),
              monkeypatch)
    assert seen and set(seen) == {"cpu"} and device.get().type == "cpu"


def test_cpu_wins_over_the_environment_variable(data, monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "npu")
    seen = _announced(monkeypatch)
    run_train(tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1"]), monkeypatch)
    assert seen and set(seen) == {"cpu"}
    assert os.environ[device.ENV_VAR] == "cpu"  # what spawned workers would read


def test_cpu_wins_over_an_available_npu(data, npu_stand_in, monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "npu")
    seen = _announced(monkeypatch)
    run_train(tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1", "--device-type", "npu"]),
              monkeypatch)
    assert seen and set(seen) == {"cpu"}
    assert not [name for name, _ in npu_stand_in.CALLS if name == "set_device"]


# --------------------------------------------------------------------------------------------------------------
# flags that would be ignored say so


@pytest.mark.parametrize("flags, warning", [
    (["--group-window", "4"], "--group-window 4 has no effect without --group-by-length (ignored)"),
    (["--amp-dtype", "bfloat16"], "--amp-dtype bfloat16 has no effect without --amp (ignored)"),
    (["--amp-dtype", "bfloat16", "--fp16"], "--amp-dtype bfloat16 has no effect without --amp (ignored)"),
])
def test_ignored_flags_warn(data, flags, warning, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING):
        run_train(tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1", *flags]), monkeypatch)
    assert warning in [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("flags", [["--group-window", "4", "--group-by-length"], ["--amp-dtype", "bfloat16", "--amp"]])
def test_flags_in_use_do_not_warn(data, flags, caplog, monkeypatch):
    with caplog.at_level(logging.WARNING):
        run_train(tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1", *flags]), monkeypatch)
    assert not [r for r in caplog.records if "has no effect" in r.getMessage()]
