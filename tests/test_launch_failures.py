"""Every launch-script failure ends honestly: one line naming the cause, a non-zero exit, a true summary.json and
no process left behind. The real scripts on cpu with a tiny RoBERTa on the tiny task of test_launch_scripts.py.

- impossible numbers (zero or negative sizes, epochs, processes, learning rate) are refused before anything runs;
- a run that diverges (every update skipped, validation loss nan) is ``failed``, and the summary step survives the
  nulls fairseq logs for such epochs;
- one run per output folder; a rerun never leaves an earlier run's summary.json beside its own log;
- SIGTERM stops the trainer, keeps the last checkpoint loadable, records ``interrupted``; a torchrun agent killed
  with SIGKILL takes its workers with it (a launch script killed so takes its trainer: benchmarks/fault_injection.py).
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks.fault_injection import command_line_of, processes_naming

from test_launch_scripts import TINY, _write_task, model_state

REPO = Path(__file__).resolve().parents[1]
COMMON = ["--device=cpu", "--task=SST-2", "--batch-size=16", "--precision=fp32"]
ENV = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
STOP_SECONDS = 30  # the scripts' bound: STOP_GRACE (20 s) to end, then SIGKILL, then the summary


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_task(tmp_path_factory.mktemp("launch_failures") / "SST-2-bin", [], n_train=64, n_valid=16)


def script(name, *args, **kw):
    return subprocess.run(["bash", str(REPO / "test" / name), *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=REPO, env=ENV, **kw)


def start(name, log: Path, *args):
    with open(log, "wb") as f:
        return subprocess.Popen(["bash", str(REPO / "test" / name), *map(str, args)], stdout=f,
                                stderr=subprocess.STDOUT, cwd=REPO, env=ENV)


def wait_for(path: Path, text: str, proc, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return
        assert proc.poll() is None, f"the run ended before {text!r}:\n{path.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"no {text!r} in {path} after {timeout} s")


def processes_of(folder: Path):
    """(pid, command line) of every process whose command line names ``folder`` (the fault-injection script's
    /proc scan)."""
    return [(pid, command_line_of(pid)) for pid in processes_naming(str(folder))]


def gone(folder: Path, timeout=10):
    deadline = time.monotonic() + timeout
    while processes_of(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_of(folder)


def summary_of(out: Path, name="summary.json"):
    return json.loads((out / name).read_text())


@pytest.mark.parametrize("flag,line", [
    ("--batch-size=0", "--batch-size=0: expected a whole number >= 1"),
    ("--batch_size=-4", "--batch_size=-4: expected a whole number >= 1"),
    ("--max-epoch=0", "--max-epoch=0: expected a whole number >= 1"),
    ("--max_epoch=-1", "--max_epoch=-1: expected a whole number >= 1"),
    ("--max-tokens=0", "--max-tokens=0: expected a whole number >= 1"),
    ("--num-classes=0", "--num-classes=0: expected a whole number >= 1"),
    ("--nproc=0", "--nproc=0: expected a whole number >= 1"),
    ("--nnodes=0", "--nnodes=0: expected a whole number >= 1"),
    ("--lr=0", "--lr=0: expected a number > 0"),
    ("--lr=-1e-5", "--lr=-1e-5: expected a number > 0"),
    ("--lr=nan", "--lr=nan: expected a number > 0"),
    ("--node_rank=1", "--node_rank=1: expected less than --nnodes=1"),
    ("--max-update=5", "--max-update=5: full runs train whole epochs (--max-epoch); to stop after N updates pass "
                       "fairseq's own flag after --: -- --max-update N"),
])
def test_impossible_launch_flags_are_refused_naming_the_flag(data, tmp_path, flag, line):
    out = tmp_path / "out"
    run = script("train_full_1p.sh", f"--data_path={data}", "--device=cpu", flag, f"--output_dir={out}")
    assert (run.returncode, run.stdout, run.stderr) == (2, "", f"train_full_1p.sh: error: {line}\n")
    assert not out.exists()  # refused before anything was written


def test_performance_and_eval_flags(data, tmp_path):
    run = script("train_performance_1p.sh", f"--data_path={data}", "--device=cpu", "--max-update=-3")
    assert (run.returncode, run.stderr) == (2, "train_performance_1p.sh: error: --max-update=-3: expected a whole "
                                               "number >= 1\n")
    run = script("train_eval_8p.sh", f"--data_path={data}", "--device=cpu", "--nproc=1", "--max-epoch=3")
    assert (run.returncode, run.stderr) == (2, "train_eval_8p.sh: error: --max-epoch=3: evaluation trains nothing "
                                               "(the checkpoint sets the model)\n")


def test_a_diverged_run_fails_with_its_reason(data, tmp_path):
    """--lr=1e6 under bf16 autocast: every update after the first few is skipped, the validation loss is nan and
    fairseq logs null counts for the epochs without an update. The summary says failed, and why."""
    out = tmp_path / "diverged"
    run = script("train_full_1p.sh", f"--data_path={data}", *COMMON[:-1], "--precision=amp", "--lr=1e6",
                 "--max-epoch=2", f"--output_dir={out}", *TINY)
    s = summary_of(out)
    assert s["status"] == "failed", run.stdout[-3000:] + run.stderr[-3000:]
    if s["exit_code"] == 0:  # the trainer finished: the launch layer finds the divergence in the log
        assert s["reason"] == ("valid_loss is nan at epoch 1 (the run diverged; a lower --lr or --precision=fp32 "
                               "may help)")
    assert run.returncode == (1 if s["exit_code"] == 0 else s["exit_code"])
    assert run.stderr.splitlines()[-1] == f"train_full_1p.sh: error: the run failed: {s['reason']}"
    assert run.stdout.splitlines()[-1] == "Accuracy: NA"  # a diverged run's metric is no result
    assert "Traceback" not in run.stdout + run.stderr


def test_summary_step_records_what_it_cannot_read(tmp_path):
    """The summary step never ends in a traceback: an unreadable plan is the summary's reason."""
    from fairseq_npu.launch.__main__ import main

    (tmp_path / "train.log").write_text("")
    (tmp_path / "plan.json").write_text("{not json")
    code = main(["summarize", "--mode", "full", "--output-dir", str(tmp_path), "--log", str(tmp_path / "train.log"),
                 "--e2e-seconds", "1", "--prog", "train_full_1p.sh"])
    s = summary_of(tmp_path)
    assert code == 1 and (s["status"], s["mode"]) == ("failed", "full")
    assert s["reason"] == (f"could not read the run's files: {tmp_path / 'plan.json'}: not JSON (Expecting property "
                           "name enclosed in double quotes: line 1 column 2 (char 1))")


def test_one_run_per_folder_and_sigterm_stops_the_trainer(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text('{"status": "ok", "epochs": 99}')  # a finished earlier run's
    log = tmp_path / "first.out"
    first = start("train_full_1p.sh", log, f"--data_path={data}", *COMMON, "--lr=1e-4", "--max-epoch=500",
                  f"--output_dir={out}", *TINY)
    try:
        wait_for(out / "train.log", "Saved checkpoint", first)
        assert summary_of(out)["status"] == "running"  # not the earlier run's
        second = script("train_full_1p.sh", f"--data_path={data}", *COMMON, f"--output_dir={out}", *TINY)
        assert (second.returncode, second.stderr) == (
            2, f"train_full_1p.sh: error: --output_dir={out}: another run is using this folder; wait for it to end "
               "or pass another --output_dir\n")
        stopped = time.monotonic()
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=STOP_SECONDS + 30) == 143
        assert time.monotonic() - stopped < STOP_SECONDS
    finally:
        if first.poll() is None:
            first.kill()
    s = summary_of(out)
    assert (s["status"], s["reason"], s["exit_code"]) == ("interrupted", "stopped by SIGTERM", 143)
    assert log.read_text().splitlines()[-1] == "train_full_1p.sh: error: the run was interrupted: stopped by SIGTERM"
    assert gone(out) == []
    assert model_state(out / "checkpoints" / "checkpoint_last.pt")  # the last complete checkpoint loads
    # the folder is free again once the run is over
    assert script("train_full_1p.sh", f"--data_path={data}", "--device=cpu", "--lr=0",
                  f"--output_dir={out}").stderr == "train_full_1p.sh: error: --lr=0: expected a number > 0\n"


def test_a_killed_torchrun_agent_takes_its_workers(data, tmp_path):
    out = tmp_path / "run"
    log = tmp_path / "out.log"
    launcher = start("train_full_8p.sh", log, f"--data_path={data}", *COMMON, "--lr=1e-4", "--nproc=2",
                     "--max-epoch=500", f"--output_dir={out}", *TINY)
    try:
        wait_for(out / "train.log", '"num_updates": "2"', launcher)
        agents = [pid for pid, cmd in processes_of(out) if " -m torch.distributed.run " in cmd]
        workers = [pid for pid, cmd in processes_of(out) if "fairseq_cli.train" in cmd and pid not in agents]
        assert len(agents) == 1 and len(workers) >= 2
        os.kill(agents[0], signal.SIGKILL)
        assert launcher.wait(timeout=STOP_SECONDS) == 137
        assert gone(out) == []
    finally:
        for pid, _ in processes_of(out):
            os.kill(pid, signal.SIGKILL)
    s = summary_of(out)
    assert (s["status"], s["reason"]) == ("failed", "the command exited with code 137")
    assert log.read_text().splitlines()[-1] == ("train_full_8p.sh: error: the run failed: the command exited with "
                                                "code 137")
