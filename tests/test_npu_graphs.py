"""``--update-mode graph`` on npu: forward and backward captured per batch shape with torch_npu's NPUGraph, the
optimizer step eager, against the stand-in (tests/npu_stand_in/torch_npu/graphs.py), whose capture is as strict
as the real one (host reads, synchronize and autocast's weight cache refused) and whose dropout capture can be
switched off as on some torch_npu/CANN builds."""

import json
import logging
import os

import pytest
import torch

from fairseq_npu.amp import smoke
from fairseq_npu.update import mode as update_mode
from fairseq_npu.update.graphs import WARMUP_UPDATES

UPDATES = WARMUP_UPDATES + 4  # eager warm-up, the capture (and its replay), three replays


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke.write_data(tmp_path_factory.mktemp("npu_graphs"))


def train(data, update, updates=UPDATES, flags=()):
    from fairseq.logging import metrics

    metrics.reset()
    os.environ[update_mode.ENV] = update
    argv = smoke.train_argv(data, smoke.Mode("x", tuple(flags), torch.float32), "fused_adamw", extra=(
        "--task", "sentence_prediction_npu", "--pad-buckets", "16", "--static-batch", "fill", "--log-interval", "4"))
    trainer, batch = smoke.build_trainer(argv)
    assert tuple(batch["net_input"]["src_tokens"].shape) == (16, 16)  # a full batch, padded to the bucket
    for _ in range(updates):
        trainer.train_step([batch])
    weights = torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()])
    return weights, trainer.__dict__["_fairseq_npu_update"]


@pytest.mark.parametrize("flags", [(), ("--amp", "--amp-dtype", "bfloat16")], ids=["fp32", "amp-bf16"])
def test_npu_graph_replays_forward_and_backward_with_eager_numerics(data, npu_host, flags):
    eager, _ = train(data, "device", flags=flags)
    graphed, graphs = train(data, "graph", flags=flags)
    report = graphs.report()
    assert report["disabled"] is None and report["graphs"] == 1
    assert report["replayed"] == UPDATES - WARMUP_UPDATES  # the capture's own update is the first replay
    assert report["fallbacks"] == {"warm-up": WARMUP_UPDATES}
    assert torch.equal(eager, graphed)
    assert graphs.update.zero_in_place  # gradients keep their addresses for the replays


def test_npu_without_dropout_capture_stays_eager_and_says_why(data, npu_host, caplog):
    npu_host.graphs.STATE["dropout_capture"] = False
    with caplog.at_level(logging.WARNING, logger="fairseq_npu.update.graphs"):
        _, graphs = train(data, "graph", updates=2)
    why = "this torch_npu/CANN replays dropout's captured mask"
    assert graphs.disabled == why and graphs.report()["replayed"] == 0
    assert f"update: --update-mode graph runs eagerly: {why}" in caplog.text


def test_a_refused_capture_keeps_the_run_going_eagerly(data, npu_host, caplog, monkeypatch):
    # stock RoBERTa asks the device in every layer whether the batch has padding: the capture must refuse that
    from fairseq_npu.update import device_update

    monkeypatch.setattr(device_update, "use_mask_every_layer", lambda model: 0)
    eager, _ = train(data, "device")
    with caplog.at_level(logging.WARNING, logger="fairseq_npu.update.graphs"):
        graphed, graphs = train(data, "graph")
    assert ("npu graph capture failed for batch shape (16, 16) "
            "(CaptureError: _local_scalar_dense during NPU graph capture") in caplog.text
    assert graphs.report()["graphs"] == 0 and graphs.report()["fallbacks"]["capture failed for this shape"] == 4
    assert torch.equal(eager, graphed)


def test_stand_in_capture_is_strict(npu_host):
    graphs = npu_host.graphs
    x = torch.ones(4)
    for refused, match in [(lambda: x.sum().item(), "_local_scalar_dense during NPU graph capture"),
                           (lambda: torch.npu.synchronize(), "synchronize during NPU graph capture"),
                           (lambda: bool(x.sum() > 0), "during NPU graph capture")]:
        g = torch.npu.NPUGraph()
        with pytest.raises(graphs.CaptureError, match=match):
            with torch.npu.graph(g):
                refused()
        assert not torch.npu.is_current_stream_capturing()
    g = torch.npu.NPUGraph()
    with pytest.raises(graphs.CaptureError, match="set cache_enabled=False"):
        with torch.npu.graph(g), torch.autocast("cpu", dtype=torch.bfloat16):
            x + 1
    y = torch.zeros(4)
    g = torch.npu.NPUGraph()
    with torch.npu.graph(g):
        y.add_(x)  # recorded; as on the device, not run: the capture leaves y as it was
    assert y.tolist() == [0.0] * 4
    g.replay()
    g.replay()
    assert y.tolist() == [2.0] * 4


def test_stand_in_capture_modes_rule_other_threads(npu_host):
    """global (the default): another thread's pinned allocation is refused and breaks the capture; thread_local:
    it is not; any other mode is an error, as in torch_npu."""
    import threading

    graphs = npu_host.graphs
    for mode, refused in [("global", True), ("thread_local", False), ("relaxed", False)]:
        errors = []

        def pin():
            try:
                graphs.host_alloc(64)
            except graphs.CaptureError as err:
                errors.append(str(err))

        g = torch.npu.NPUGraph()
        if refused:
            with pytest.raises(graphs.CaptureError, match="the capture was invalidated"):
                with torch.npu.graph(g, capture_error_mode=mode):
                    reader = threading.Thread(target=pin)
                    reader.start()
                    reader.join()
            assert len(errors) == 1 and "not permitted when stream is capturing" in errors[0]
        else:
            with torch.npu.graph(g, capture_error_mode=mode):
                reader = threading.Thread(target=pin)
                reader.start()
                reader.join()
                graphs.host_alloc(64)  # the capturing thread's own host allocation is not ruled here
            assert errors == []
        assert not torch.npu.is_current_stream_capturing()
    with pytest.raises(RuntimeError, match="Unknown capture error mode 'local'"):
        with torch.npu.graph(torch.npu.NPUGraph(), capture_error_mode="local"):
            pass


def test_stand_in_refuses_capture_at_task_queue_level_2_and_into_a_used_graph(npu_host, monkeypatch):
    x = torch.ones(4)
    monkeypatch.setenv("TASK_QUEUE_ENABLE", "2")
    with pytest.raises(RuntimeError, match="TASK_QUEUE_ENABLE=2 is not supported during NPU graph capture"):
        with torch.npu.graph(torch.npu.NPUGraph()):
            x + 1
    monkeypatch.setenv("TASK_QUEUE_ENABLE", "1")
    g = torch.npu.NPUGraph()
    with torch.npu.graph(g):
        x + 1
    with pytest.raises(RuntimeError, match="already holds a captured graph"):
        with torch.npu.graph(g):
            x + 1


@pytest.mark.parametrize("caller_level", [None, "1", "2"], ids=["unset", "caller-1", "caller-2"])
def test_the_npu_launch_captures_at_task_queue_level_1_unless_the_caller_chose_2(tmp_path, caller_level):
    """torch_npu refuses every capture at TASK_QUEUE_ENABLE=2, env_npu.sh's level: the launch runs a capturing run
    at level 1 unless the caller chose a level; a caller's 2 is kept, warned about, and the run stays eager and
    says why (summary.json)."""
    import subprocess
    import sys
    from pathlib import Path

    from test_launch_scripts import TINY, _write_task

    repo = Path(__file__).resolve().parents[1]
    data = _write_task(tmp_path / "SST-2-bin", [])
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", TORCH_NPU_STAND_IN_HOST_TENSORS="1",
               PYTHONPATH=os.pathsep.join([str(repo / "tests" / "npu_stand_in"), os.environ.get("PYTHONPATH", "")]))
    env.pop("TASK_QUEUE_ENABLE", None)
    if caller_level is not None:
        env["TASK_QUEUE_ENABLE"] = caller_level
    out = tmp_path / "out"
    run = subprocess.run(["bash", "test/train_performance_1p.sh", f"--data_path={data}", "--model=roberta",
                          "--device=npu", "--task=SST-2", "--batch-size=16", "--max-update=8", f"--output_dir={out}",
                          "--", *TINY], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    update = json.loads((out / "summary.json").read_text())["update"]
    warning = "TASK_QUEUE_ENABLE=2 (set by the caller): torch_npu captures no graph at this level"
    if caller_level == "2":
        assert update["graphs"] == 0 and update["disabled"].startswith("TASK_QUEUE_ENABLE=2"), update
        assert warning in run.stderr
    else:
        assert update["mode"] == "graph" and update["graphs"] == 1 and update["replayed"] > 0, update
        assert warning not in run.stderr
