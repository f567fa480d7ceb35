"""Stock fairseq-train with --user-dir fairseq_npu: trains RoBERTa on cpu, and a killed run resumes exactly."""

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from fairseq_npu import synthetic
from word_level_data import binarize_single_sentence_task

REPO = Path(__file__).resolve().parents[1]
MAX_UPDATE = 80


def _train_command(data, save_dir, max_update=MAX_UPDATE):
    return [
        sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", str(REPO / "fairseq_npu"),
        "--task", "sentence_prediction", "--criterion", "sentence_prediction", "--arch", "roberta_base",
        "--num-classes", "2", "--init-token", "0", "--max-positions", "64",
        "--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "4", "--dropout", "0.1", "--attention-dropout", "0.1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--weight-decay", "0.01",
        "--lr", "1e-3", "--lr-scheduler", "polynomial_decay", "--warmup-updates", "6",
        "--total-num-update", str(MAX_UPDATE), "--max-update", str(max_update), "--batch-size", "32",
        "--save-dir", str(save_dir), "--save-interval-updates", "10", "--validate-interval-updates", "30",
        "--no-epoch-checkpoints", "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric",
        "--log-format", "simple", "--log-interval", "10", "--seed", "7", "--num-workers", "0",
    ]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    synthetic.write_task(root / "raw", n_train=1000, n_dev=200, n_test=10)
    return binarize_single_sentence_task(root / "raw", root / "bin")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    return env


def _state(save_dir):
    ck = torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)
    return ck["optimizer_history"][-1]["num_updates"], ck["model"], ck["last_optimizer_state"]


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    save_dir = tmp_path_factory.mktemp("uninterrupted")
    run = subprocess.run(_train_command(data, save_dir), cwd=REPO, env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return save_dir, run.stdout + run.stderr


def test_trains_to_high_dev_accuracy_on_cpu(uninterrupted):
    _, log = uninterrupted
    assert "fairseq_npu: device backend cpu (distributed gloo)" in log
    accuracies = [float(a) for a in re.findall(r"valid on 'valid' subset .*? accuracy ([\d.]+)", log)]
    assert accuracies, log[-2000:]
    assert accuracies[-1] >= 95.0, accuracies


def test_killed_run_resumes_to_the_same_state(data, uninterrupted, tmp_path):
    save_dir = tmp_path / "killed"
    proc = subprocess.Popen(_train_command(data, save_dir), cwd=REPO, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    try:  # kill -9 as soon as the first mid-epoch checkpoint is on disk
        while not (save_dir / "checkpoint_last.pt").exists():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.time() < deadline
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    killed_at, _, _ = _state(save_dir)
    assert 0 < killed_at < MAX_UPDATE

    rerun = subprocess.run(_train_command(data, save_dir), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"Loaded checkpoint {save_dir / 'checkpoint_last.pt'} (epoch" in rerun.stdout + rerun.stderr

    ref_updates, ref_model, ref_optim = _state(uninterrupted[0])
    updates, model, optim = _state(save_dir)
    assert updates == ref_updates == MAX_UPDATE
    assert model.keys() == ref_model.keys()
    for name in ref_model:
        assert torch.equal(model[name], ref_model[name]), name
    for index, ref in ref_optim["state"].items():
        assert torch.equal(optim["state"][index]["exp_avg"], ref["exp_avg"])
