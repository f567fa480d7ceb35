"""fairseq_npu/update/replay_timer.py: the device time of each graph replay, from timing events read only once the
device has passed them (never a wait), and its place in the graph report (the recorder stand-in as the device)."""

import importlib.util
import itertools
from pathlib import Path

import pytest

from fairseq_npu.update import graphs as update_graphs
from fairseq_npu.update import replay_timer
from fairseq_npu.update.replay_timer import ReplayTimer


class FakeEvent:
    """A timing event on a device that is ``behind`` a number of records: each record is 1.5 ms after the last;
    waiting on one is an error (the timer must never sync)."""

    clock = itertools.count()
    behind = 0  # the newest records the device has not reached yet
    records = []

    def __init__(self, enable_timing=False):
        assert enable_timing
        self.t = None

    def record(self):
        self.t = next(FakeEvent.clock) * 1.5
        FakeEvent.records.append(self)

    def query(self):
        return self not in FakeEvent.records[len(FakeEvent.records) - FakeEvent.behind:] if FakeEvent.behind else True

    def elapsed_time(self, end):
        assert self.query() and end.query(), "read before the device passed it"
        return end.t - self.t

    def synchronize(self):
        raise AssertionError("the timer waited on the device")


@pytest.fixture
def events():
    FakeEvent.clock, FakeEvent.behind, FakeEvent.records = itertools.count(), 0, []
    return FakeEvent


def test_mean_device_time_per_shape_read_only_once_passed(events):
    timer = ReplayTimer(events)
    for label in ("32x32", "32x32", "32x64"):
        timer.stop(label, timer.start())
    events.behind = 2  # the last replay (its two events) still running on the device
    assert timer.report() == {"replay_ms": {"32x32": 1.5}, "replay_ms_mean": 1.5, "replays_timed": 2}
    assert len(timer.pending) == 1
    events.behind = 0
    assert timer.report() == {"replay_ms": {"32x32": 1.5, "32x64": 1.5}, "replay_ms_mean": 1.5, "replays_timed": 3}
    assert not timer.pending


def test_pending_events_are_read_as_they_pile_up(events, monkeypatch):
    monkeypatch.setattr(replay_timer, "MAX_PENDING", 4)
    timer = ReplayTimer(events)
    for _ in range(5):
        timer.stop("16x16", timer.start())
    assert not timer.pending and timer.count["16x16"] == 5  # read at the fifth, without a report


def test_no_timing_before_any_replay(events):
    assert ReplayTimer(events).report() == {"replay_ms": {}, "replay_ms_mean": None, "replays_timed": 0}


STAND_IN = Path(__file__).resolve().parent / "npu_stand_in" / "torch_npu" / "graphs.py"


@pytest.mark.usefixtures("fresh_device")
def test_the_graph_report_has_each_replays_device_time_by_batch_shape(events, monkeypatch, tmp_path):
    from test_whole_update_capture import UPDATES, WARMUP, train
    from fairseq_npu.amp import smoke
    from fairseq_npu.update import mode as update_mode

    spec = importlib.util.spec_from_file_location("graph_recorder_stand_in", STAND_IN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    backend = update_graphs.GraphBackend("cpu", module, module.NPUGraph, whole_update=True, event_class=events)
    monkeypatch.setattr(update_graphs, "graph_backend", lambda device_type: backend)
    graphed, _ = train(smoke.write_data(tmp_path), "graph")
    report = update_mode.existing(graphed).report()
    assert report["replayed"] == UPDATES - WARMUP == report["replays_timed"], report
    assert report["replay_ms"] == {"16x16": 1.5} and report["replay_ms_mean"] == 1.5, report  # batch 16, bucket 16
    assert len(events.records) == 2 * report["replayed"]  # two records per replay, none for eager updates
