"""The update object (``--update-mode device``, fairseq_npu/update/) against fairseq's own train_step.

A tiny RoBERTa, one fixed batch, 8 updates in each precision: the weights must be bit-identical to stock's with
the same optimizer (fused_adamw). Between two log steps the update reads nothing back from the device; an
overflow is skipped and counted on the device; the counters reach the host at the log step; a run whose updates
are all skipped stops with one line.
"""

import os
import subprocess
import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

from fairseq_npu.amp import smoke
from fairseq_npu.update import mode as update_mode
from fairseq_npu.update.device_update import DeviceUpdate

pytestmark = pytest.mark.usefixtures("fresh_device")

PRECISIONS = {
    "fp32": (),
    "amp-bf16": ("--amp", "--amp-dtype", "bfloat16"),
    "amp-fp16": ("--amp", "--amp-dtype", "float16"),
    "bf16": ("--bf16",),
    "fp16": ("--fp16",),
}
# what makes the host wait for the device (on cpu they are cheap, so they are counted, not timed)
HOST_READS = {"item", "__bool__", "tolist", "__float__", "__int__", "__index__", "numpy", "cpu", "nonzero"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke.write_data(tmp_path_factory.mktemp("device_update"))


def build(data, flags, update="stock", extra=()):
    from fairseq.logging import metrics

    metrics.reset()  # as fairseq-train starts: no meters of an earlier trainer in this process
    os.environ[update_mode.ENV] = update
    mode = smoke.Mode("case", tuple(flags), torch.float32)
    return smoke.build_trainer(smoke.train_argv(data, mode, "fused_adamw", extra=("--log-interval", "4", *extra)))


def weights(trainer):
    return torch.cat([p.detach().float().reshape(-1) for p in trainer.model.parameters()])


@pytest.mark.parametrize("flags", PRECISIONS.values(), ids=PRECISIONS.keys())
def test_device_update_is_bit_identical_to_stock(data, flags):
    results = {}
    for update in ("stock", "device"):
        trainer, batch = build(data, flags, update)
        for _ in range(8):
            trainer.train_step([batch])
        results[update] = (weights(trainer), trainer.get_num_updates())
        held = trainer.__dict__.get("_fairseq_npu_update")
        assert isinstance(held, DeviceUpdate) if update == "device" else held == "stock"
    assert torch.equal(results["stock"][0], results["device"][0])
    assert results["stock"][1] == results["device"][1] == 8


def run_both(data, flags, steps=8, extra=(), rows=None):
    """(stock weights, device weights) after ``steps`` updates on the fixed batch (its first ``rows`` sentences)."""
    results = []
    for update in ("stock", "device"):
        trainer, batch = build(data, flags, update, extra=extra)
        if rows is not None:
            batch = first_sentences(batch, rows)
        for _ in range(steps):
            trainer.train_step([batch])
        results.append(weights(trainer))
    return results


def first_sentences(batch, rows):
    """A smaller batch of the same sentences: ``rows`` of them."""
    net_input = {k: v[:rows] for k, v in batch["net_input"].items()}
    tokens = net_input["src_tokens"]
    return {**batch, "id": batch["id"][:rows], "net_input": net_input, "target": batch["target"][:rows],
            "nsentences": rows, "ntokens": int(tokens.ne(1).sum())}


@pytest.mark.parametrize("flags", [PRECISIONS[k] for k in ("fp32", "amp-fp16", "fp16", "bf16")],
                         ids=["fp32", "amp-fp16", "fp16", "bf16"])
def test_clipped_update_is_bit_identical_to_stock(data, flags):
    """With --clip-norm the gradients are scaled and clipped outside the kernel, as stock does it in each
    precision (fp32 weights: scale, norm, clip; fairseq's FP16Optimizer: norm of the raw gradients, one
    multiply by the factor times its own clip coefficient)."""
    stock, device = run_both(data, flags, extra=("--clip-norm", "0.05"))
    assert torch.equal(stock, device)


def test_batch_of_no_power_of_two_is_within_a_rounding_of_stock(data):
    """The fused kernel divides by 12 where stock multiplies by 1/12: at most half a float32 step apart per
    gradient element, which 8 Adam steps at lr 1e-2 carry to at most 1e-5 of a weight; the batch of 16 (a power
    of two) is bit-identical (test_device_update_is_bit_identical_to_stock)."""
    stock, device = run_both(data, PRECISIONS["fp32"], rows=12)
    assert not torch.equal(stock, device)  # the division is really the kernel's: the bound is not vacuous
    assert (stock - device).abs().max() <= 1e-5


def test_native_gelu_replaces_fairseqs_only_where_it_is_the_same(data):
    """The device update points fairseq's float32-round-trip GELU at torch's kernel on cpu and cuda (bit-identical
    there: test_device_update_is_bit_identical_to_stock trains both ways in bf16 and fp16); elsewhere it stays."""
    import torch.nn.functional as F
    from fairseq.modules.gelu import gelu

    from fairseq_npu.models.native_gelu import use_native_gelu

    trainer, batch = build(data, PRECISIONS["amp-bf16"], "device")
    layers = [m for m in trainer.model.modules() if hasattr(m, "activation_fn")]
    assert layers and all(m.activation_fn is gelu for m in layers if "Encoder" in type(m).__name__)
    assert use_native_gelu(trainer.model, "npu") == 0
    trainer.train_step([batch])  # builds the update object: cpu
    encoder_layers = [m for m in layers if "Encoder" in type(m).__name__]
    assert encoder_layers and all(m.activation_fn is F.gelu for m in encoder_layers)


class _Calls(TorchFunctionMode):
    def __init__(self, names):
        super().__init__()
        self.names, self.seen = names, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.names:
            self.seen.append(func.__name__)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("clip", ["0", "1.0"])
def test_gradients_are_divided_inside_the_kernel_unless_clipped(data, clip):
    """One pass over the gradients fewer: without clipping nothing multiplies them outside the AdamW kernel."""
    trainer, batch = build(data, PRECISIONS["amp-fp16"], "device", extra=("--clip-norm", clip))
    trainer.train_step([batch])
    with _Calls({"_foreach_mul_", "_foreach_addcmul_"}) as calls:
        trainer.train_step([batch])
    assert calls.seen == ([] if clip == "0" else ["_foreach_mul_", "_foreach_mul_"])


class _HostReads(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in HOST_READS:
            self.seen.append(name)
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("update", ["stock", "device"])
def test_no_host_read_between_log_steps(data, update):
    trainer, batch = build(data, PRECISIONS["amp-fp16"], update)
    trainer.train_step([batch])  # builds the optimizer and the update object
    with _HostReads() as reads:
        trainer.train_step([batch])  # updates 2 and 3: not log steps (--log-interval 4)
        trainer.train_step([batch])
    if update == "stock":
        assert reads.seen  # what the update object removes: the test can fail
    else:
        assert reads.seen == []
    with _HostReads() as reads:
        trainer.train_step([batch])  # update 4: the log step reads the counters once
    if update == "device":
        assert reads.seen == ["tolist"]  # scale, skipped steps, skips in a row: one transfer


def test_overflow_is_skipped_and_counted_on_the_device(data):
    trainer, batch = build(data, PRECISIONS["fp16"], "device", extra=("--fp16-init-scale", str(2 ** 24)))
    trainer.train_step([batch])
    update = trainer.__dict__["_fairseq_npu_update"]
    before = weights(trainer)
    trainer.train_step([batch])
    trainer.train_step([batch])
    # at 2**24 (and 2**23, 2**22) the fp16 gradients overflow: skipped, the scale halves each time
    assert torch.equal(weights(trainer), before)
    assert update.loss_scale.read().overflows == 3
    assert trainer.optimizer.scaler.loss_scale == 2 ** 24  # the host copy waits for the log step
    trainer.train_step([batch])  # log step
    reading = update.loss_scale.read()
    assert trainer.optimizer.scaler.loss_scale == reading.scale < 2 ** 24
    assert trainer.optimizer.scaler.fairseq_npu_overflows == reading.overflows >= 3


def test_amp_init_scale_is_the_initial_scale(data):
    trainer, _ = build(data, PRECISIONS["amp-fp16"], "stock", extra=("--amp-init-scale", str(2 ** 20)))
    assert trainer.optimizer.scaler.get_scale() == 2 ** 20



class _FakeCudaUpdate:
    """What GraphedUpdate needs of a DeviceUpdate to choose between a replay and an eager update."""

    def __init__(self):
        self.device = torch.device("cuda", 0)
        self.device_type = "cuda"
        self.precision = "bf16"
        self.zero_in_place = False
        self.eager = 0

    def train_step(self, samples, run_body=None, prepare=True):
        self.eager += 1


def _sample(batch, length):
    return {"net_input": {"src_tokens": torch.ones(batch, length, dtype=torch.long),
                          "src_lengths": torch.full((batch,), length)},
            "target": torch.zeros(batch, dtype=torch.long), "ntokens": batch * length}


def test_graph_plan_falls_back_with_a_named_reason():
    from fairseq_npu.data import PadBuckets
    from fairseq_npu.update.graphs import GraphedUpdate, WARMUP_UPDATES

    update = _FakeCudaUpdate()
    graphs = GraphedUpdate(update, batch_size=8, buckets=PadBuckets((32, 64)), criterion_name="sentence_prediction")
    assert graphs.disabled is None and update.zero_in_place  # gradients keep their addresses from now on
    assert graphs.fallback_reason([_sample(8, 32)]) is None
    assert graphs.fallback_reason([_sample(5, 32)]) == "partial batch"
    assert graphs.fallback_reason([_sample(8, 48)]) == "length outside the pad buckets"
    assert graphs.fallback_reason([_sample(8, 32), _sample(8, 32)]) == "--update-freq > 1"
    assert graphs.fallback_reason([{}]) == "dummy batch"
    for _ in range(WARMUP_UPDATES):  # the first updates of a shape run eagerly on a side stream
        graphs._on_side_stream = lambda b, d: None
        graphs.train_step([_sample(8, 64)])
    graphs.train_step([_sample(5, 64)])
    assert update.eager == WARMUP_UPDATES + 1
    assert graphs.report()["fallbacks"] == {"warm-up": WARMUP_UPDATES, "partial batch": 1}
    assert graphs.report()["replay_share"] == 0.0 and not graphs.report()["captured"]
    graphs.failed[graphs.key(_sample(8, 32))] = "RuntimeError: capture refused"
    assert graphs.fallback_reason([_sample(8, 32)]) == "capture failed for this shape"


def test_graph_mode_runs_eagerly_off_cuda_and_says_why(data, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="fairseq_npu.update.graphs"):
        trainer, batch = build(data, PRECISIONS["fp32"], "graph")
        trainer.train_step([batch])
    held = trainer.__dict__["_fairseq_npu_update"]
    why = "device cpu (graphs need cuda, or npu with torch_npu's NPUGraph)"
    assert held.disabled == why
    assert f"update: --update-mode graph runs eagerly: {why}" in caplog.text
    assert held.report()["fallbacks"] == {why: 1}


def test_unsupported_run_keeps_stock_train_step(data, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="fairseq_npu.update.mode"):
        trainer, batch = build(data, PRECISIONS["fp32"], "device", extra=("--optimizer", "adam"))
        trainer.train_step([batch])
    assert trainer.__dict__["_fairseq_npu_update"] == "--optimizer adam (needs fused_adamw)"
    assert "keeps fairseq's train_step for this run: --optimizer adam (needs fused_adamw)" in caplog.text


def test_bad_update_mode_in_the_environment_is_one_line(monkeypatch):
    from fairseq_npu.errors import UsageError

    monkeypatch.setenv(update_mode.ENV, "fast")
    with pytest.raises(UsageError, match=r"^\$FAIRSEQ_NPU_UPDATE_MODE='fast': expected one of stock, device, graph$"):
        update_mode.requested()


def test_training_log_has_stock_keys_and_values(tmp_path):
    """fairseq-train's own log: the same keys and the same numbers per log step as stock's update (the timing
    keys aside), with clipping and --fp16 loss scaling on."""
    from glue_tiny_data import make_glue_dir, tiny_roberta_args, train_in_process

    data = make_glue_dir(tmp_path / "SST-2-bin", {"train": 48, "valid": 8}, seed=2)
    timing = {"wps", "ups", "wall", "train_wall", "gb_free"}
    logs = {}
    for update in ("stock", "device"):
        args = tiny_roberta_args(data, "sentence_prediction_npu", [
            "--optimizer", "fused_adamw", "--fp16", "--clip-norm", "0.5", "--max-update", "12",
            # no dropout: the device update's cpu dropout draws other masks (fairseq_npu/models/uniform_dropout.py)
            "--dropout", "0", "--attention-dropout", "0",
            "--log-interval", "3", "--update-mode", update])
        logs[update] = [{k: v for k, v in r.items() if k.split("_", 1)[-1] not in timing and k not in timing}
                        for r in train_in_process(args)]
    assert len(logs["device"]) == len(logs["stock"]) >= 4
    assert {"gnorm", "clip", "loss_scale", "overflows", "loss", "accuracy"} <= set(logs["device"][0])
    assert logs["device"] == logs["stock"]


def test_summary_records_the_graph_report():
    from fairseq_npu.launch import summary, training_log

    report = {"captured": True, "graphs": 4, "capture_seconds": 1.25, "updates": 1000, "replayed": 980,
              "replay_share": 0.98, "fallbacks": {"warm-up": 12, "partial batch": 8}, "disabled": None}
    text = "\n".join([
        '2026-12-04 10:00:00 | INFO | fairseq_npu.update.graphs | update: graph report {"graphs": 1}',
        f"2026-12-04 10:00:09 | INFO | fairseq_npu.update.graphs | update: graph report "
        f"{__import__('json').dumps(report)}",
    ])
    log = training_log.parse(text)
    assert log.graph_report == report  # the last one: the run's
    assert summary._update(["x", "--update-mode", "graph"], log) == {"mode": "graph", **report}
    assert summary._update(["x", "--update-mode", "device"], log) == {"mode": "device", "captured": False}
    assert summary._update(["x"], training_log.parse("")) == {"mode": "stock", "captured": False}
