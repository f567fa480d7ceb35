"""On a CUDA GPU (skipped elsewhere; `pytest -m cuda` runs these, benchmarks/gpu_check.sh does): the device choice,
NCCL, fused AdamW against fairseq's adam, fp16 / bf16 training with a skipped overflowing step, and resume.

The captured update (``--update-mode graph``, fairseq_npu/update/, docs/update.md) against the same update run
eagerly (``--update-mode device``), on tiny models with dropout off: the same weights after 20 updates, so the same
losses (fairseq logs losses rounded to 3 decimals; the weights, which fix every loss, are compared unrounded: fp32
within 1e-5 relative, bf16 within BF16_RTOL); through fairseq-train, an fp16 overflow skipped inside a graph, resume
from a checkpoint a captured run saved, and the fallback for a length outside the pad buckets. Those fairseq-train
runs are started together (one GPU runs them side by side) the first time a test needs them."""

import math
import re
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch

from capture_parity import PARITY_FLAGS, relative, weights
from glue_tiny_data import make_glue_dir, tiny_roberta_args

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.usefixtures("fresh_device")]  # fresh_device: tests/conftest.py
HUGE_SCALE = str(2**30)  # any fp16 loss times this overflows: the first steps must be skipped, not applied
PINNED_BLOCKS = 16384  # 4 KiB each: 64 MiB of pinned host memory at most


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


# ---------------------------------------------------------------------------------------------------------------
# the captured update against the eager one

UPDATES = 20
FP32_RTOL = 1e-5
# bfloat16 keeps 8 significant bits: a weight rounded the other way differs by 2**-8 of itself, and moves the
# later updates by a fraction of that
BF16_RTOL = 1e-2
# fp16 gradients of the tiny model's loss times this overflow (the classifier's alone are ~1/16): the first
# updates are skipped, several more than the eager warm-up of a shape, and the halved scale fits well within the run
HALF_INIT_SCALE = 2**24
TINY_ALBERT = ["--arch", "albert_base", "--embedding-dim", "16"]  # the tiny RoBERTa's sizes otherwise
# one pad bucket holding every tiny sentence (at most 22 tokens with <s> and </s>) and full batches: one shape,
# one graph; dropout off, so that the captured and the eager run compute the same numbers
CAPTURABLE = ["--optimizer", "fused_adamw", "--pad-buckets", "32", "--static-batch", "fill", "--dropout", "0",
              "--attention-dropout", "0", "--pooler-dropout", "0", "--max-update", str(UPDATES)]
RUNS = {  # name -> fairseq-train flags after the tiny model's
    "roberta-fp32-graph": [*CAPTURABLE, "--update-mode", "graph", "--save-interval-updates", "10"],
    "roberta-fp16-overflow-graph": [*CAPTURABLE, "--fp16", "--fp16-init-scale", str(HALF_INIT_SCALE),
                                    "--update-mode", "graph"],
    # a bucket of 16: a batch whose longest sentence has more tokens keeps its length, one outside the buckets,
    # and must run eagerly
    "roberta-outside-buckets-graph": [*CAPTURABLE, "--pad-buckets", "16", "--update-mode", "graph"],
}


SAVING = ("roberta-fp32-graph",)  # the run the resume test continues


def fairseq_train(data, extra, save_dir=None):
    """(exit code, output) of fairseq-train of the tiny RoBERTa on the GPU with ``extra`` after its flags."""
    args = [a for a in tiny_roberta_args(data, "sentence_prediction_npu") if a != "--cpu"]
    if save_dir is not None:
        args = [a for a in args if a != "--no-save"] + ["--save-dir", str(save_dir), "--no-epoch-checkpoints"]
    out = subprocess.run([sys.executable, "-m", "fairseq_cli.train", *args, *extra], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    return out.returncode, out.stdout + out.stderr


@pytest.fixture(scope="module")
def runs(tiny_data, tmp_path_factory):
    """Every run of RUNS, started at once; then the captured run resumed from its checkpoint at update 10."""
    root = tmp_path_factory.mktemp("graph_runs")
    with ThreadPoolExecutor(max_workers=len(RUNS)) as pool:
        futures = {name: pool.submit(fairseq_train, tiny_data, flags, root / name if name in SAVING else None)
                   for name, flags in RUNS.items()}
        done = {name: f.result() for name, f in futures.items()}
    saved = sorted((root / "roberta-fp32-graph").glob(f"checkpoint_*_{UPDATES // 2}.pt"))
    if saved:
        done["roberta-fp32-graph-resumed"] = fairseq_train(
            tiny_data, [*RUNS["roberta-fp32-graph"], "--restore-file", str(saved[0])], root / "resumed")
    done["saved at 10"] = (0, [str(p) for p in saved])
    return done


def run_log(runs, name):
    """The parsed training log of a run that must have succeeded."""
    from fairseq_npu.launch import training_log

    code, text = runs[name]
    assert code == 0, f"{name}: exit code {code}\n{text[-3000:]}"
    return training_log.parse(text)


def losses(log):
    inner = log.records["train_inner"]
    assert [r["num_updates"] for r in inner][-1] == UPDATES
    return {int(r["num_updates"]): r["loss"] for r in inner}


def assert_all_captured(log):
    """One graph, every update after the warm-up replayed it, nothing else fell back."""
    from fairseq_npu.update.graphs import WARMUP_UPDATES

    report = log.graph_report
    assert report is not None and report["graphs"] == 1 and report["updates"] == UPDATES, report
    assert report["fallbacks"] == {"warm-up": WARMUP_UPDATES}, report
    assert report["replayed"] == UPDATES - WARMUP_UPDATES, report


def train_in_process(data, update, flags, monkeypatch):
    """fairseq's Trainer of the tiny model (fairseq_npu/amp/smoke.py: one fixed batch of 16, dropout off, fused
    AdamW) on the GPU, UPDATES updates with ``--update-mode update``; returns its weights and its update object."""
    from fairseq.logging import metrics

    from fairseq_npu.amp import smoke
    from fairseq_npu.update import mode as update_mode

    metrics.reset()  # as fairseq-train starts: no meters of an earlier trainer in this process
    monkeypatch.setenv(update_mode.ENV, update)
    trainer, batch = smoke.build_trainer(smoke.train_argv(
        data, smoke.Mode(update, tuple(flags), torch.float32), "fused_adamw",
        # flags under which a graph's AdamW and the eager one compute the same numbers (tests/capture_parity.py)
        extra=("--log-interval", "5", *PARITY_FLAGS)))
    assert trainer.device.type == "cuda"
    initial = weights(trainer.model)
    for _ in range(UPDATES):
        trainer.train_step([batch])
    return initial, weights(trainer.model), update_mode.existing(trainer)


@pytest.fixture(scope="module")
def smoke_data(tmp_path_factory):
    from fairseq_npu.amp import smoke

    return smoke.write_data(tmp_path_factory.mktemp("graph_smoke"))


@pytest.mark.parametrize("model, flags, rtol", [
    ("roberta", (), FP32_RTOL), ("albert", tuple(TINY_ALBERT), FP32_RTOL), ("roberta", ("--bf16",), BF16_RTOL),
], ids=["roberta-fp32", "albert-fp32", "roberta-bf16"])
def test_captured_update_gives_the_eager_weights(smoke_data, monkeypatch, model, flags, rtol):
    from fairseq_npu.update.graphs import WARMUP_UPDATES

    initial, graphed, update = train_in_process(smoke_data, "graph", flags, monkeypatch)
    report = update.report()
    assert report["graphs"] == 1 and report["fallbacks"] == {"warm-up": WARMUP_UPDATES}, report
    assert report["replayed"] == UPDATES - WARMUP_UPDATES, report
    same_start, eager, _ = train_in_process(smoke_data, "device", flags, monkeypatch)
    assert torch.equal(initial, same_start)
    distance = relative(graphed, eager)
    assert distance <= rtol, distance
    # the updates moved the weights far more than the two runs differ
    moved = relative(eager, initial)
    assert moved > 10 * rtol, moved


def test_a_capture_goes_on_while_another_thread_pins_host_memory(smoke_data, monkeypatch):
    """fairseq's batch reader pins each batch on its own thread (``DataLoader(pin_memory=True)``) while the update
    captures. Under torch's default capture mode ("global") that thread's cudaHostAlloc fails the capture and the
    thread; the update captures in "thread_local" mode (fairseq_npu/update/graphs.py)."""
    from fairseq_npu.update.graphs import WARMUP_UPDATES

    stop, errors, pinned = threading.Event(), [], []

    def pin():  # every block kept: each pin is a new cudaHostAlloc, none served from the allocator's cache
        while not stop.is_set() and len(pinned) < PINNED_BLOCKS:
            try:
                pinned.append(torch.empty(4096, dtype=torch.uint8).pin_memory())
            except Exception as err:
                errors.append(f"{type(err).__name__}: {err}")
                return
            time.sleep(0.0002)

    reader = threading.Thread(target=pin, daemon=True)
    reader.start()
    try:
        _, _, update = train_in_process(smoke_data, "graph", (), monkeypatch)
    finally:
        stop.set()
        reader.join(timeout=30)
    report = update.report()
    assert errors == [], errors
    assert report["graphs"] == 1 and report["fallbacks"] == {"warm-up": WARMUP_UPDATES}, report
    assert len(pinned) > 0


def test_fp16_overflow_is_skipped_inside_the_graph_and_training_goes_on(runs):
    from fairseq_npu.update.graphs import WARMUP_UPDATES

    log = run_log(runs, "roberta-fp16-overflow-graph")
    assert_all_captured(log)
    inner = log.records["train_inner"]
    overflows = [int(r["overflows"]) for r in inner]  # the running count, one record per update
    # the scale halves on each skipped update until the gradients fit: the first updates are all skipped, past
    # the eager warm-up (updates 1-3) and the capture (4): update 5 was skipped by a replayed graph
    first = WARMUP_UPDATES + 2
    assert overflows[:first] == list(range(1, first + 1)), overflows
    assert overflows == sorted(overflows) and overflows[-1] < UPDATES, overflows  # and later updates applied
    last = inner[-1]
    # halved once per skipped update, never grown (fairseq's scale window, 2**14 updates, is far longer)
    assert last["loss_scale"] * 2 ** overflows[-1] == HALF_INIT_SCALE, (last["loss_scale"], overflows)
    assert last["num_updates"] == UPDATES and math.isfinite(last["loss"])


def test_captured_run_resumes_from_its_checkpoint(runs):
    assert runs["saved at 10"][1], "the captured run saved no checkpoint at update 10"
    resumed = run_log(runs, "roberta-fp32-graph-resumed")
    code, text = runs["roberta-fp32-graph-resumed"]
    assert re.search(rf"Loaded checkpoint .*checkpoint_\d+_{UPDATES // 2}\.pt \(epoch \d+ @ {UPDATES // 2} updates\)",
                     text), text[-2000:]
    after = {int(r["num_updates"]): r["loss"] for r in resumed.records["train_inner"]}
    assert sorted(after) == list(range(UPDATES // 2 + 1, UPDATES + 1))
    whole = losses(run_log(runs, "roberta-fp32-graph"))
    # the logged losses are rounded to 3 decimals: equal to within one unit of the last (a resume that lost the
    # optimizer's moments or the step count moves them by far more)
    worst = max(abs(after[u] - whole[u]) for u in after)
    assert worst <= 1e-3, (worst, after, whole)
    assert resumed.graph_report["graphs"] == 1 and resumed.graph_report["replayed"] > 0


def test_length_outside_the_pad_buckets_runs_eagerly(runs):
    log = run_log(runs, "roberta-outside-buckets-graph")
    report = log.graph_report
    outside = report["fallbacks"].get("length outside the pad buckets", 0)
    assert outside > 0, report
    assert report["updates"] == UPDATES == report["replayed"] + sum(report["fallbacks"].values()), report
    assert log.records["train_inner"][-1]["num_updates"] == UPDATES


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
    # 1e-5: the GPU kernels fuse multiply-adds differently from fairseq's elementwise adam; plus what the kernel's
    # own weight decay may round differently per step (tests/test_fused_adamw.py, assert_within_bound)
    excess = max(((a - b).abs() - 1e-5 - 100 * 2.0 ** -24 * a.abs()).max().item() for a, b in zip(ref, new))
    moved = max((a - b).abs().max().item() for a, b in zip(ref, params()))
    assert excess <= 0 and moved > 1e-2, (excess, moved)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_gelu_is_fairseqs_float32_gelu_on_cuda(dtype):
    """fairseq_npu/models/native_gelu.py swaps fairseq's float32 round trip for torch's kernel on cuda: the same
    bits forward and backward."""
    from fairseq.modules.gelu import gelu

    torch.manual_seed(0)
    x = (torch.randn(64, 32, 1024, device="cuda") * 3).to(dtype)
    grad = torch.randn(64, 32, 1024, device="cuda").to(dtype)
    a, b = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_a, out_b = gelu(a), torch.nn.functional.gelu(b)
    out_a.backward(grad)
    out_b.backward(grad)
    assert torch.equal(out_a, out_b) and torch.equal(a.grad, b.grad)


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
    # the scale started at the --amp-init-scale asked for (not --fp16-init-scale's 128): 4 updates halve it at
    # most 4 times
    assert inner[-1]["loss_scale"] >= 2**30 / 2**4, [r["loss_scale"] for r in inner]
    bf16 = train(tiny_data, "--amp", "--amp-dtype", "bfloat16", "--max-update", "4")
    rec = last_record(bf16)
    assert rec["num_updates"] == 4 and rec["loss"] == rec["loss"]


def test_fp16_run_resumes_from_its_last_checkpoint(tiny_data, tmp_path):
    train(tiny_data, "--fp16", "--max-update", "4", save_dir=tmp_path)
    text = train(tiny_data, "--fp16", "--max-update", "6", save_dir=tmp_path)
    assert re.search(r"Loaded checkpoint .*checkpoint_last\.pt \(epoch \d+ @ 4 updates\)", text), text[-2000:]
    assert last_record(text)["num_updates"] == 6
