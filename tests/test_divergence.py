"""A run that diverges stops with one line and exit code 2, in every precision and update mode: fp32's NaN
gradients (fairseq's FloatingPointError, after its NanDetector) name the parameters; an --amp run whose every update
is skipped stops after MAX_CONSECUTIVE_SKIPS of them, in stock's update and in the device update."""

import os
import subprocess
import sys

import pytest
import torch

from fairseq_npu.amp import smoke
from fairseq_npu.update import mode as update_mode


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke.write_data(tmp_path_factory.mktemp("divergence"))


CASES = {
    "fp32-stock": ((), "stock", "training diverged at update 2: gradients are Nan/Inf; non-finite gradients in "),
    "amp-bf16-stock": (("--amp", "--amp-dtype", "bfloat16"), "stock",
                       "training diverged: the last 100 updates had non-finite gradients and were skipped"),
    # read at the log step (--log-interval 50): the 149 updates skipped in a row by then
    "amp-bf16-device": (("--amp", "--amp-dtype", "bfloat16"), "device",
                        "training diverged: the last 149 updates had non-finite gradients and were skipped"),
}


@pytest.mark.parametrize("flags, update, line", CASES.values(), ids=CASES.keys())
def test_a_diverging_run_stops_with_one_line(data, tmp_path, flags, update, line):
    argv = smoke.train_argv(data, smoke.Mode("case", flags, torch.float32), "fused_adamw", extra=(
        "--update-mode", update, "--lr", "1e6", "--max-update", "300", "--log-interval", "50",
        "--disable-validation", "--no-save", "--save-dir", str(tmp_path)))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop(update_mode.ENV, None)
    run = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *argv], capture_output=True, text=True,
                         env=env, timeout=300)
    assert run.returncode == 2, run.stderr[-2000:]
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith(f"fairseq-train: error: {line}"), last
    assert "Traceback" not in run.stderr
    if update == "stock" and not flags:
        assert "encoder" in last and "(fairseq saved crash.pt); lower --lr or use fp32" in last
