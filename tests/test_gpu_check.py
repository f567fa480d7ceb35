"""benchmarks/gpu_check.sh --dry-run: the GPU check's every step on this CPU at tiny sizes (the CUDA tests skip),
so that the script works the first time it meets a GPU (needs the real SST-2, ../shared/data); and the pieces
that decide what it reports: the payload's dependencies, the ratios to the Trainer's fastest row, the targets,
the step budgets, the accuracy judgement."""

import ast
import json
import os
import re
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from benchmarks import capture_accuracy, common, compare, gpu_report

REPO = Path(__file__).resolve().parents[1]
OUTPUT_FILES = {"gpu_report.json", "gpu_report.md", "compare.json", "accuracy.json", "logs.tar.gz"}


def test_dry_run_writes_the_report_with_every_step(shared_data, tmp_path):
    # two of the table's rows (the launch defaults and the Trainer with torch_compile, traced only) and one seed
    # per accuracy arm keep this short; the full dry run is `bash benchmarks/gpu_check.sh --dry-run DIR`
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--models", "roberta", "--rows",
                          "launch,hf-compile", "--seeds", "1", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "FAIRSEQ_NPU_SHARED_DATA": str(shared_data)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert {p.name for p in tmp_path.iterdir()} == OUTPUT_FILES
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert report["passed"] and report["dry_run"]
    assert report["exit_codes"] == {"install": 0, "tests": 0, "throughput": 0, "accuracy": 0}
    cuda_tests = report["tests"]["tests"]
    assert "tests.test_cuda::test_captured_run_resumes_from_its_checkpoint" in cuda_tests
    assert "tests.test_cuda::test_captured_update_gives_the_eager_weights[albert-fp32]" in cuda_tests
    assert all(outcome.startswith("skipped") for outcome in cuda_tests.values())  # no GPU here
    model = report["throughput"]["models"]["roberta"]
    assert list(model["rows"]) == [compare.LAUNCH, compare.HF_COMPILE] and model["fastest_hf"] == compare.HF_COMPILE
    assert all(row["median"] > 0 and row["command"] for row in model["rows"].values())
    compiled = model["rows"][compare.HF_COMPILE]["runs"][0]
    assert compiled["compile_backend"] == "eager" and compiled["optim"] == "adamw_torch_fused"
    assert set(model["ratios"]) == {f"{compare.LAUNCH} / {compare.FASTEST_HF}"}
    assert report["targets"]["albert"] == {"measured": False}
    assert set(report["targets"]["roberta"]["goals"]) == {">= 4,000 samples/s", ">= 5x stock fairseq-train",
                                                         ">= 3x the fastest HF Trainer row"}
    accuracy = json.loads((tmp_path / "accuracy.json").read_text())
    assert accuracy["concurrent"] and accuracy["judgement"]["seeds"] == [1] and not accuracy["seeds_skipped"]
    assert set(accuracy["runs"]) == {"captured", "eager"}
    for arm, flag in (("captured", "graph"), ("eager", "device")):
        run = accuracy["runs"][arm]["1"]
        assert 0 <= run["dev_accuracy"] <= 100 and run["updates"] == 20 and f"--update-mode {flag}" in run["command"]
    assert accuracy["judgement"]["within_seed_spread"] is None
    with tarfile.open(tmp_path / "logs.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"install.log", "pytest_cuda.log", "pytest_cuda.xml", "compare.log", "accuracy.log",
            "accuracy_runs/eager.seed1.log", "accuracy_runs/captured.seed1/train.log"} <= names
    assert f"compare_runs/roberta/{common.slug(compare.HF_COMPILE)}.0.log" in names
    assert not list((REPO / "work_dirs").glob("gpu_check.*"))  # the work folder went with the call
    md = (tmp_path / "gpu_report.md").read_text()
    assert "dry run" in md and "bash test/train_performance_1p.sh" in md and "--torch-compile" in md
    assert "| 1 | " in md and "one seed per arm: no spread to judge the gap by" in md


def _requirement_names(text: str):
    return {re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower().replace("_", "-") for req in text}


def test_payload_carries_every_default_dependency_the_gpu_machine_lacks():
    setup = ast.parse((REPO / "setup.py").read_text())
    lists = {node.targets[0].id: ast.literal_eval(node.value) for node in setup.body
             if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
             and node.targets[0].id.endswith("_REQUIREMENTS")}
    required = _requirement_names(lists["FAIRSEQ_REQUIREMENTS"] + lists["PLUGIN_REQUIREMENTS"])
    script = re.sub(r"#.*", "", (REPO / "benchmarks" / "gpu_wheels.sh").read_text())  # no spec holds a '#'

    def names(array):  # the items of a bash array NAME=( "quoted" or bare ... )
        body = re.search(rf"^{array}=\((.*?)\)", script, re.MULTILINE | re.DOTALL).group(1)
        return _requirement_names(quoted or bare for quoted, bare in re.findall(r'"([^"]+)"|([^\s"]+)', body))

    has, build_only, wheels = names("GPU_MACHINE_HAS"), names("BUILD_ONLY"), names("WHEELS")
    assert "tensorboardx" in wheels and "torch" in has and not has & wheels
    assert required - has - build_only - wheels == set()


def test_ratios_use_the_fastest_trainer_row():
    medians = {compare.STOCK: 500.0, compare.LAUNCH: 4500.0, compare.HF: 700.0, compare.HF_COMPILE: 1200.0,
               compare.LAUNCH_EAGER: 1500.0}
    assert compare.fastest_hf(medians) == compare.HF_COMPILE
    assert compare.ratios(medians) == {
        f"{compare.LAUNCH} / {compare.STOCK}": 9.0, f"{compare.LAUNCH} / {compare.FASTEST_HF}": 3.75,
        f"{compare.HF} / {compare.STOCK}": 1.4, f"{compare.LAUNCH} / {compare.LAUNCH_EAGER}": 3.0,
        f"{compare.HF_COMPILE} / {compare.HF}": 1200.0 / 700.0}
    only_hf = compare.ratios({compare.LAUNCH: 100.0, compare.HF: 50.0})
    assert only_hf == {f"{compare.LAUNCH} / {compare.FASTEST_HF}": 2.0}


def test_per_repeat_ratios_pair_the_runs_of_one_repeat():
    """Each order's ratio pairs the launch and the fastest Trainer row of the same repeat (a failed run leaves its
    repeat out); an older result without repeats pairs the runs in order."""
    rows = {compare.LAUNCH: {"runs": [{"repeat": 0, "samples_per_s": 440.0}, {"repeat": 1, "samples_per_s": 420.0},
                                      {"repeat": 2, "samples_per_s": 300.0}]},
            compare.HF: {"runs": [{"repeat": 0, "samples_per_s": 400.0}, {"repeat": 1, "samples_per_s": 350.0}]},
            compare.HF_COMPILE: {"runs": [{"repeat": 1, "samples_per_s": 10.0}]}}
    assert compare.per_repeat_ratios(rows, compare.HF) == {0: 1.1, 1: 1.2}
    assert compare.per_repeat_ratios(rows, None) == {}
    old = {compare.LAUNCH: {"runs": [{"samples_per_s": 300.0}]}, compare.HF: {"runs": [{"samples_per_s": 200.0}]}}
    assert compare.per_repeat_ratios(old, compare.HF) == {0: 1.5}


def test_the_eager_row_is_the_launch_row_with_the_update_uncaptured(tmp_path):
    a = compare.main.__globals__["argparse"].Namespace(
        warmup=10, updates=10, batch_size=32, device="cuda", size="base", rows=compare.DEFAULT_ROWS["cuda"],
        compile_models="roberta", compile_backend="inductor")
    rows = dict(compare.rows("albert", tmp_path, a, 0))
    assert list(rows) == [compare.STOCK, compare.LAUNCH, compare.HF, compare.LAUNCH_EAGER]  # compile: roberta only
    launch, eager = rows[compare.LAUNCH], rows[compare.LAUNCH_EAGER]
    assert eager[-3:] == ["--", "--update-mode", "device"] and "--" not in launch
    assert [c for c in eager[:-3] if "output_dir" not in c] == [c for c in launch if "output_dir" not in c]
    compiled = dict(compare.rows("roberta", tmp_path, a, 0))[compare.HF_COMPILE]
    assert compiled[-5:] == ["--torch-compile", "--compile-backend", "inductor", "--pad-to-multiple-of", "32"]


def _table(launch, stock, hf):
    rows = {compare.LAUNCH: {"median": launch, "runs": [{}]}, compare.STOCK: {"median": stock},
            compare.HF: {"median": hf}}
    return dict(rows=rows, ratios=compare.ratios({k: v["median"] for k, v in rows.items()}), fastest_hf=compare.HF)


def test_targets_are_checked_for_both_models():
    table = {"models": {"roberta": _table(4200.0, 800.0, 1400.0), "albert": _table(3900.0, 700.0, 1400.0)}}
    got = gpu_report.targets(table)
    assert got["roberta"]["goals"] == {">= 4,000 samples/s": True, ">= 5x stock fairseq-train": True,
                                       ">= 3x the fastest HF Trainer row": True}
    assert got["albert"]["goals"] == {">= 4,000 samples/s": False, ">= 5x stock fairseq-train": True,
                                      ">= 3x the fastest HF Trainer row": False}
    assert gpu_report.targets({"models": {"roberta": _table(4200.0, 800.0, 1400.0)}})["albert"] == {"measured": False}


def test_the_report_sets_a_replays_device_time_beside_the_wall_time_of_an_update():
    roberta = _table(4000.0, 800.0, 1400.0)
    roberta["rows"][compare.LAUNCH]["runs"] = [{"graph_report": {
        "graphs": 2, "replay_share": 0.98, "fallbacks": {"warm-up": 6},
        "replay_ms": {"32x32": 7.0, "32x64": 9.0}, "replay_ms_mean": 7.2, "replays_timed": 245}}]
    got = gpu_report.targets({"batch_size": 32, "models": {"roberta": roberta}})["roberta"]["device_busy"]
    # 32 samples at 4,000/s: 8 ms per update, of which the device worked 7.2
    assert got == {"replay_ms": 7.2, "wall_ms_per_update": 8.0, "share": 0.9,
                   "replay_ms_by_shape": {"32x32": 7.0, "32x64": 9.0}}
    assert gpu_report.device_busy({"graphs": 0}, 4000.0, 32) is None  # no timing events on the device


def test_step_budgets_fit_the_call():
    budgets = {step: b["seconds"] for step, b in gpu_report.budgets().items()}
    assert list(budgets) == ["install", "tests", "accuracy", "throughput", "total"]
    assert budgets["total"] == 540
    # the tests and the accuracy row share their time; 15 s are left for the report and the log archive
    assert budgets["install"] + max(budgets["tests"], budgets["accuracy"]) + budgets["throughput"] <= 540 - 15


def _fake_run(tmp_path: Path, name: str, script: str) -> list:
    """A command shaped like capture_accuracy's (it names its --output_dir=), running a bash script there."""
    out = tmp_path / name
    out.mkdir()
    return ["bash", "-c", f"cd {out} || exit 9; {script}", name, f"--output_dir={out}"]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return False
    return state != "Z"


def _wait_for_pid(pid_file: Path, proc: subprocess.Popen) -> int:
    """The pid a fake trainer wrote, once it has started (imports take seconds on a loaded machine)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        text = pid_file.read_text() if pid_file.exists() else ""
        if text.endswith("\n"):
            return int(text)
        time.sleep(0.05)
    raise AssertionError(f"no trainer pid in {pid_file}")


def test_concurrent_runs_stop_at_the_deadline_with_the_trainers_they_started(tmp_path):
    summary = json.dumps(dict(status="ok", final_metric=81.5, best_metric=82.0, updates=20, fps=100.0,
                              e2e_seconds=1.0))
    commands = {
        (1, "captured"): _fake_run(tmp_path, "done", f"echo '{summary}' > summary.json"),
        (1, "eager"): _fake_run(tmp_path, "failed", "echo broken; exit 3"),
        # a launch script whose trainer outlives its budget: both must go
        (2, "eager"): _fake_run(tmp_path, "slow", "sleep 120 & echo $! > trainer.pid; wait"),
        (2, "captured"): _fake_run(tmp_path, "bad",
                                   "echo '{\"status\": \"failed\", \"reason\": \"x\"}' > summary.json"),
    }
    started = time.monotonic()
    got = capture_accuracy.concurrent_runs(commands, deadline=started + 3)
    assert time.monotonic() - started < 20
    assert got[(1, "captured")]["dev_accuracy"] == 81.5 and got[(1, "captured")]["returncode"] == 0
    assert got[(1, "eager")]["error"] == f"command failed (3), log {tmp_path / 'failed.log'}:"
    assert got[(2, "captured")]["error"] == f"{tmp_path / 'bad'}/summary.json: status failed: x"
    assert got[(2, "eager")]["stopped"].startswith("still running at the end of --time-budget")
    trainer = int((tmp_path / "slow" / "trainer.pid").read_text())
    assert not _alive(trainer)


def test_a_timed_out_run_is_stopped_with_what_it_started(tmp_path):
    cmd = _fake_run(tmp_path, "slow", "sleep 120 & echo $! > trainer.pid; wait")
    with pytest.raises(RuntimeError, match=r"stopped at its time limit \(2 s\)"):
        common.run_logged(cmd, tmp_path / "slow.log", timeout=2)
    assert not _alive(int((tmp_path / "slow" / "trainer.pid").read_text()))


def test_a_stopped_run_returns_once_its_trainer_has_finished_on_sigterm(tmp_path):
    # the launch script exits at once on SIGTERM; its trainer takes a second to write its checkpoint. The grace
    # belongs to the whole group: a stop that waited only for the script would SIGKILL the trainer mid-write.
    trainer = ("bash -c 'trap \"sleep 1; echo saved > checkpoint; exit 0\" TERM; echo $$ > trainer.pid; "
               "sleep 120 & wait' & wait")
    cmd = _fake_run(tmp_path, "slow", trainer)
    with pytest.raises(RuntimeError, match=r"stopped at its time limit \(2 s\)"):
        common.run_logged(cmd, tmp_path / "slow.log", timeout=2)
    assert (tmp_path / "slow" / "checkpoint").read_text() == "saved\n"
    assert not _alive(int((tmp_path / "slow" / "trainer.pid").read_text()))


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_run_whose_script_ends_leaves_nothing_of_its_group_running(tmp_path, concurrent):
    summary = json.dumps(dict(status="ok", final_metric=81.5, best_metric=82.0, updates=20, fps=100.0,
                              e2e_seconds=1.0))
    cmd = _fake_run(tmp_path, "leaky", f"sleep 120 & echo $! > trainer.pid; echo '{summary}' > summary.json")
    if concurrent:
        got = capture_accuracy.concurrent_runs({(1, "eager"): cmd}, deadline=time.monotonic() + 60)
        assert got[(1, "eager")]["returncode"] == 0
    else:
        assert common.run_logged(cmd, tmp_path / "leaky.log", timeout=60)["returncode"] == 0
    assert not _alive(int((tmp_path / "leaky" / "trainer.pid").read_text()))


def test_a_stop_sends_sigkill_to_a_trainer_that_ignores_sigterm(tmp_path):
    cmd = _fake_run(tmp_path, "stubborn", "bash -c 'trap \"\" TERM; echo $$ > trainer.pid; "
                                          "while :; do sleep 0.1; done' & wait")
    proc = common.start_logged(cmd, tmp_path / "stubborn.log")
    trainer = _wait_for_pid(tmp_path / "stubborn" / "trainer.pid", proc)
    t0 = time.monotonic()
    common.stop_group(proc, grace_s=1.0)
    assert 1.0 <= time.monotonic() - t0 < 10
    assert not _alive(trainer)


@pytest.mark.parametrize("concurrent", [False, True])
def test_a_benchmark_stopped_by_timeout_stops_its_runs(tmp_path, concurrent):
    # gpu_check.sh bounds each step with `timeout`, which signals the step's process group only
    cmd = _fake_run(tmp_path, "slow", "sleep 120 & echo $! > trainer.pid; wait")
    call = (f"capture_accuracy.concurrent_runs({{(1, 'eager'): {cmd!r}}}, deadline=time.monotonic() + 600)"
            if concurrent else f"common.run_logged({cmd!r}, Path({str(tmp_path / 'slow.log')!r}), timeout=600)")
    script = f"import time; from pathlib import Path; from benchmarks import capture_accuracy, common; {call}"
    bench = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    trainer = _wait_for_pid(tmp_path / "slow" / "trainer.pid", bench)
    os.killpg(bench.pid, signal.SIGTERM)  # what `timeout` sends when the step's time is up
    output = bench.communicate(timeout=60)[0]
    assert bench.returncode == 128 + signal.SIGTERM, output[-2000:]  # the benchmark exits through SystemExit
    assert not _alive(trainer)


def test_the_judgement_pairs_seeds_finished_in_both_arms():
    arms = {"captured": {"1": {"dev_accuracy": 80.0}, "2": {"dev_accuracy": 82.0}, "3": {"dev_accuracy": 50.0}},
            "eager": {"1": {"dev_accuracy": 81.0}, "2": {"dev_accuracy": 81.5}}}
    j = capture_accuracy.judge(arms)
    assert j["seeds"] == [1, 2]
    assert j["gap_captured_minus_eager"] == pytest.approx(81.0 - 81.25)
    assert j["within_seed_spread"] is True  # |gap| 0.25 <= the captured arm's spread 2.0


@pytest.mark.parametrize("captured, eager, within", [
    ([82.0, 83.0], [82.5, 83.2], True),  # gap -0.35, spread 1.0
    ([80.0, 80.2], [83.0, 83.1], False),  # gap -2.95, spread 0.2
    ([82.0], [83.0], None),  # one seed per arm: no spread
])
def test_accuracy_gap_is_judged_against_the_seeds_spread(captured, eager, within):
    arms = {"captured": {str(i): {"dev_accuracy": v} for i, v in enumerate(captured)},
            "eager": {str(i): {"dev_accuracy": v} for i, v in enumerate(eager)}}
    j = capture_accuracy.judge(arms)
    assert j["within_seed_spread"] is within
    assert j["gap_captured_minus_eager"] == pytest.approx(sum(captured) / len(captured) - sum(eager) / len(eager))
    assert j["note"] == ("one seed per arm: no spread to judge the gap by" if within is None else "2 seeds per arm")
