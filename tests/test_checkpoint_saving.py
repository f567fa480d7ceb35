"""A run killed while fairseq copies a checkpoint to checkpoint_last.pt resumes to the uninterrupted run's state.

fairseq writes the first file of a save (checkpoint_1_4.pt) atomically, then copies it to checkpoint_last.pt with
shutil.copyfile. The killed run here copies half of the file and receives SIGKILL inside that copy, the window a
real kill hits (stock fairseq leaves a truncated checkpoint_last.pt there). The rerun of the same command must
resume from the complete checkpoint_last.pt of the save before and end bit-identical to a run never killed.
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glue_tiny_data import make_glue_dir, tiny_roberta_args

# the killed run: fairseq-train whose shutil.copyfile dies half-way through its copy of the second save
KILL_DURING_COPY = '''
import os, shutil, signal, sys
copyfile = shutil.copyfile
def copy_half_then_die(src, dst, *args, **kwargs):
    if os.path.basename(src) == "checkpoint_1_4.pt":
        with open(src, "rb") as f:
            data = f.read()
        with open(dst, "wb") as f:
            f.write(data[: len(data) // 2])
        os.kill(os.getpid(), signal.SIGKILL)
    return copyfile(src, dst, *args, **kwargs)
shutil.copyfile = copy_half_then_die
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train", *sys.argv[1:]]
cli_main()
'''


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 64 sentences, batch 8: 8 updates an epoch, so the saves at updates 2, 4, 6 are all mid-epoch
    return make_glue_dir(tmp_path_factory.mktemp("kill_save") / "SST-2-bin", {"train": 64, "valid": 8}, seed=6)


def _args(data, save_dir):
    args = tiny_roberta_args(data, "sentence_prediction_npu", [
        "--max-update", "6", "--save-dir", str(save_dir), "--save-interval-updates", "2", "--no-epoch-checkpoints"])
    return [a for a in args if a != "--no-save"]


def _run(command):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def _train(data, save_dir):
    run = _run([sys.executable, "-m", "fairseq_cli.train", *_args(data, save_dir)])
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    return run


def _state(path: Path):
    ck = torch.load(path, map_location="cpu", weights_only=False)
    return ck["optimizer_history"][-1]["num_updates"], ck["model"], ck["last_optimizer_state"]["state"]


def test_kill_during_the_copy_to_checkpoint_last_resumes_exactly(data, tmp_path):
    whole = tmp_path / "whole"
    _train(data, whole)

    save = tmp_path / "killed"
    killed = _run([sys.executable, "-c", KILL_DURING_COPY, *_args(data, save)])
    assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-2000:]
    assert (save / "checkpoint_1_4.pt").exists() and not (save / "checkpoint_1_6.pt").exists()
    assert _state(save / "checkpoint_last.pt")[0] == 2  # the save before, complete

    rerun = _train(data, save)
    assert "Loaded checkpoint" in rerun.stdout and "(epoch 1 @ 2 updates)" in rerun.stdout, rerun.stdout[-3000:]
    updates, model, moments = _state(save / "checkpoint_last.pt")
    ref_updates, ref_model, ref_moments = _state(whole / "checkpoint_last.pt")
    assert updates == ref_updates == 6
    assert [k for k in ref_model if not torch.equal(model[k], ref_model[k])] == []
    assert [(k, n) for k in ref_moments for n in ("exp_avg", "exp_avg_sq")
            if not torch.equal(moments[k][n], ref_moments[k][n])] == []
