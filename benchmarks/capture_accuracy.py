"""Equal-budget accuracy of the captured update: one SST-2 epoch from scratch (peak lr 1e-4) through
``test/train_full_1p.sh`` with its defaults, ``--update-mode graph`` (the fast preset on cuda: the update captured
once per pad bucket) against ``--update-mode device`` (the same update, eager), the same seeds; dev accuracy side
by side (benchmarks/gpu_check.sh runs it on the GPU).

The two arms differ only in who launches the update's kernels: same data order, schedule and numerics, but the
dropout masks of a captured update come from torch's graph-safe generator, not the eager one's (docs/update.md),
so the two arms are two draws of the same training, and their gap is judged against the spread of the seeds.

Seeds run in order, both arms per seed (which arm goes first alternates), while ``--time-budget`` leaves room for
another pair (estimated from the slowest pair so far); the first pair always runs. With one seed per arm there is
no spread to judge the gap by, and the result says so.

    python -m benchmarks.capture_accuracy --device cuda --seeds 1,2,3 --time-budget 100 --out-dir OUT
    python -m benchmarks.capture_accuracy --device cpu --size tiny --max-update 20 --out-dir OUT   # a dry run
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List, Optional

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


def one_run(cmd: List[str], timeout: float) -> dict:
    """Train, then read the run's summary.json (status, dev accuracy, samples/s, the graph report)."""
    out_dir = Path(next(c.split("=", 1)[1] for c in cmd if c.startswith("--output_dir=")))
    info = common.run_logged(cmd, out_dir.parent / f"{out_dir.name}.log", timeout=timeout)
    summary = json.loads((out_dir / "summary.json").read_text())
    if summary.get("status") != "ok":
        raise RuntimeError(f"{out_dir}/summary.json: status {summary.get('status')}: {summary.get('reason')}")
    return dict(dev_accuracy=summary["final_metric"], best_dev_accuracy=summary["best_metric"],
                updates=summary["updates"], samples_per_s=summary["fps"], e2e_seconds=summary["e2e_seconds"],
                update=summary.get("update"), command=common.shell_command(cmd), **info)


def judge(arms: dict) -> dict:
    """Mean and spread of each arm's dev accuracy, their gap, and whether the gap lies within the spread of the
    seeds (the larger of the two arms' max - min); None when an arm has fewer than two seeds."""
    stats = {}
    for arm, runs in arms.items():
        values = [r["dev_accuracy"] for r in runs.values()]
        stats[arm] = dict(values=values, mean=statistics.fmean(values) if values else None,
                          sd=statistics.stdev(values) if len(values) > 1 else None,
                          spread=max(values) - min(values) if len(values) > 1 else None)
    means = [s["mean"] for s in stats.values()]
    gap = means[0] - means[1] if None not in means else None
    spreads = [s["spread"] for s in stats.values()]
    within: Optional[bool] = None
    if gap is not None and None not in spreads:
        within = abs(gap) <= max(spreads)
    seeds = min(len(runs) for runs in arms.values())
    note = ("one seed per arm: no spread to judge the gap by" if seeds == 1 else
            f"{seeds} seeds per arm" if seeds else "no finished pair")
    return dict(arms=stats, gap_captured_minus_eager=gap, within_seed_spread=within, note=note)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cuda")
    p.add_argument("--size", choices=sorted(common.SIZE_TABLES), default="base")
    p.add_argument("--seeds", default="1,2,3", help="comma-separated, run in order while the budget allows")
    p.add_argument("--max-update", type=int, default=0, help="stop before the epoch ends (dry runs; 0: the epoch)")
    p.add_argument("--time-budget", type=float, default=0, help="seconds for every run together (0: no budget)")
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
                  time_budget_s=a.time_budget or None, runs={arm: {} for arm in ARMS}, seeds_skipped=[])
    path = a.out_dir / "accuracy.json"
    a.out_dir.mkdir(parents=True, exist_ok=True)
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
                result["runs"][arm][str(seed)] = dict(error=str(err).splitlines()[0])
                print(f"capture_accuracy: {arm} seed {seed} FAILED: {str(err).splitlines()[0]}", flush=True)
                continue
            result["runs"][arm][str(seed)] = run
            print(f"capture_accuracy: {arm} seed {seed}: dev accuracy {run['dev_accuracy']} after "
                  f"{run['updates']} updates, {run['samples_per_s']} samples/s, {run['wall_s']} s", flush=True)
        slowest_pair = max(slowest_pair, time.monotonic() - pair_started)
        finished = {arm: {s: r for s, r in runs.items() if "error" not in r} for arm, runs in result["runs"].items()}
        result["judgement"] = judge(finished)
        common.write_atomic(path, json.dumps(result, indent=1) + "\n")
    j = result.get("judgement", {})
    print(f"capture_accuracy: {j.get('note')}; captured - eager = {j.get('gap_captured_minus_eager')}; within the "
          f"seeds' spread: {j.get('within_seed_spread')}; wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
