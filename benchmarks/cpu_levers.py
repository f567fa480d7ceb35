"""The CPU levers of the launch defaults, each side by side with the Hugging Face Trainer at its best in one run:
the launch script with a given ``--precision`` (``amp``: bf16 autocast, O1; ``bf16``: bf16 weights with fp32
masters, O2) and thread count, and ``benchmarks.hf_trainer --settings best``. The rows run one after another,
listed order then reversed (``--repeats``), as in ``benchmarks.compare``, whose commands and measurement this uses.

    python -m benchmarks.cpu_levers --models roberta,albert --variants amp,bf16 --updates 100

Prints each run and, per model, each variant's median over the Trainer's median; writes OUT_DIR/cpu_levers.json.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from benchmarks import common, compare, glue_data


def variant_command(base, variant: str):
    """The launch row of compare.rows with ``--precision=VARIANT`` (VARIANT: a launch precision, optionally
    ``@N`` for OMP_NUM_THREADS=N)."""
    precision, _, threads = variant.partition("@")
    cmd = [f"{arg}.{common.slug(variant)}" if arg.startswith("--output_dir=") else arg for arg in base]
    cmd.insert(cmd.index("--") if "--" in cmd else len(cmd), f"--precision={precision}")
    env = {"OMP_NUM_THREADS": threads} if threads else {}
    return cmd, env


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--variants", default="amp,bf16", help="launch --precision values, each optionally @THREADS")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--updates", type=int, default=100)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA)
    p.add_argument("--out-dir", type=Path, default=common.RESULTS / "cpu_levers")
    a = p.parse_args(argv)
    a.device, a.size = "cpu", "reduced"
    a.rows, a.compile_models, a.compile_backend = "launch,hf", "", "inductor"  # compare.rows' selection
    result = dict(machine=common.machine(), batch_size=a.batch_size, warmup=a.warmup, updates=a.updates,
                  repeats=a.repeats, models={})
    for model in a.models.split(","):
        data = glue_data.build(model, "SST-2", a.data_dir)
        runs = {}
        for rep in range(a.repeats):
            planned = compare.rows(model, data, a, rep)
            launch, hf = dict(planned)[compare.LAUNCH], dict(planned)[compare.HF]
            order = [(compare.HF, hf, {})] + [(v, *variant_command(launch, v)) for v in a.variants.split(",")]
            for name, cmd, env in (order if rep % 2 == 0 else order[::-1]):
                log = common.WORK / "cpu_levers" / model / f"{common.slug(name)}.{rep}.log"
                run = compare.measure(name, cmd, log, a.warmup, env)
                runs.setdefault(name, []).append(run["samples_per_s"])
                print(f"{model} | {name:16s} {run['samples_per_s']:8.1f} samples/s (repeat {rep + 1})", flush=True)
        medians = {name: statistics.median(v) for name, v in runs.items()}
        hf_median = medians[compare.HF]
        result["models"][model] = dict(runs=runs, medians=medians,
                                       over_hf={n: m / hf_median for n, m in medians.items() if n != compare.HF})
        for name, ratio in result["models"][model]["over_hf"].items():
            print(f"{model} | {name} / HF Trainer best: {ratio:.2f}x", flush=True)
    a.out_dir.mkdir(parents=True, exist_ok=True)
    common.write_atomic(a.out_dir / "cpu_levers.json", json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
