"""On a CUDA GPU (skipped elsewhere; `pytest -m cuda` runs these, benchmarks/gpu_check.sh does): the device choice,
NCCL, fused AdamW against fairseq's adam, fp16 / bf16 training with a skipped overflowing step, and resume."""

import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glue_tiny_data import make_glue_dir, tiny_roberta_args

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.usefixtures("fresh_device")]  # fresh_device: tests/conftest.py
HUGE_SCALE = str(2**30)  # any fp16 loss times this overflows: the first steps must be skipped, not applied


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("cuda_glue"), {"train": 48, "valid": 8})


def train(data, *extra, save_dir=None):
    """fairseq-train of the tiny RoBERTa on the GPU (the tiny arguments without --cpu); returns the output."""
    args = [a for a in tiny_roberta_args(data, "sentence_prediction_npu") if a != "--cpu"]
    if save_dir is not None:
        args = [a for a in args if a != "--no-save"] + ["--save-dir", str(save_dir), "--no-epoch-checkpoints"]
    out = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args, *extra], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text[-3000:]
    return text


def last_record(text, kind="train_inner"):
    from fairseq_npu.launch import training_log

    return training_log.parse(text).records[kind][-1]


def test_cuda_is_chosen_and_pairs_with_nccl(fresh_device):
    backend = fresh_device.select()
    assert (backend.type, backend.dist_backend) == ("cuda", "nccl")
    assert backend.device() == torch.device("cuda", torch.cuda.current_device())


def test_nccl_initialises_and_reduces_in_one_process(fresh_device):
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group(fresh_device.select().dist_backend, init_method=f"tcp://127.0.0.1:{port}", rank=0,
                            world_size=1)
    try:
        t = torch.arange(4.0, device="cuda")
        dist.all_reduce(t)
        assert dist.get_backend() == "nccl" and t.tolist() == [0.0, 1.0, 2.0, 3.0]
    finally:
        dist.destroy_process_group()


def test_fused_adamw_matches_fairseq_adam_on_cuda():
    from omegaconf import OmegaConf

    import fairseq_npu  # noqa: F401  (registers fused_adamw)
    from fairseq.optim.adam import FairseqAdam
    from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW

    common = dict(adam_betas="(0.9, 0.98)", adam_eps=1e-6, weight_decay=0.1, lr=[1e-3])
    shapes = [(64, 32), (32,), (128, 64), (7,)]

    def params():
        torch.manual_seed(0)
        return [torch.nn.Parameter(torch.randn(s, device="cuda")) for s in shapes]

    ref, new = params(), params()
    opts = [FairseqAdam(OmegaConf.create(dict(common, use_old_adam=False, fp16_adam_stats=False, tpu=False)), ref),
            FairseqFusedAdamW(OmegaConf.create(dict(common, adamw_impl="fused")), new)]
    assert opts[1].impl == "fused"
    g = torch.Generator(device="cuda").manual_seed(1)
    for _ in range(100):
        grads = [torch.randn(s, device="cuda", generator=g) * 1e-2 for s in shapes]
        for opt, ps in zip(opts, (ref, new)):
            for p, grad in zip(ps, grads):
                p.grad = grad.clone()
            opt.step()
    diff = max((a - b).abs().max().item() for a, b in zip(ref, new))
    moved = max((a - b).abs().max().item() for a, b in zip(ref, params()))
    # 1e-5: the GPU kernels fuse multiply-adds differently from fairseq's elementwise adam
    assert diff <= 1e-5 and moved > 1e-2, (diff, moved)


def test_fp16_recipe_skips_overflowing_steps_then_trains(tiny_data):
    text = train(tiny_data, "--fp16", "--fp16-init-scale", HUGE_SCALE, "--max-update", "4")
    assert "gradient overflow detected, ignoring gradient" in text
    rec = last_record(text)
    assert rec["num_updates"] == 4 and rec["loss_scale"] < 2**30 and rec["loss"] == rec["loss"]


def test_amp_fp16_skips_an_overflow_and_bf16_trains(tiny_data):
    from fairseq_npu.launch import training_log

    fp16 = train(tiny_data, "--amp", "--amp-dtype", "float16", "--amp-init-scale", HUGE_SCALE, "--max-update", "4")
    inner = training_log.parse(fp16).records["train_inner"]
    # the skipped steps: counted in the records (the plugin's "overflows") or logged by fairseq's AMP path
    skipped = sum(r.get("overflows", 0) for r in inner) > 0 or re.search(r"overflow detected", fp16, re.IGNORECASE)
    assert skipped and inner[-1]["num_updates"] == 4 and inner[-1]["loss_scale"] < 2**30, fp16[-2000:]
    bf16 = train(tiny_data, "--amp", "--amp-dtype", "bfloat16", "--max-update", "4")
    rec = last_record(bf16)
    assert rec["num_updates"] == 4 and rec["loss"] == rec["loss"]


def test_fp16_run_resumes_from_its_last_checkpoint(tiny_data, tmp_path):
    train(tiny_data, "--fp16", "--max-update", "4", save_dir=tmp_path)
    text = train(tiny_data, "--fp16", "--max-update", "6", save_dir=tmp_path)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 4 updates\)", text), text[-2000:]
    assert last_record(text)["num_updates"] == 6
