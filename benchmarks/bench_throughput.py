"""Training throughput on real SST-2: stock fairseq-train vs the plugin (step by step up to its best settings) vs a
Hugging Face loop, run back to back in one invocation, order alternated between repeats.

Rows per model (same model size, batch size, data, seed and learning-rate schedule everywhere):

- ``stock``: ``fairseq-train --task sentence_prediction --optimizer adam`` in fp32, the best stock fairseq can do
  on a CPU (stock ``--amp`` autocasts on cuda only, stock ``--bf16`` switches to TPU mode). ALBERT has no stock
  fairseq model, so its stock row loads the plugin for the model only and keeps the stock task and optimizer.
- ``plugin, stock flags`` (roberta): the same command plus ``--user-dir fairseq_npu``: the cost of the hooks.
- ``+ length grouping``: ``--task sentence_prediction_npu --group-by-length``.
- ``+ fused_adamw``: ``--optimizer fused_adamw``.
- ``+ bf16 autocast``: ``--amp`` (bf16 on cpu): the plugin's best settings.
- ``plugin best + --sdpa-attention`` (roberta): attention as one ``scaled_dot_product_attention`` call with a
  boolean mask (fairseq_npu/models/sdpa_self_attention.py).
- ``plugin best, glibc's default allocator`` (roberta): the same with ``FAIRSEQ_NPU_CPU_MALLOC=system``: what the
  plugin's cpu allocator setting (fairseq_npu/cpu_allocator.py) adds. Rows meant to show stock behaviour while loading the
  plugin (ALBERT's stock row, ``plugin, stock flags``) run with it too.
- ``HF Trainer, defaults`` / ``HF Trainer best``: ``transformers.Trainer`` (``benchmarks/hf_trainer.py``) at its
  default sampler, optimizer and fp32, and at its best settings (length-grouped sampler, fused AdamW, the device's
  faster precision).

Samples/s are measured over the updates after the warm-up, from fairseq's per-interval ``ups`` x ``bsz``.

``--device cuda`` is the GPU column: full-size roberta_base / albert_base (``--size base``, its default there), and
each side at its best on a GPU: stock with fairseq's fp16 recipe (``--fp16``, dynamic loss scaling) and ``adam``;
the plugin with grouping + ``fused_adamw`` under ``--fp16`` and under ``--amp --amp-dtype bfloat16``, and the
``--fp16`` row again with the model compiled by ``torch.compile``; the HF Trainer at its defaults and its best. ``--print-commands`` lists the rows without running them.
"""

import argparse
import json
import sys
from pathlib import Path

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

LOG_INTERVAL = 10
KEY_ROWS = {
    "roberta": ("stock", "+ length grouping", "plugin best: grouping + fused_adamw + bf16", "HF Trainer, defaults",
                "HF Trainer best", "plugin: fused_adamw + bf16, no grouping",
                "plugin best, glibc's default allocator"),
    "albert": ("stock", "plugin best: grouping + fused_adamw + bf16", "HF Trainer best",
               "plugin: fused_adamw + bf16, no grouping"),
}


def fairseq_rows(model: str, data: Path, batch_size: int, max_update: int, device: str = "cpu", sizes=None,
                 log_interval: int = LOG_INTERVAL):
    base = common.module_command(
        "cpu_timed_train", str(data), *common.common_train_flags(batch_size, 1e-4, 2000, 100, cpu=device == "cpu"),
        *common.model_flags(model, sizes), *common.task_flags("SST-2"),
        "--max-update", str(max_update), "--log-interval", str(log_interval), "--no-save", "--disable-validation")
    user_dir, stock = common.USER_DIR, common.STOCK_TASK
    glibc_default = ["env", "FAIRSEQ_NPU_CPU_MALLOC=system"]  # loads the plugin, keeps stock's allocator behaviour
    grouped = base + user_dir + common.GROUPED_TASK
    if device == "cuda":
        return [
            ("stock", base + (user_dir if model == "albert" else []) + stock + common.FP16_FLAGS),
            ("plugin: fused_adamw + fp16, no grouping",
             base + user_dir + ["--task", "sentence_prediction_npu", "--optimizer", "fused_adamw"] + common.FP16_FLAGS),
            ("plugin best: grouping + fused_adamw + fp16", grouped + ["--optimizer", "fused_adamw"] + common.FP16_FLAGS),
            ("plugin: grouping + fused_adamw + bf16 autocast",
             grouped + ["--optimizer", "fused_adamw", "--amp", "--amp-dtype", "bfloat16"]),
            # torch.compile of the model (cpu_timed_train.py's BENCH_COMPILE_MODEL): slower than eager on the CPU
            # (docs/benchmarks.md section 4); on a GPU, where the host is the bottleneck, it is the row to watch
            ("plugin best + torch.compile of the model",
             ["env", "BENCH_COMPILE_MODEL=1"] + grouped + ["--optimizer", "fused_adamw"] + common.FP16_FLAGS),
        ] + ([("plugin best + --sdpa-attention",
               grouped + ["--optimizer", "fused_adamw", "--sdpa-attention"] + common.FP16_FLAGS)]
             if model == "roberta" else [])  # ALBERT's own attention is already one such call
    rows = []
    if model == "roberta":
        rows.append(("stock", base + stock))
        rows.append(("plugin, stock flags", glibc_default + base + user_dir + stock))
    else:
        rows.append(("stock", glibc_default + base + user_dir + stock))
    rows.append(("plugin: fused_adamw + bf16, no grouping",
                 base + user_dir + ["--task", "sentence_prediction_npu", "--optimizer", "fused_adamw", "--amp"]))
    rows.append(("+ length grouping", grouped + ["--optimizer", "adam"]))
    rows.append(("+ fused_adamw", grouped + ["--optimizer", "fused_adamw"]))
    rows.append(("plugin best: grouping + fused_adamw + bf16", grouped + ["--optimizer", "fused_adamw", "--amp"]))
    if model == "roberta":  # ALBERT's largest gradient (15 MB) is below the size where the setting applies
        rows.append(("plugin best, glibc's default allocator",
                     glibc_default + grouped + ["--optimizer", "fused_adamw", "--amp"]))
        rows.append(("plugin best + --sdpa-attention",
                     grouped + ["--optimizer", "fused_adamw", "--amp", "--sdpa-attention"]))
    return rows


def hf_rows(model: str, data: Path, batch_size: int, warmup: int, updates: int, device: str = "cpu",
            size: str = "reduced"):
    """The Hugging Face Trainer at its defaults and at its best settings (benchmarks/hf_trainer.py)."""
    base = common.module_command("hf_trainer", "--model", model, "--data", str(data), "--batch-size", str(batch_size),
                                 "--warmup", str(warmup), "--updates", str(updates), "--device", device, "--size", size)
    return [("HF Trainer, defaults", base + ["--settings", "default", "--precision", "fp32"]),
            ("HF Trainer best", base + ["--settings", "best"])]


def measure(name: str, cmd, log: Path, warmup: int, env) -> dict:
    """One row's run: samples/s from the HF Trainer's JSON line or from fairseq's train_inner records."""
    try:
        info = common.run_logged(cmd, log, env=env)
    except RuntimeError as e:  # one broken row must not cost the others' measurements
        print(f"  {name}: FAILED: {e}", flush=True)
        return dict(name=name, error=str(e).splitlines()[0], samples_per_s=None)
    text = log.read_text()
    if "benchmarks.hf_trainer" in cmd:
        tp = json.loads(text.strip().splitlines()[-1])
    else:
        tp = training_log.fps(training_log.parse(text), warmup, strict=True).__dict__
    cpu = tp.get("samples_per_cpu_s")
    print(f"  {name:34s} {tp['samples_per_s']:8.1f} samples/s {cpu or 0:8.1f} samples/cpu-s  "
          f"(load {info['load_before']} -> {info['load_after']})", flush=True)
    return dict(name=name, **tp, **info)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20, help="updates before measuring (a multiple of 10)")
    p.add_argument("--updates", type=int, default=80, help="measured updates (a multiple of 10)")
    p.add_argument("--repeats", type=int, default=2, help="each repeat runs the rows in the reverse order")
    p.add_argument("--rows", choices=("all", "key"), default="all",
                   help="key: only stock, + length grouping, plugin best and the two HF Trainer rows (roberta), stock, "
                        "plugin best and HF Trainer best (albert): for a busy machine")
    p.add_argument("--threads", type=int, default=0,
                   help="OMP_NUM_THREADS for every run (0: torch's default); 1 makes samples per CPU-second "
                        "meaningful on a busy machine")
    p.add_argument("--only-row", default=None,
                   help="measure this one row and merge it into the saved results (which must exist)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=("reduced", "base"), default=None,
                   help="reduced (4 x 256, the CPU default) or base (roberta_base / albert_base, the cuda default)")
    p.add_argument("--log-interval", type=int, default=LOG_INTERVAL, help="fairseq's; warm-up and updates must be "
                   "multiples of it")
    p.add_argument("--print-commands", action="store_true", help="print every row's command, run nothing")
    p.add_argument("--out", default=None, help="results name (default: throughput_<device>)")
    a = p.parse_args(argv)
    size = a.size or ("base" if a.device == "cuda" else "reduced")
    sizes = common.BASE_SIZES if size == "base" else common.SIZES
    a.out = a.out or f"throughput_{a.device}"
    for name in ("warmup", "updates"):
        if getattr(a, name) % a.log_interval:
            p.error(f"--{name} {getattr(a, name)} is not a multiple of --log-interval {a.log_interval}")

    result = dict(machine=common.machine(), threads=a.threads or "default", batch_size=a.batch_size, warmup=a.warmup, updates=a.updates,
                  device=a.device, size=size, sizes=sizes, models={})
    for model in a.models.split(","):
        data = glue_data.build(model, "SST-2")
        rows = fairseq_rows(model, data, a.batch_size, a.warmup + a.updates, a.device, sizes, a.log_interval)
        rows += hf_rows(model, data, a.batch_size, a.warmup, a.updates, a.device, size)
        if a.print_commands:
            env = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
            for name, cmd in rows:
                print(f"{model} | {name} | {common.shell_command(cmd, env)}")
            continue
        if a.rows == "key" and a.device == "cpu":
            keep = KEY_ROWS[model]
            rows = [r for r in rows if r[0] in keep]
        if a.only_row:
            rows = [r for r in rows if r[0] == a.only_row]
        runs = {name: [] for name, _ in rows}
        env = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
        commands = {name: common.shell_command(cmd, env) for name, cmd in rows}
        for rep in range(a.repeats):
            order = rows if rep % 2 == 0 else rows[::-1]
            print(f"{model}, repeat {rep + 1}/{a.repeats}", flush=True)
            for name, cmd in order:
                log = common.WORK / "throughput" / model / f"{common.slug(name)}.{rep}.log"
                runs[name].append(measure(name, cmd, log, a.warmup, env))
        measured = [dict(name=n, command=commands[n], runs=runs[n]) for n, _ in rows]
        if a.only_row:
            saved = json.loads((common.RESULTS / f"{a.out}.json").read_text())
            old = [r for r in saved["models"][model]["rows"] if r["name"] != a.only_row]
            result = saved
            measured = old + measured
        result["models"][model] = dict(rows=measured)
        common.save_result(a.out, result)  # partial results survive an interrupted run
    if not a.print_commands:
        print(common.save_result(a.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
