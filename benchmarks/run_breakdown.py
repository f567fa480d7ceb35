"""Where a launch run's wall time goes, update by update (CPU): inside ``Trainer.train_step``, in the batch
iterator, and in the rest of ``fairseq_cli.train``'s loop; and what the first update at a new batch length costs.

Each run is the launch script's own fairseq-train command for a cpu performance run (``fairseq_npu.launch.command``,
the 4 x 256 models, batch 32, real SST-2), run in a child process with timers around those three places. ``--variant``
adds fairseq flags to one run of each pair (e.g. ``--num-workers 1``, the worker process the cpu preset leaves out),
and the pairs alternate, the order reversed on every other pair; ``--env`` sets an environment variable instead
(e.g. ``OMP_WAIT_POLICY=ACTIVE``).

    python -m benchmarks.run_breakdown --model albert --pairs 3 --variant "--num-workers 1"
    python -m benchmarks.run_breakdown --model roberta --pairs 3 --env OMP_WAIT_POLICY=ACTIVE

Prints ms per update of each run and its parts, and writes benchmarks/results/run_breakdown_<model>.json.
"""

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks import common, glue_data

WARMUP, UPDATES = 20, 200

# runs in the child: fairseq-train's main with timers; prints one JSON line at exit
CHILD = r"""
import atexit, json, statistics, sys, time
import fairseq_npu  # noqa: F401  (the hooks, before fairseq's modules are patched by --user-dir)
from fairseq import trainer as fairseq_trainer
from fairseq.data import iterators
import fairseq_cli.train as train

warmup = int(sys.argv.pop(1))
spent = {"train_step": 0.0, "batch iterator": 0.0, "validate_and_save": 0.0}
steps = []  # (batch shape, first time that shape was seen, seconds)
seen, state = set(), {"start": None}

def timed(owner, name, key):
    inner = getattr(owner, name)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            if len(steps) >= warmup:
                spent[key] += time.perf_counter() - start
    setattr(owner, name, wrapper)

timed(iterators.CountingIterator, "__next__", "batch iterator")
timed(train, "validate_and_save", "validate_and_save")
train_step = fairseq_trainer.Trainer.train_step

def step(self, samples, *args, **kwargs):
    shape = tuple(samples[0]["net_input"]["src_tokens"].shape)
    start = time.perf_counter()
    out = train_step(self, samples, *args, **kwargs)
    took = time.perf_counter() - start
    steps.append((shape, shape not in seen, took))
    seen.add(shape)
    if len(steps) == warmup:
        state["start"] = time.perf_counter()
    elif len(steps) > warmup:
        spent["train_step"] += took
    return out

fairseq_trainer.Trainer.train_step = step

def report():
    measured = steps[warmup:]
    wall = time.perf_counter() - state["start"]
    first = [t for _, new, t in measured if new]
    again = [t for _, new, t in measured if not new]
    print("RUN_BREAKDOWN " + json.dumps(dict(
        updates=len(measured), ms_per_update=1000 * wall / len(measured),
        parts_ms_per_update={k: 1000 * v / len(measured) for k, v in spent.items()},
        first_seen_lengths=len(first), first_seen_median_ms=1000 * statistics.median(first) if first else None,
        seen_median_ms=1000 * statistics.median(again) if again else None,
        first_seen_extra_s=sum(first) - len(first) * statistics.median(again) if first and again else None)))

atexit.register(report)
sys.argv = ["fairseq-train"] + sys.argv[1:]
train.cli_main()
"""


def run(args: list, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(WARMUP)] + args, capture_output=True, text=True,
                          env=env, cwd=common.REPO, timeout=1800)
    line = [x for x in done.stdout.splitlines() if x.startswith("RUN_BREAKDOWN ")]
    if done.returncode != 0 or not line:
        raise RuntimeError(f"run failed (exit code {done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(line[-1].split(" ", 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(common.SIZES), default="albert")
    p.add_argument("--pairs", type=int, default=1, help="alternating pairs of (launch, launch + variant)")
    p.add_argument("--variant", default="", help="fairseq flags added to the second run of each pair")
    p.add_argument("--env", action="append", default=[], help="NAME=VALUE for the second run of each pair")
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA)
    a = p.parse_args(argv)
    data = glue_data.build(a.model, "SST-2", a.data_dir)
    base = common.launch_cpu_args(a.model, data, WARMUP + UPDATES, common.WORK / "run_breakdown")
    variant_env = dict(os.environ, **dict(e.split("=", 1) for e in a.env))
    arms = {"launch": (base, dict(os.environ))}
    if a.variant or a.env:
        arms["variant"] = (base + shlex.split(a.variant), variant_env)
    runs = {name: [] for name in arms}
    for pair in range(a.pairs):
        names = list(arms) if pair % 2 == 0 else list(arms)[::-1]
        for name in names:
            r = run(*arms[name])
            runs[name].append(r)
            parts = ", ".join(f"{k} {v:.2f}" for k, v in r["parts_ms_per_update"].items())
            print(f"{a.model} | {name:8s} {r['ms_per_update']:6.1f} ms/update ({parts}); "
                  f"{r['first_seen_lengths']} first-seen lengths: {r['first_seen_median_ms'] or 0:.1f} ms against "
                  f"{r['seen_median_ms'] or 0:.1f} ms (median update)", flush=True)
    medians = {n: statistics.median(r["ms_per_update"] for r in rs) for n, rs in runs.items()}
    result = dict(model=a.model, warmup=WARMUP, updates=UPDATES, variant=a.variant, env=a.env,
                  machine=common.machine(), fairseq_args=base, runs=runs, median_ms_per_update=medians)
    print(f"medians (ms per update): {medians}")
    print(f"wrote {common.save_result(f'run_breakdown_{a.model}', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
