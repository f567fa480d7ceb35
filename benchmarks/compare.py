"""What a user gets, side by side in one run: stock ``fairseq-train``, the launch script
``test/train_performance_1p.sh`` with its defaults, and the Hugging Face Trainer at its best settings.

Rows per model (same data, batch size and model size; the rows run one after another, in the listed order on odd
repeats and reversed on even ones):

- ``stock fairseq-train``: fairseq's GLUE recipe (README.glue.md: adam, polynomial decay, no clipping) with
  ``--task sentence_prediction --optimizer adam``; on cuda with the recipe's ``--fp16`` settings. ALBERT has no
  stock fairseq model: its row loads the plugin for the model only and keeps the stock task and optimizer.
- ``train_performance_1p.sh defaults``: the launch script as shipped (its recipe and per-device settings), only
  the batch size, the number of updates and the model size given.
- ``HF Trainer best``: ``python -m benchmarks.hf_trainer --settings best`` (length-grouped sampler, fused AdamW,
  the device's faster precision).

Samples/s are wall-clock, over the updates after ``--warmup``: from fairseq's ``train_inner`` records for the two
fairseq rows (``fairseq_npu/launch/training_log.py``), from the Trainer's step callback for the HF row. Prints each run, the
median per row, the ratios and every command line; writes ``OUT_DIR/compare.json`` and ``compare.md``.

    python -m benchmarks.compare                               # CPU: 4 x 256 models, about 10 minutes on 2 cores
    python -m benchmarks.compare --device cuda --size base     # GPU: roberta_base, albert_base
"""

import argparse
import json
import os
import statistics
import sys
from pathlib import Path
from typing import Dict, List, Tuple

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

STOCK, LAUNCH, HF = "stock fairseq-train", "train_performance_1p.sh defaults", "HF Trainer best"
LOG_INTERVAL = 10  # the launch script's for performance runs: --warmup and --updates must be multiples of it
RATIOS = ((LAUNCH, STOCK), (LAUNCH, HF), (HF, STOCK))


def size_flags(model: str, size: str) -> List[str]:
    """The model-size flags without ``--arch``; none at the base size (the archs' own)."""
    if size == "base":
        return []
    flags = common.model_flags(model, common.SIZE_TABLES[size])
    return flags[2:]  # drop "--arch", "<model>_base"


def rows(model: str, data: Path, a, rep: int) -> List[Tuple[str, List[str]]]:
    max_update = a.warmup + a.updates
    stock = [common.fairseq_train(), str(data),
             *common.common_train_flags(a.batch_size, 1e-4, 2000, 100, cpu=a.device == "cpu"),
             "--arch", f"{model}_base", *size_flags(model, a.size), *common.task_flags("SST-2"),
             "--max-update", str(max_update), "--log-interval", str(LOG_INTERVAL), "--no-save",
             "--disable-validation", *(common.USER_DIR if model == "albert" else []), *common.STOCK_TASK,
             *(common.FP16_FLAGS if a.device != "cpu" else [])]
    out_dir = common.WORK / "compare" / a.device / model / f"launch.{rep}"
    launch = ["bash", "test/train_performance_1p.sh", f"--data_path={data}", f"--model={model}",
              f"--device={a.device}", f"--batch-size={a.batch_size}", f"--max-update={max_update}",
              f"--output_dir={out_dir}"]
    extra = size_flags(model, a.size)
    if extra:
        launch += ["--", *extra]
    hf = common.module_command("hf_trainer", "--model", model, "--data", str(data), "--batch-size",
                               str(a.batch_size), "--warmup", str(a.warmup), "--updates", str(a.updates),
                               "--device", a.device, "--size", a.size, "--settings", "best",
                               "--out-dir", str(common.WORK / "compare" / a.device / model / "hf"))
    return [(STOCK, stock), (LAUNCH, launch), (HF, hf)]


def measure(name: str, cmd: List[str], log: Path, warmup: int, env: Dict[str, str]) -> dict:
    info = common.run_logged(cmd, log, env=env, timeout=1800)
    text = log.read_text()
    if name == HF:
        tp = json.loads(text.strip().splitlines()[-1])
    else:
        tp = training_log.fps(training_log.parse(text), warmup, strict=True).__dict__
    # the Trainer's choices (optimizer, precision) go in the table: "best" depends on the device
    chosen = {k: tp[k] for k in ("optim", "precision") if k in tp}
    return dict(samples_per_s=tp["samples_per_s"], pad_ratio=tp.get("pad_ratio"), **chosen, **info)


def ratios(medians: Dict[str, float]) -> Dict[str, float]:
    return {f"{a} / {b}": medians[a] / medians[b] for a, b in RATIOS if medians.get(a) and medians.get(b)}


def markdown(result: dict) -> str:
    lines = [f"Device {result['device']}, size {result['size']}, batch {result['batch_size']}, "
             f"{result['updates']} updates measured after {result['warmup']}, {result['repeats']} repeat(s) "
             f"(order reversed on alternate repeats). Machine: {result['machine']['cpu']}, GPU: "
             f"{result['machine']['gpu']}, torch {result['machine']['torch']}, transformers "
             f"{result['machine']['transformers']}, commit {result['machine']['commit']}.", ""]
    lines += ["| model | row | samples/s (median) | runs | pad ratio | optimizer, precision |", "|---|---|---|---|---|---|"]
    for model, m in result["models"].items():
        for name, row in m["rows"].items():
            runs = " / ".join(f"{r['samples_per_s']:.1f}" for r in row["runs"])
            first = row["runs"][0]
            pad = first.get("pad_ratio")
            chosen = ", ".join(first[k] for k in ("optim", "precision") if k in first) or "see the command"
            lines.append(f"| {model} | {name} | {row['median']:.1f} | {runs} | "
                         f"{'-' if pad is None else f'{pad:.3f}'} | {chosen} |")
    lines += ["", "| model | ratio | value |", "|---|---|---|"]
    for model, m in result["models"].items():
        lines += [f"| {model} | {k} | {v:.2f}x |" for k, v in m["ratios"].items()]
    lines += ["", "Commands (first repeat):", ""]
    for model, m in result["models"].items():
        for name, row in m["rows"].items():
            lines += [f"- {model}, {name}:", "  ```", f"  {row['command']}", "  ```"]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=sorted(common.SIZE_TABLES), default=None,
                   help="reduced (4 x 256; the cpu default), base (roberta_base / albert_base; the cuda default), "
                        "tiny (dry runs)")
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20, help=f"updates before measuring (a multiple of {LOG_INTERVAL})")
    p.add_argument("--updates", type=int, default=200, help=f"measured updates (a multiple of {LOG_INTERVAL})")
    p.add_argument("--repeats", type=int, default=2, help="each repeat runs the rows in the reverse order")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run (0: torch's default)")
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA, help="real GLUE data and vocabularies")
    p.add_argument("--out-dir", type=Path, default=common.RESULTS / "compare")
    a = p.parse_args(argv)
    a.size = a.size or ("base" if a.device == "cuda" else "reduced")
    for name in ("warmup", "updates"):
        if getattr(a, name) % LOG_INTERVAL or getattr(a, name) <= 0:
            p.error(f"--{name} {getattr(a, name)}: expected a positive multiple of {LOG_INTERVAL}")
    env = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
    if a.device == "cuda":
        # one GPU: with more visible, fairseq-train spawns a worker per GPU and the Trainer wraps DataParallel
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    result = dict(machine=common.machine(), device=a.device, size=a.size, sizes=common.SIZE_TABLES[a.size],
                  batch_size=a.batch_size, warmup=a.warmup, updates=a.updates, repeats=a.repeats,
                  threads=a.threads or "default", models={})
    a.out_dir.mkdir(parents=True, exist_ok=True)
    for model in a.models.split(","):
        data = glue_data.build(model, "SST-2", a.data_dir)
        table: Dict[str, dict] = {}
        for rep in range(a.repeats):
            planned = rows(model, data, a, rep)
            for name, cmd in (planned if rep % 2 == 0 else planned[::-1]):
                row = table.setdefault(name, dict(command=common.shell_command(cmd, env), runs=[]))
                log = common.WORK / "compare" / a.device / model / f"{common.slug(name)}.{rep}.log"
                run = measure(name, cmd, log, a.warmup, env)
                row["runs"].append(run)
                print(f"{model} | {name:34s} {run['samples_per_s']:8.1f} samples/s  (repeat {rep + 1}, load "
                      f"{run['load_before']} -> {run['load_after']})", flush=True)
        for row in table.values():
            row["median"] = statistics.median(r["samples_per_s"] for r in row["runs"])
        ordered = {name: table[name] for name, _ in rows(model, data, a, 0)}
        result["models"][model] = dict(rows=ordered, ratios=ratios({n: r["median"] for n, r in ordered.items()}))
        for k, v in result["models"][model]["ratios"].items():
            print(f"{model} | {k}: {v:.2f}x", flush=True)
    json_path, md_path = a.out_dir / "compare.json", a.out_dir / "compare.md"
    common.write_atomic(json_path, json.dumps(result, indent=1) + "\n")
    common.write_atomic(md_path, markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
