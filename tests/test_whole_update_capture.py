"""The whole update captured in one graph and replayed (cuda's ``--update-mode graph``: forward, backward, norm,
the fused AdamW step that skips on the device, the loss scale), run on the cpu against the stand-in graph recorder
(tests/npu_stand_in/torch_npu/graphs.py).

That recorder keeps the device's capture rules: host reads, ``synchronize`` and autocast's weight cache are refused
while capturing, a capture changes no tensor that existed before it, and a replay runs the recorded operators on the
recorded tensors, so every value the host passed as a number at capture time (a learning rate given as a float, an
eps) is replayed as captured. The graph path of fairseq_npu/update/graphs.py runs here as on cuda, with
``GraphBackend(whole_update=True)``: the same code decides the warm-up, captures ``DeviceUpdate.body``, writes the
learning rate into its device tensor and counts the step before each replay. tests/test_cuda.py runs the same
comparison on a real GPU.

Expected, under tests/capture_parity.py's flags (a learning rate that changes at every update): the captured run's
weights are bit for bit the eager run's, in fp32, amp bf16 and fp16, and O2 bf16 and fp16. A replayed update whose
fp16 gradients overflow is skipped on the device and counted. A graph's AdamW eps is ``--adam-eps``. Through
fairseq-train, with two pad buckets (two graphs in one pool, replayed in data order): the training log of a captured
run is the eager run's, record for record, and a captured run resumed from its checkpoint logs what the run that
never stopped logged. With the launch's cuda defaults (recipe, fast preset, bf16 or the fp16 recipe), for RoBERTa and
ALBERT: every update after the warm-up replays a graph, and the losses follow the eager update's.
"""

import importlib.util
import os
import threading
from pathlib import Path

import pytest
import torch

from capture_parity import PARITY_FLAGS, relative, weights
from test_device_update import PRECISIONS  # the precisions the eager update is tested in
from fairseq_npu.amp import smoke
from fairseq_npu.update import graphs as update_graphs
from fairseq_npu.update import mode as update_mode

pytestmark = pytest.mark.usefixtures("fresh_device")

STAND_IN = Path(__file__).resolve().parent / "npu_stand_in" / "torch_npu" / "graphs.py"
WARMUP = update_graphs.WARMUP_UPDATES
UPDATES = WARMUP + 6  # eager warm-up, the capture (its update is the first replay), 5 more replays


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke.write_data(tmp_path_factory.mktemp("whole_update_capture"))


@pytest.fixture
def recorder(monkeypatch):
    """The stand-in recorder as the cpu's graph backend, capturing the whole update as cuda's does."""
    spec = importlib.util.spec_from_file_location("graph_recorder_stand_in", STAND_IN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backend = update_graphs.GraphBackend("cpu", module, module.NPUGraph, whole_update=True)
    monkeypatch.setattr(update_graphs, "graph_backend", lambda device_type: backend)
    return module


def train(data, update, flags=(), updates=UPDATES, extra=PARITY_FLAGS, before=None):
    """The smoke Trainer (one fixed batch of 16 padded to the bucket of 16, dropout off) for ``updates`` updates
    in ``--update-mode update``; ``before(trainer, i)`` runs before update i. Returns (trainer, learning rates)."""
    from fairseq.logging import metrics

    metrics.reset()
    os.environ[update_mode.ENV] = update
    argv = smoke.train_argv(data, smoke.Mode(update, tuple(flags), torch.float32), "fused_adamw", extra=(
        "--task", "sentence_prediction_npu", "--pad-buckets", "16", "--static-batch", "fill", "--log-interval", "4",
        *extra))
    trainer, batch = smoke.build_trainer(argv)
    rates = []
    for i in range(updates):
        if before is not None:
            before(trainer, i)
        rates.append(trainer.get_lr())
        trainer.train_step([batch])
    return trainer, rates


@pytest.mark.parametrize("flags", PRECISIONS.values(), ids=PRECISIONS.keys())
def test_replayed_whole_update_is_the_eager_update_bit_for_bit(data, recorder, flags):
    eager, eager_rates = train(data, "device", flags)
    graphed, rates = train(data, "graph", flags)
    report = update_mode.existing(graphed).report()
    assert report["disabled"] is None and report["graphs"] == 1, report
    assert report["fallbacks"] == {"warm-up": WARMUP} and report["replayed"] == UPDATES - WARMUP, report
    replayed = rates[WARMUP:]
    assert rates == eager_rates and all(a != b for a, b in zip(replayed, replayed[1:]))  # a new rate each replay
    assert torch.equal(weights(graphed.model), weights(eager.model))
    start, _ = train(data, "device", flags, updates=0)
    assert relative(weights(eager.model), weights(start.model)) > 1e-2  # and the updates did move the weights


def test_a_learning_rate_kept_from_the_capture_is_caught(data, recorder, monkeypatch):
    """The comparison above can fail: without the learning rate written before each replay, the replays keep the
    capture's rate, and the weights leave the eager run's."""
    eager, _ = train(data, "device")
    monkeypatch.setattr(update_graphs.DeviceUpdate, "before_replay", lambda self: None)
    stale, _ = train(data, "graph")
    assert relative(weights(stale.model), weights(eager.model)) > 1e-4


def test_the_capture_changes_nothing_and_its_update_is_the_first_replay(data, recorder):
    kept = {}

    def keep(trainer, i):
        kept[i] = weights(trainer.model).clone()

    graphed, _ = train(data, "graph", updates=WARMUP + 1, before=keep)
    eager, _ = train(data, "device", updates=WARMUP + 1)
    assert update_mode.existing(graphed).report()["replayed"] == 1
    assert torch.equal(weights(graphed.model), weights(eager.model))  # updated once: not by the capture too
    assert not torch.equal(weights(graphed.model), kept[WARMUP])


@pytest.mark.parametrize("mode", ["as shipped", "global"])
def test_a_capture_leaves_the_batch_readers_pinning_thread_free(data, recorder, monkeypatch, mode):
    """fairseq's batch reader pins host memory on its own thread while the update captures. The update's mode
    (thread_local) lets it; torch's default (global) would fail the capture and the reading thread."""
    if mode == "global":
        monkeypatch.setattr(update_graphs, "CAPTURE_ERROR_MODE", mode)
    reader_errors = []
    begin = recorder.NPUGraph.capture_begin

    def begin_while_a_reader_pins(graph, *args, **kwargs):
        begin(graph, *args, **kwargs)
        reader = threading.Thread(target=lambda: _pin(recorder, reader_errors))
        reader.start()
        reader.join()

    monkeypatch.setattr(recorder.NPUGraph, "capture_begin", begin_while_a_reader_pins)
    trainer, _ = train(data, "graph")
    report = update_mode.existing(trainer).report()
    if mode == "as shipped":
        assert reader_errors == [] and report["graphs"] == 1, (reader_errors, report)
        assert report["replayed"] == UPDATES - WARMUP, report
    else:  # the stand-in's rule bites: the capture and the reader both fail
        assert len(reader_errors) == 1 and "operation not permitted when stream is capturing" in reader_errors[0]
        assert report["graphs"] == 0 and report["fallbacks"]["capture failed for this shape"] == UPDATES - WARMUP


def _pin(recorder, errors):
    try:
        recorder.host_alloc(4096)
    except Exception as err:
        errors.append(str(err))


def test_a_graphs_adamw_eps_is_adam_eps_not_the_capture_steps(data, recorder):
    """fairseq's eps placement at the capture step (eps / sqrt(1 - 0.98 ** 4) = 3.5 eps) would be replayed for the
    rest of the run; a graph adds --adam-eps after the bias correction instead (fairseq_npu/update/graphs.py)."""
    trainer, _ = train(data, "graph", updates=WARMUP + 2, extra=("--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6"))
    (captured,) = update_mode.existing(trainer).graphs.values()
    steps = [kwargs for func, args, kwargs, *_ in captured.graph._ops if "_fused_adamw_" in str(func)]
    assert len(steps) == 1 and steps[0]["eps"] == 1e-6, steps


def test_fp16_overflow_in_a_replay_is_skipped_and_counted_on_the_device(data, recorder):
    """fp16 (O2) with dynamic loss scaling: each replay whose gradients overflow leaves the weights as they were,
    halves the scale and counts the skip, on the device; once the gradients fit, the replays train again."""
    overflow_at, updates = WARMUP + 2, WARMUP + 12  # from a replay on, not the capture
    seen = {}

    def overflow(trainer, i):
        if i == overflow_at:
            update_mode.existing(trainer).update.loss_scale.scale.fill_(2.0 ** 24)  # fp16 gradients overflow
        seen[i] = weights(trainer.model).clone()

    trainer, _ = train(data, "graph", ("--fp16",), updates=updates, before=overflow)
    seen[updates] = weights(trainer.model)
    graphs = update_mode.existing(trainer)
    moved = [not torch.equal(seen[i + 1], seen[i]) for i in range(overflow_at, updates)]
    skipped = moved.count(False)  # replays that changed nothing
    assert not moved[0] and True in moved, moved  # the first overflowed, a later one trained
    reading = graphs.update.loss_scale.read()
    assert reading.overflows == skipped and reading.scale == 2.0 ** 24 / 2 ** skipped  # halved once per skip
    assert graphs.report()["replayed"] == updates - WARMUP


# ---------------------------------------------------------------------------------------------------------------
# through fairseq-train: several pad buckets (several graphs in one pool, replayed in data order), partial batches
# filled, the training log, checkpoints

RUN_UPDATES = 30
VOLATILE = ("wps", "ups", "wpb", "bsz", "train_wall", "wall", "gb_free")  # speed and time, not numbers of the update


@pytest.fixture(scope="module")
def glue_data(tmp_path_factory):
    from glue_tiny_data import make_glue_dir

    # 2 to 30 words: batches fall into both pad buckets (16 and 32 with <s> and </s>)
    return make_glue_dir(tmp_path_factory.mktemp("capture_glue"), {"train": 64, "valid": 8}, max_len=30)


def fairseq_train(glue_data, update, *extra):
    """fairseq-train of the tiny RoBERTa in this process; returns its train_inner records without the timings."""
    from glue_tiny_data import tiny_roberta_args, train_in_process

    args = tiny_roberta_args(glue_data, "sentence_prediction_npu", extra=(
        "--optimizer", "fused_adamw", "--group-by-length", "--pad-buckets", "16,32", "--static-batch", "fill",
        "--dropout", "0",
        "--attention-dropout", "0", "--update-mode", update, "--max-update", str(RUN_UPDATES), *PARITY_FLAGS,
        "--total-num-update", "36", *extra))  # decay over 32 updates: rates exact in float32 (capture_parity.py)
    if "--save-dir" in extra:
        args.remove("--no-save")
    records = train_in_process(args)
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in records if r["tag"] == "train_inner"]


def test_fairseq_train_with_graphs_logs_the_eager_runs_numbers(glue_data, recorder, caplog):
    import logging

    eager = fairseq_train(glue_data, "device")
    with caplog.at_level(logging.INFO, logger="fairseq_npu.update.graphs"):
        graphed = fairseq_train(glue_data, "graph")
    assert len(eager) == RUN_UPDATES and graphed == eager  # loss, accuracy, gnorm, lr... at every update
    reports = [line for line in caplog.text.splitlines() if "update: graph report" in line]
    report = __import__("json").loads(reports[-1].split("graph report ", 1)[1])
    assert report["graphs"] == 2, report  # one per pad bucket
    assert report["updates"] == RUN_UPDATES == report["replayed"] + sum(report["fallbacks"].values()), report
    assert set(report["fallbacks"]) == {"warm-up"} and report["replayed"] > RUN_UPDATES // 2, report


def test_a_captured_run_resumes_as_if_never_stopped(glue_data, recorder, tmp_path):
    whole = fairseq_train(glue_data, "graph", "--save-dir", str(tmp_path / "whole"), "--save-interval-updates", "15",
                          "--no-epoch-checkpoints")
    saved = tmp_path / "whole" / "checkpoint_2_15.pt"
    assert saved.exists(), sorted(p.name for p in (tmp_path / "whole").iterdir())
    resumed = fairseq_train(glue_data, "graph", "--save-dir", str(tmp_path / "resumed"), "--restore-file", str(saved))
    assert [int(r["num_updates"]) for r in resumed] == list(range(16, RUN_UPDATES + 1))
    assert resumed == whole[15:]


@pytest.mark.parametrize("model", ["roberta", "albert"])
@pytest.mark.parametrize("precision", ["bf16", "fp16"])  # cuda's fast preset: bf16 where native, else the fp16 recipe
def test_the_launch_cuda_defaults_replay_every_update_after_the_warm_up(glue_data, recorder, caplog, model,
                                                                        precision):
    """What a user gets on cuda with the launch's defaults: the recipe's flags (dropout, betas, clipping), the fast
    preset's (length grouping, pad buckets, full batches, --update-mode graph) and its precision. Every update after
    the warm-up replays the graph (nothing refused by the capture), and the losses follow the eager update's (they
    differ by the eps placement, capture_parity.py, and dropout's rounding: within LAUNCH_LOSS_ATOL)."""
    import json
    import logging

    from glue_tiny_data import tiny_roberta_args, train_in_process

    from fairseq_npu.launch import recipes
    from fairseq_npu.launch.command import LaunchRequest, precision_args

    launch = [*recipes.MODEL_ARGS[model], *recipes.fast_settings("cuda", 64, 8, 64), *precision_args(
        LaunchRequest(mode="full", data="", model=model, device="cuda", precision=precision))]
    assert launch[launch.index("--update-mode") + 1] == "graph"
    sizes = ["--arch", "albert_base", "--embedding-dim", "16"] if model == "albert" else []

    def losses(update):
        flags = [update if a == "graph" else a for a in launch]
        args = tiny_roberta_args(glue_data, "sentence_prediction_npu", extra=(
            "--optimizer", "fused_adamw", *flags, *sizes, "--lr", "1e-3", "--max-update", str(RUN_UPDATES)))
        return [float(r["loss"]) for r in train_in_process(args) if r["tag"] == "train_inner"]

    with caplog.at_level(logging.INFO, logger="fairseq_npu.update.graphs"):
        graphed = losses("graph")
    report = json.loads([line for line in caplog.text.splitlines() if "update: graph report" in line][-1]
                        .split("graph report ", 1)[1])
    assert report["graphs"] >= 1 and report["fallbacks"] == {"warm-up": WARMUP * report["graphs"]}, report
    assert report["replayed"] == RUN_UPDATES - WARMUP * report["graphs"], report
    eager = losses("device")
    assert len(graphed) == len(eager) == RUN_UPDATES
    assert max(abs(a - b) for a, b in zip(graphed, eager)) <= LAUNCH_LOSS_ATOL, (graphed, eager)


LAUNCH_LOSS_ATOL = 2e-2  # measured: at most 5e-3 over the 30 updates, in each model and precision
