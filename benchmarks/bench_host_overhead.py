"""Host work per update, stock fairseq-train vs the plugin: operators dispatched and host reads of tensor values
per ``Trainer.train_step`` (by phase), and the time an update takes when the model is too narrow for the
arithmetic to matter.

Why: at batch 32 of SST-2 sentences (13 tokens on average) a GPU or NPU finishes roberta_base's arithmetic in a
few milliseconds, so the update rate is set by how many operators the host has to launch and how often it has to
stop and wait for the device: short GLUE batches are launch/host-bound. Both are properties of
the code path, not of the device or the hidden size: they are counted here on the CPU (``host_ops_train.py``)
with the real depth (12 layers, so the real number of parameter tensors and layer calls) at width 64. The timing
runs (``cpu_timed_train.py``, single-threaded) use the same narrow models, so host work is a large share of
what they measure (not all of it: the arithmetic and the embedding's gradient remain).

Rows per model: stock fp32 (``sentence_prediction``, ``adam``); the stock GPU recipe's ``--fp16`` (fairseq's
FP16Optimizer with flat fp32 master weights and ``adam``; on the CPU it needs the plugin loaded for device
placement, nothing else of it); the plugin's best on CPU (grouping, ``fused_adamw``, ``--amp`` bf16); and the
plugin's GPU row (grouping, ``fused_adamw``, ``--fp16``). The ``--fp16`` rows are counted, not timed: this CPU
has no fp16 arithmetic units, so their time would measure emulated fp16 matmuls, not host work.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

# roberta_base / albert_base depth and tensor count, width 64 (ALBERT keeps its 128-dim embedding)
NARROW_SIZES = {
    "roberta": dict(layers=12, dim=64, ffn=256, heads=4),
    "albert": dict(layers=12, dim=64, ffn=256, heads=4, embedding_dim=128),
}
COUNTED_UPDATES = 3  # counts are the same every update once the first has built the optimizer state
COMPILED_ROW = "plugin best on CPU + torch.compile of the model"
COMPILED_WARMUP = 60  # compilation, and the recompile when dynamo turns the shapes dynamic


def rows(model: str):
    """(name, fairseq flags, extra environment, count?, time?) per row."""
    user_dir, stock = common.USER_DIR, common.STOCK_TASK
    plugin = user_dir + common.GROUPED_TASK + ["--optimizer", "fused_adamw"]
    return [
        ("stock fp32", (user_dir if model == "albert" else []) + stock, {}, True, True),
        ("stock --fp16 recipe", user_dir + stock + common.FP16_FLAGS, {}, True, False),
        ("plugin best on CPU: grouping + fused_adamw + --amp (bf16)", plugin + ["--amp"], {}, True, True),
        ("plugin: grouping + fused_adamw + --fp16", plugin + common.FP16_FLAGS, {}, True, False),
        # what torch.compile adds to the plugin's best (inductor; counting under a dispatch mode would not see
        # inside compiled kernels, so this row is timed only)
        (COMPILED_ROW, plugin + ["--amp"], {"BENCH_COMPILE_MODEL": "1"}, False, True),
    ]


def base_command(module: str, model: str, data: Path, max_update: int, log_interval: int):
    return common.module_command(
        module, str(data), *common.common_train_flags(32, 1e-4, 2000, 100), *common.model_flags(model, NARROW_SIZES),
        *common.task_flags("SST-2"), "--max-update", str(max_update), "--log-interval", str(log_interval),
        "--no-save", "--disable-validation")


def parse_counts(text: str) -> dict:
    records = [json.loads(line.split(" ", 1)[1]) for line in text.splitlines() if line.startswith("host_ops ")]
    if not records:
        raise ValueError("no host_ops record in the log")
    return records[-1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--warmup", type=int, default=20, help="updates before timing (a multiple of 10)")
    p.add_argument("--updates", type=int, default=100, help="timed updates (a multiple of 10)")
    p.add_argument("--repeats", type=int, default=2, help="timing runs per row, order reversed on alternate repeats")
    p.add_argument("--out", default="host_ops_cpu")
    p.add_argument("--only-row", default=None, help="measure this one row and merge it into the saved results")
    a = p.parse_args(argv)
    result = dict(machine=common.machine(), sizes=NARROW_SIZES, batch_size=32, warmup=a.warmup, updates=a.updates,
                  models={})
    if a.only_row:
        result = json.loads((common.RESULTS / f"{a.out}.json").read_text())
    for model in a.models.split(","):
        data = glue_data.build(model, "SST-2")
        measured = []
        for name, flags, extra_env, count, time in rows(model):
            if a.only_row and name != a.only_row:
                continue
            env = {"OMP_NUM_THREADS": "1", **extra_env}
            slug = name.split(":")[0].replace(" ", "_").replace("-", "").replace(".", "")
            row = dict(name=name, counts=None, count_command=None, timing_command=None, runs=[], slug=slug, env=env)
            if count:
                cmd = base_command("host_ops_train", model, data, COUNTED_UPDATES, 10) + flags
                log = common.WORK / "host_ops" / model / f"{slug}.count.log"
                info = common.run_logged(cmd, log, env=env)
                row.update(counts=parse_counts(log.read_text()), count_command=common.shell_command(cmd, env),
                           count_load=[info["load_before"], info["load_after"]])
                print(f"{model} | {name}: {row['counts']['total_ops']} operators, {row['counts']['total_syncs']} "
                      f"host reads per update", flush=True)
            if time:
                row["warmup"] = max(a.warmup, COMPILED_WARMUP) if "BENCH_COMPILE_MODEL" in env else a.warmup
                row["timing_cmd"] = base_command("cpu_timed_train", model, data, row["warmup"] + a.updates,
                                                 10) + flags
                row["timing_command"] = common.shell_command(row["timing_cmd"], env)
            measured.append(row)
        timed = [row for row in measured if row.get("timing_cmd")]
        for rep in range(a.repeats):
            for row in (timed if rep % 2 == 0 else timed[::-1]):
                log = common.WORK / "host_ops" / model / f"{row['slug']}.time.{rep}.log"
                info = common.run_logged(row["timing_cmd"], log, env=row["env"])
                tp = training_log.fps(training_log.parse(log.read_text()), row["warmup"], strict=True)
                row["runs"].append(dict(ms_per_update=1000.0 / tp.updates_per_s,
                                        cpu_ms_per_update=32 * 1000.0 / tp.samples_per_cpu_s, **info))
                print(f"{model} | {row['name']}: {row['runs'][-1]['ms_per_update']:.1f} ms per update "
                      f"(load {info['load_before']} -> {info['load_after']})", flush=True)
        for row in measured:
            for key in ("timing_cmd", "slug", "env"):
                row.pop(key, None)
            runs = row["runs"]
            row["ms_per_update"] = statistics.median(r["ms_per_update"] for r in runs) if runs else None
            row["cpu_ms_per_update"] = statistics.median(r["cpu_ms_per_update"] for r in runs) if runs else None
        if a.only_row:
            kept = [r for r in result["models"][model]["rows"] if r["name"] != a.only_row]
            measured = kept + measured
        result["models"][model] = dict(rows=measured)
        common.save_result(a.out, result)
    print(common.save_result(a.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
