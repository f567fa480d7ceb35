"""Equal-budget accuracy of the captured update: one SST-2 epoch from scratch (peak lr 1e-4) through
``test/train_full_1p.sh`` with its defaults, ``--update-mode graph`` (the fast preset on cuda: the update captured
once per pad bucket) against ``--update-mode device`` (the same update, eager), the same seeds; dev accuracy side
by side (benchmarks/gpu_check.sh runs it on the GPU).

The two arms differ only in who launches the update's kernels: same data order, schedule and numerics, but the
dropout masks of a captured update come from torch's graph-safe generator, not the eager one's (docs/update.md),
so the two arms are two draws of the same training, and their gap is judged against the spread of the seeds.

Two ways to run the seeds:
- one after another (the default): both arms per seed (which arm goes first alternates), while ``--time-budget``
  leaves room for another pair (estimated from the slowest pair so far); the first pair always runs;
- ``--concurrent``: every (seed, arm) run at once, on the one device. The eager arm is host-bound (the GPU waits
  for Python), so runs sharing a GPU finish in about the time of the slowest alone: on a GPU this is how three
  seeds fit the GPU check's call. A run still going when ``--time-budget`` ends is stopped, and its seed is listed
  as left out. The samples/s of runs that shared a device are not throughput figures.

With one seed per arm there is no spread to judge the gap by, and the result says so.

    python -m benchmarks.capture_accuracy --device cuda --seeds 1,2,3 --concurrent --time-budget 165 --out-dir OUT
    python -m benchmarks.capture_accuracy --device cpu --size tiny --max-update 20 --out-dir OUT   # a dry run
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from benchmarks import common, compare, glue_data

ARMS = {"captured": "graph", "eager": "device"}  # arm -> --update-mode
LR = 1e-4
MODEL, TASK = "roberta", "SST-2"


def command(data: Path, a, arm: str, seed: int) -> List[str]:
    out_dir = (a.work_dir or common.WORK / "capture_accuracy" / a.device) / f"{arm}.seed{seed}"
    fairseq = [*compare.size_flags(MODEL, a.size), "--seed", str(seed), "--update-mode", ARMS[arm],
               "--no-save"]  # the dev accuracy is in the log; a base-size checkpoint would only cost seconds
    if a.max_update:
        fairseq += ["--max-update", str(a.max_update)]
    return ["bash", "test/train_full_1p.sh", f"--data_path={data}", f"--model={MODEL}", f"--device={a.device}",
            "--max-epoch=1", f"--lr={LR}", f"--output_dir={out_dir}", "--", *fairseq]


def read_summary(cmd: List[str], info: dict) -> dict:
    """A finished run's record from its summary.json (status, dev accuracy, samples/s, the graph report)."""
    out_dir = output_dir(cmd)
    summary = json.loads((out_dir / "summary.json").read_text())
    if summary.get("status") != "ok":
        raise RuntimeError(f"{out_dir}/summary.json: status {summary.get('status')}: {summary.get('reason')}")
    return dict(dev_accuracy=summary["final_metric"], best_dev_accuracy=summary["best_metric"],
                updates=summary["updates"], samples_per_s=summary["fps"], e2e_seconds=summary["e2e_seconds"],
                update=summary.get("update"), command=common.shell_command(cmd), **info)


def output_dir(cmd: List[str]) -> Path:
    return Path(next(c.split("=", 1)[1] for c in cmd if c.startswith("--output_dir=")))


def log_path(cmd: List[str]) -> Path:
    out_dir = output_dir(cmd)
    return out_dir.parent / f"{out_dir.name}.log"


def one_run(cmd: List[str], timeout: float) -> dict:
    """Train, then read the run's summary.json."""
    return read_summary(cmd, common.run_logged(cmd, log_path(cmd), timeout=timeout))


def concurrent_runs(commands: Dict[Tuple[int, str], List[str]], deadline: float) -> Dict[Tuple[int, str], dict]:
    """Every command at once; each finished run's record, or {"error": ...} for a failed one, or {"stopped": ...}
    for one still going at ``deadline`` (time.monotonic()), which is then stopped with its trainer."""
    started = time.monotonic()
    before = common.loadavg()
    # the runs share the host's cores: torch's default, a thread per core in every run, would oversubscribe them
    # and slow the host-bound runs (an OMP_NUM_THREADS already set is kept)
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // len(commands)))}
    procs = {key: common.start_logged(cmd, log_path(cmd), env) for key, cmd in commands.items()}
    results: Dict[Tuple[int, str], dict] = {}
    try:
        while len(results) < len(procs):
            for key, proc in procs.items():
                if key in results or proc.poll() is None:
                    continue
                try:
                    info = common.finished_run(proc, log_path(commands[key]), time.monotonic() - started, before)
                    results[key] = read_summary(commands[key], info)
                except Exception as err:
                    results[key] = dict(error=str(err).splitlines()[0])
                seed, arm = key
                print(f"capture_accuracy: {arm} seed {seed}: {summary_line(results[key])}", flush=True)
            if len(results) < len(procs) and time.monotonic() >= deadline:
                for key, proc in procs.items():
                    if key not in results:
                        common.stop_group(proc)
                        results[key] = dict(stopped=f"still running at the end of --time-budget "
                                                    f"({time.monotonic() - started:.0f} s)")
                        print(f"capture_accuracy: {key[1]} seed {key[0]}: {results[key]['stopped']}", flush=True)
            time.sleep(0.5)
    finally:  # interrupted: no run outlives this benchmark
        for key, proc in procs.items():
            if proc.poll() is None or common.group_alive(proc.pid):
                common.stop_group(proc)
    return results


def summary_line(run: dict) -> str:
    if "error" in run:
        return f"FAILED: {run['error']}"
    return (f"dev accuracy {run['dev_accuracy']} after {run['updates']} updates, {run['samples_per_s']} samples/s, "
            f"{run['wall_s']} s")


def judge(arms: dict) -> dict:
    """Over the seeds that finished in both arms: mean and spread of each arm's dev accuracy, their gap, and whether
    the gap lies within the spread of the seeds (the larger of the two arms' max - min); None with fewer than two
    such seeds."""
    paired = sorted(set.intersection(*(set(runs) for runs in arms.values())), key=int)
    stats = {}
    for arm, runs in arms.items():
        values = [runs[seed]["dev_accuracy"] for seed in paired]
        stats[arm] = dict(values=values, mean=statistics.fmean(values) if values else None,
                          sd=statistics.stdev(values) if len(values) > 1 else None,
                          spread=max(values) - min(values) if len(values) > 1 else None)
    means = [s["mean"] for s in stats.values()]
    gap = means[0] - means[1] if None not in means else None
    spreads = [s["spread"] for s in stats.values()]
    within: Optional[bool] = None
    if gap is not None and None not in spreads:
        within = abs(gap) <= max(spreads)
    note = ("one seed per arm: no spread to judge the gap by" if len(paired) == 1 else
            f"{len(paired)} seeds per arm" if paired else "no finished pair")
    return dict(arms=stats, seeds=[int(s) for s in paired], gap_captured_minus_eager=gap, within_seed_spread=within,
                note=note)


def record(result: dict, path: Path) -> None:
    """The judgement over the finished runs, and accuracy.json written (atomically)."""
    finished = {arm: {s: r for s, r in runs.items() if "dev_accuracy" in r} for arm, runs in result["runs"].items()}
    result["judgement"] = judge(finished)
    common.write_atomic(path, json.dumps(result, indent=1) + "\n")


def run_in_turn(a, data: Path, seeds: List[int], started: float, result: dict, path: Path) -> int:
    """Seeds one after another, both arms each, while the budget leaves room for another pair; the failures."""
    slowest_pair = 0.0
    failed = 0
    for i, seed in enumerate(seeds):
        elapsed = time.monotonic() - started
        if i and a.time_budget and elapsed + slowest_pair > a.time_budget:
            result["seeds_skipped"] = seeds[i:]
            print(f"capture_accuracy: seeds {seeds[i:]} not run: another pair (~{slowest_pair:.0f} s) would pass "
                  f"--time-budget {a.time_budget:.0f} s", flush=True)
            break
        pair_started = time.monotonic()
        for arm in (list(ARMS) if seed % 2 else list(ARMS)[::-1]):
            left = a.time_budget - (time.monotonic() - started) if a.time_budget else 7200
            try:
                run = one_run(command(data, a, arm, seed), timeout=max(left, 1))
            except Exception as err:  # recorded; the other arm and seeds still run
                failed += 1
                run = dict(error=str(err).splitlines()[0])
            result["runs"][arm][str(seed)] = run
            print(f"capture_accuracy: {arm} seed {seed}: {summary_line(run)}", flush=True)
        slowest_pair = max(slowest_pair, time.monotonic() - pair_started)
        record(result, path)
    return failed


def run_concurrently(a, data: Path, seeds: List[int], started: float, result: dict, path: Path) -> int:
    """Every (seed, arm) at once until the budget ends; a seed with a run stopped by the budget is left out (its
    other arm's run is kept in the file, outside the judgement); the failures."""
    commands = {(seed, arm): command(data, a, arm, seed) for seed in seeds for arm in ARMS}
    deadline = started + (a.time_budget or 7200)
    results = concurrent_runs(commands, deadline)
    for (seed, arm), run in sorted(results.items()):
        result["runs"][arm][str(seed)] = run
    result["seeds_skipped"] = [seed for seed in seeds if any("stopped" in results[(seed, arm)] for arm in ARMS)]
    for seed in result["seeds_skipped"]:  # a pair is judged whole or not at all
        for arm in ARMS:
            run = result["runs"][arm][str(seed)]
            if "dev_accuracy" in run:
                result["runs"][arm][str(seed)] = dict(left_out="the other arm did not finish in the budget",
                                                      finished=run)
    record(result, path)
    return sum("error" in r for r in results.values())


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--size", choices=sorted(common.SIZE_TABLES), default="base")
    p.add_argument("--seeds", default="1,2,3",
                   help="comma-separated: run in order while the budget allows, or all at once (--concurrent)")
    p.add_argument("--max-update", type=int, default=0, help="stop before the epoch ends (dry runs; 0: the epoch)")
    p.add_argument("--time-budget", type=float, default=0, help="seconds for every run together (0: no budget)")
    p.add_argument("--concurrent", action="store_true",
                   help="start every (seed, arm) run at once on the one device (see above)")
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA, help="real GLUE data and vocabularies")
    p.add_argument("--out-dir", type=Path, required=True, help="writes accuracy.json there")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="the runs' logs and output folders (default work_dirs/benchmarks/capture_accuracy/DEVICE)")
    a = p.parse_args(argv)
    started = time.monotonic()
    seeds = [int(s) for s in a.seeds.split(",")]
    data = glue_data.build(MODEL, TASK, a.data_dir)
    result = dict(machine=common.machine(), model=MODEL, task=TASK, size=a.size, device=a.device, lr=LR,
                  budget="one epoch" if not a.max_update else f"{a.max_update} updates", seeds_planned=seeds,
                  time_budget_s=a.time_budget or None, concurrent=a.concurrent, runs={arm: {} for arm in ARMS},
                  seeds_skipped=[])
    path = a.out_dir / "accuracy.json"
    a.out_dir.mkdir(parents=True, exist_ok=True)
    if a.concurrent:
        failed = run_concurrently(a, data, seeds, started, result, path)
    else:
        failed = run_in_turn(a, data, seeds, started, result, path)
    j = result.get("judgement", {})
    print(f"capture_accuracy: {j.get('note')}; captured - eager = {j.get('gap_captured_minus_eager')}; within the "
          f"seeds' spread: {j.get('within_seed_spread')}; wrote {path}")
    return 1 if failed or not j.get("seeds") else 0


if __name__ == "__main__":
    sys.exit(main())
