"""Scaling on CPU (1 vs 2 processes over gloo) and the overhead of the plugin's device hooks.

Scaling rows (roberta reduced, plugin best settings, SST-2):

- 1 process, all cores' threads (torch's default) and 1 process, 1 thread: the single-process baselines;
- 2 processes x 1 thread, ``--distributed-world-size 2`` (the plugin spawns the workers and picks gloo on cpu),
  at 32 sentences per process (global batch 64) and at 16 per process (global batch 32, the same work per update
  as 1 x 32). Stock fairseq cannot run this: its ``call_main`` sizes the spawn by CUDA devices.

Hook overhead: stock ``fairseq-train`` with and without ``--user-dir fairseq_npu`` (same stock task, optimizer
and flags, so the only difference is the import of the plugin and its hooks), alternated ``--pairs`` times; and the
start-up cost of importing the plugin on top of fairseq, measured in fresh interpreters. The hook runs are
single-threaded and timed in CPU time per update too (``cpu_timed_train.py``), which a busy machine hardly moves.
"""

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

LOG_INTERVAL = 10


def train_cmd(data: Path, batch_size: int, max_update: int, plugin_best: bool, user_dir: bool, extra=()):
    cmd = common.module_command(
        "cpu_timed_train", str(data), *common.common_train_flags(batch_size, 1e-4, 2000, 100),
        *common.model_flags("roberta"), *common.task_flags("SST-2"),
        "--max-update", str(max_update), "--log-interval", str(LOG_INTERVAL), "--no-save", "--disable-validation")
    if user_dir:
        cmd += common.USER_DIR
    if plugin_best:
        cmd += common.GROUPED_TASK + ["--optimizer", "fused_adamw", "--amp"]
    else:
        cmd += common.STOCK_TASK
    return cmd + list(extra)


def measure(name, cmd, env, log, warmup):
    try:
        info = common.run_logged(cmd, log, env=env)
    except RuntimeError as e:  # reported in the table, with the error, instead of losing the other rows
        last = [line.strip() for line in str(e).splitlines() if line.strip()][-1]
        print(f"  {name}: FAILED: {last}", flush=True)
        return dict(name=name, command=common.shell_command(cmd, env), error=last, log=str(log))
    tp = training_log.fps(training_log.parse(log.read_text()), warmup, strict=True)
    print(f"  {name:40s} {tp.samples_per_s:8.1f} samples/s {tp.samples_per_cpu_s or 0:8.1f} samples/cpu-s  (load {info['load_before']} -> {info['load_after']})",
          flush=True)
    return dict(name=name, command=common.shell_command(cmd, env), **tp.__dict__, **info)


def import_seconds(code: str, repeats: int) -> list:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], cwd=common.REPO, check=True, capture_output=True)
        times.append(round(time.perf_counter() - t0, 3))
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--updates", type=int, default=60)
    p.add_argument("--skip-scaling", action="store_true")
    p.add_argument("--pairs", type=int, default=2, help="stock / plugin-hooked pairs for the hook overhead")
    p.add_argument("--import-repeats", type=int, default=3)
    p.add_argument("--out", default="scaling_cpu")
    a = p.parse_args(argv)

    data = glue_data.build("roberta", "SST-2")
    max_update = a.warmup + a.updates
    work = common.WORK / "scaling"
    result = dict(machine=common.machine(), warmup=a.warmup, updates=a.updates, scaling=[], hooks=[])
    previous = common.RESULTS / f"{a.out}.json"
    if a.skip_scaling and previous.exists():  # keep the scaling rows measured before
        import json

        result["scaling"] = json.loads(previous.read_text()).get("scaling", [])

    print("scaling (roberta reduced, plugin best settings)", flush=True)
    rows = [
        ("1 process x 2 threads, batch 32", {}, 32, []),
        ("1 process x 1 thread, batch 32", {"OMP_NUM_THREADS": "1"}, 32, []),
        ("2 processes x 1 thread, batch 2x32", {"OMP_NUM_THREADS": "1"}, 32, ["--distributed-world-size", "2", "--find-unused-parameters"]),
        ("2 processes x 1 thread, batch 2x16", {"OMP_NUM_THREADS": "1"}, 16, ["--distributed-world-size", "2", "--find-unused-parameters"]),
    ]
    for i, (name, env, bsz, extra) in enumerate([] if a.skip_scaling else rows):
        cmd = train_cmd(data, bsz, max_update, plugin_best=True, user_dir=True, extra=extra)
        result["scaling"].append(measure(name, cmd, env, work / f"scaling.{i}.log", a.warmup))
        common.save_result(a.out, result)

    print("hook overhead (stock task and optimizer, with and without --user-dir)", flush=True)
    for rep in range(a.pairs):
        order = [False, True] if rep % 2 == 0 else [True, False]
        for hooked in order:
            name = "stock + --user-dir fairseq_npu" if hooked else "stock"
            cmd = train_cmd(data, 32, max_update, plugin_best=False, user_dir=hooked)
            # the hooks alone: the plugin's cpu allocator setting (a speed-up of its own) stays off
            env = {"OMP_NUM_THREADS": "1", "FAIRSEQ_NPU_CPU_MALLOC": "system"} if hooked else {"OMP_NUM_THREADS": "1"}
            result["hooks"].append(measure(name, cmd, env, work / f"hooks.{rep}.{int(hooked)}.log", a.warmup))
            common.save_result(a.out, result)

    print("import cost", flush=True)
    plain = import_seconds("import fairseq, fairseq.options", a.import_repeats)
    hooked = import_seconds("import fairseq, fairseq.options, fairseq_npu", a.import_repeats)
    result["import"] = dict(fairseq=plain, fairseq_plus_plugin=hooked,
                            median_extra_s=round(statistics.median(hooked) - statistics.median(plain), 3))
    print(f"  import fairseq {plain} s; + fairseq_npu {hooked} s", flush=True)
    print(common.save_result(a.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
