"""``python -m benchmarks.host_ops_train`` on a real fairseq-train run: per-update operator counts by phase, and the plugin's
multi-tensor gradient work seen there (a handful of operators where stock's --fp16 path copies tensor by tensor)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from glue_tiny_data import make_glue_dir, tiny_roberta_args

REPO = Path(__file__).resolve().parents[1]
N_TENSORS = 45  # trainable tensors of the 2-layer tiny RoBERTa with its classification head, LM head included


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("host_ops"), {"train": 48, "valid": 8})


def counts(data, *extra):
    argv = tiny_roberta_args(data, "sentence_prediction_npu", ["--encoder-layers", "2", "--max-update", "3",
                                                               *extra])
    out = subprocess.run([sys.executable, "-m", "benchmarks.host_ops_train", *argv], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr[-3000:]
    records = [json.loads(line.split(" ", 1)[1]) for line in out.stdout.splitlines() if line.startswith("host_ops ")]
    assert [r["update"] for r in records] == [1, 2, 3]
    return records[-1]


def test_fp16_gradient_work_is_a_handful_of_operators_with_fused_adamw(tiny_data):
    stock = counts(tiny_data, "--fp16", "--optimizer", "adam")
    ours = counts(tiny_data, "--fp16", "--optimizer", "fused_adamw")
    # stock: each fp16 gradient copied into its slice of the flat fp32 gradient, each weight copied back
    assert stock["ops"]["grad norm"] > 4 * N_TENSORS and stock["ops"]["optimizer step"] > 4 * N_TENSORS
    assert ours["ops"]["grad norm"] <= 12 and ours["ops"]["optimizer step"] <= 10, ours["ops"]
    assert ours["ops"]["forward + backward"] == stock["ops"]["forward + backward"]  # same model, same batches
    # the encoder's per-layer `if has_pads` (2 layers) and the Trainer's own reads are there on both paths
    assert ours["total_syncs"] == stock["total_syncs"] >= 2


def test_fp32_grad_norm_and_step_with_fused_adamw(tiny_data):
    ours = counts(tiny_data, "--optimizer", "fused_adamw")
    assert ours["ops"]["grad norm"] <= 4 and ours["ops"]["optimizer step"] <= 6, ours["ops"]
    assert set(ours["ops"]) == {"forward + backward", "grad norm", "optimizer step", "trainer other"}
