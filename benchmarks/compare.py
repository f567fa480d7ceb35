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

Two more rows, run by default on cuda only (``--rows`` picks rows on any device):

- ``train_performance_1p.sh defaults, --update-mode device``: the same launch with the update run eagerly, so that
  the gain of the captured update (the fast preset's ``--update-mode graph`` on cuda) is visible beside it.
- ``train_performance_1p.sh defaults, --update-mode stock`` (``--rows ...,launch-stock-update``, not in the default
  table): the same launch with fairseq's own train_step, so that what the update object gains or costs shows with
  everything else equal.
- ``HF Trainer best + torch_compile``: the Trainer's remaining speed option (``torch_compile=True``), batches padded
  to a multiple of 32 so that it compiles few shapes; the compilation falls inside the warm-up, a shape first met
  later is compiled inside the measured window, as a user would pay for it. ``--compile-models`` limits it.

The ratios to the Trainer use its fastest row. ``--time-budget`` skips the runs that would not end within it
(expected to last as long as the same row did for another model, else as the longest run so far; they are listed
in ``skipped``) and stops one still running at its end; the cuda-only rows run after the others, so they are cut
first. ``compare.json`` is rewritten after every run, so a check stopped from outside keeps what it measured. A
failed run is recorded with its log and the others go on; the exit code is then 1.

Samples/s are wall-clock, over the updates after ``--warmup``: from fairseq's ``train_inner`` records for the two
fairseq rows (``fairseq_npu/launch/training_log.py``), from the Trainer's step callback for the HF row. Prints each run, the
median per row, the ratios and every command line; writes ``OUT_DIR/compare.json`` and ``compare.md``.

    python -m benchmarks.compare                               # CPU: 4 x 256 models, about 10 minutes on 2 cores
    python -m benchmarks.compare --device cuda --size base     # GPU: roberta_base, albert_base, every row
"""

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

STOCK, LAUNCH, HF = "stock fairseq-train", "train_performance_1p.sh defaults", "HF Trainer best"
LAUNCH_EAGER = "train_performance_1p.sh defaults, --update-mode device"
LAUNCH_STOCK_UPDATE = "train_performance_1p.sh defaults, --update-mode stock"  # fairseq's own train_step
HF_COMPILE = "HF Trainer best + torch_compile"
FASTEST_HF = "fastest HF Trainer row"  # not a row: the faster of HF and HF_COMPILE in the ratios
ROW_KEYS = {"stock": STOCK, "launch": LAUNCH, "hf": HF, "hf-compile": HF_COMPILE, "launch-eager": LAUNCH_EAGER,
            "launch-stock-update": LAUNCH_STOCK_UPDATE}
DEFAULT_ROWS = {"cpu": "stock,launch,hf", "cuda": ",".join(k for k in ROW_KEYS if k != "launch-stock-update")}
HF_ROWS = (HF, HF_COMPILE)
COMPILE_PAD_MULTIPLE = 32  # the torch_compile row's batches: lengths 32, 64, 96... instead of every length
LOG_INTERVAL = 10  # the launch script's for performance runs: --warmup and --updates must be multiples of it
RATIOS = ((LAUNCH, STOCK), (LAUNCH, FASTEST_HF), (HF, STOCK), (LAUNCH, LAUNCH_EAGER), (HF_COMPILE, HF),
          (LAUNCH, LAUNCH_STOCK_UPDATE))


def size_flags(model: str, size: str) -> List[str]:
    """The model-size flags without ``--arch``; none at the base size (the archs' own)."""
    if size == "base":
        return []
    flags = common.model_flags(model, common.SIZE_TABLES[size])
    return flags[2:]  # drop "--arch", "<model>_base"


def work_dir(a) -> Path:
    """Where the runs write their logs and output folders."""
    return getattr(a, "work_dir", None) or common.WORK / "compare" / a.device


def rows(model: str, data: Path, a, rep: int) -> List[Tuple[str, List[str]]]:
    """The selected rows of ``model`` (``a.rows``), in the table's order."""
    max_update = a.warmup + a.updates
    stock = [common.fairseq_train(), str(data),
             *common.common_train_flags(a.batch_size, 1e-4, 2000, 100, cpu=a.device == "cpu"),
             "--arch", f"{model}_base", *size_flags(model, a.size), *common.task_flags("SST-2"),
             "--max-update", str(max_update), "--log-interval", str(LOG_INTERVAL), "--no-save",
             "--disable-validation", *(common.USER_DIR if model == "albert" else []), *common.STOCK_TASK,
             *(common.FP16_FLAGS if a.device != "cpu" else [])]

    def launch_script(name: str, fairseq_flags: List[str]) -> List[str]:
        out_dir = work_dir(a) / model / f"{name}.{rep}"
        cmd = ["bash", "test/train_performance_1p.sh", f"--data_path={data}", f"--model={model}",
               f"--device={a.device}", f"--batch-size={a.batch_size}", f"--max-update={max_update}",
               f"--output_dir={out_dir}"]
        return cmd + (["--", *fairseq_flags] if fairseq_flags else [])

    launch = launch_script("launch", size_flags(model, a.size))
    # the eager row: the same launch, its update uncaptured (fairseq takes the last --update-mode it is given)
    eager = launch_script("launch_eager", [*size_flags(model, a.size), "--update-mode", "device"])
    # the launch with fairseq's own train_step: what the update object gains (or costs) with everything else equal
    stock_update = launch_script("launch_stock_update", [*size_flags(model, a.size), "--update-mode", "stock"])
    hf = common.module_command("hf_trainer", "--model", model, "--data", str(data), "--batch-size",
                               str(a.batch_size), "--warmup", str(a.warmup), "--updates", str(a.updates),
                               "--device", a.device, "--size", a.size, "--settings", "best",
                               "--out-dir", str(work_dir(a) / model / "hf"))
    hf_compile = [*hf[:-1], f"{hf[-1]}_compile", "--torch-compile", "--compile-backend", a.compile_backend,
                  "--pad-to-multiple-of", str(COMPILE_PAD_MULTIPLE)]
    chosen = [ROW_KEYS[k] for k in a.rows.split(",")]
    if model not in a.compile_models.split(","):
        chosen = [name for name in chosen if name != HF_COMPILE]
    every = [(STOCK, stock), (LAUNCH, launch), (HF, hf), (HF_COMPILE, hf_compile), (LAUNCH_EAGER, eager),
             (LAUNCH_STOCK_UPDATE, stock_update)]
    return [(name, cmd) for name, cmd in every if name in chosen]


def measure(name: str, cmd: List[str], log: Path, warmup: int, env: Dict[str, str], timeout: float = 1800) -> dict:
    info = common.run_logged(cmd, log, env=env, timeout=timeout)
    text = log.read_text()
    graphs = None
    if name in HF_ROWS:
        tp = json.loads(text.strip().splitlines()[-1])
    else:
        parsed = training_log.parse(text)
        tp = training_log.fps(parsed, warmup, strict=True).__dict__
        graphs = parsed.graph_report  # --update-mode graph: graphs, replayed share, fallbacks
    # the Trainer's choices (optimizer, precision, compilation) go in the table: "best" depends on the device
    chosen = {k: tp[k] for k in ("optim", "precision", "compile_backend") if tp.get(k)}
    return dict(samples_per_s=tp["samples_per_s"], pad_ratio=tp.get("pad_ratio"), **chosen,
                **({"graph_report": graphs} if graphs else {}), **info)


def fastest_hf(medians: Dict[str, float]) -> Optional[str]:
    """The name of the Trainer's fastest row, the one ``FASTEST_HF`` stands for."""
    hf = {name: medians[name] for name in HF_ROWS if medians.get(name)}
    return max(hf, key=hf.get) if hf else None


def ratios(medians: Dict[str, float]) -> Dict[str, float]:
    medians = dict(medians)
    if fastest_hf(medians):
        medians[FASTEST_HF] = medians[fastest_hf(medians)]
    return {f"{a} / {b}": medians[a] / medians[b] for a, b in RATIOS if medians.get(a) and medians.get(b)}


def per_repeat_ratios(rows: Dict[str, dict], fastest: Optional[str]) -> Dict[int, float]:
    """The launch script's samples/s over the Trainer's fastest row's, repeat by repeat (so in each run order):
    {repeat: ratio} for the repeats both rows measured. Runs of an older result without their repeat are taken in
    order."""
    if not fastest or LAUNCH not in rows or fastest not in rows:
        return {}

    def by_repeat(row):
        return {r.get("repeat", i): r["samples_per_s"] for i, r in enumerate(row["runs"])}

    ours, theirs = by_repeat(rows[LAUNCH]), by_repeat(rows[fastest])
    return {rep: ours[rep] / theirs[rep] for rep in sorted(ours) if rep in theirs}


def markdown(result: dict) -> str:
    lines = [f"Device {result['device']}, size {result['size']}, batch {result['batch_size']}, "
             f"{result['updates']} updates measured after {result['warmup']}, {result['repeats']} repeat(s) "
             f"(order reversed on alternate repeats). Machine: {result['machine']['cpu']}, GPU: "
             f"{result['machine']['gpu']}, torch {result['machine']['torch']}, transformers "
             f"{result['machine']['transformers']}, commit {result['machine']['commit']}.", ""]
    # the CUDA graphs column only where a run captured its update (--update-mode graph on cuda)
    graphed = any(r.get("graph_report") for m in result["models"].values() for row in m["rows"].values()
                  for r in row["runs"])
    lines += ["| model | row | samples/s (median) | runs | pad ratio | optimizer, precision |"
              + (" CUDA graphs |" if graphed else ""), "|---|---|---|---|---|---|" + ("---|" if graphed else "")]
    for model, m in result["models"].items():
        for name, row in m["rows"].items():
            if not row["runs"]:
                lines.append(f"| {model} | {name} | failed: see {row['errors'][0]['log']} | - | - | - |"
                             + (" - |" if graphed else ""))
                continue
            runs = " / ".join(f"{r['samples_per_s']:.1f}" for r in row["runs"])
            first = row["runs"][0]
            pad = first.get("pad_ratio")
            chosen = ", ".join(first[k] for k in ("optim", "precision", "compile_backend") if k in first)
            graphs = first.get("graph_report")
            captured = (f"{graphs['graphs']} graphs, {graphs['replay_share']:.0%} replayed" if graphs else "-")
            lines.append(f"| {model} | {name} | {row['median']:.1f} | {runs} | "
                         f"{'-' if pad is None else f'{pad:.3f}'} | {chosen or 'see the command'} |"
                         + (f" {captured} |" if graphed else ""))
    lines += ["", "| model | ratio | value |", "|---|---|---|"]
    for model, m in result["models"].items():
        named = f" ({m['fastest_hf']})" if m.get("fastest_hf") else ""
        lines += [f"| {model} | {k.replace(FASTEST_HF, FASTEST_HF + named)} | {v:.2f}x |"
                  for k, v in m["ratios"].items()]
    per_order = {model: per_repeat_ratios(m["rows"], m.get("fastest_hf")) for model, m in result["models"].items()}
    if any(per_order.values()):
        lines += ["", f"{LAUNCH} / {FASTEST_HF}, repeat by repeat (the listed order on odd repeats, reversed on "
                      "even ones):", ""]
        for model, reps in per_order.items():
            if reps:
                lines.append(f"- {model}: " + ", ".join(
                    f"{v:.3f}x (repeat {rep + 1}, {'listed' if rep % 2 == 0 else 'reversed'})"
                    for rep, v in reps.items()))
    if result.get("skipped"):
        lines += ["", "Not run (out of --time-budget):", ""]
        lines += [f"- {s['model']}, {s['row']}, repeat {s['repeat'] + 1}" for s in result["skipped"]]
    lines += ["", "Commands (first repeat):", ""]
    for model, m in result["models"].items():
        for name, row in m["rows"].items():
            lines += [f"- {model}, {name}:", "  ```", f"  {row['command']}", "  ```"]
    return "\n".join(lines) + "\n"


def plan(models: List[str], a) -> List[Tuple[str, int, List[str]]]:
    """(model, repeat, row names) in running order: each model's rows in the table's order on odd repeats and
    reversed on even ones; the cuda-only rows (HF_COMPILE, LAUNCH_EAGER) after every model's first three, so that
    a time budget cuts them first."""
    core, extra = [], []
    for model in models:
        for rep in range(a.repeats):
            names = [name for name, _ in rows(model, Path("."), a, rep)]
            names = names if rep % 2 == 0 else names[::-1]
            core.append((model, rep, [n for n in names if n not in (HF_COMPILE, LAUNCH_EAGER)]))
            extra.append((model, rep, [n for n in names if n in (HF_COMPILE, LAUNCH_EAGER)]))
    return [step for step in core + extra if step[2]]


def summarise(result: dict, tables: Dict[str, Dict[str, dict]], order: Dict[str, List[str]]) -> None:
    """Medians, ratios and the Trainer's fastest row of every model measured so far, into ``result``."""
    for model, table in tables.items():
        ordered = {name: table[name] for name in order[model] if name in table}
        for row in ordered.values():
            row["median"] = statistics.median(r["samples_per_s"] for r in row["runs"]) if row["runs"] else None
        medians = {n: r["median"] for n, r in ordered.items()}
        result["models"][model] = dict(rows=ordered, ratios=ratios(medians), fastest_hf=fastest_hf(medians))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=sorted(common.SIZE_TABLES), default=None,
                   help="reduced (4 x 256; the cpu default), base (roberta_base / albert_base; the cuda default), "
                        "tiny (dry runs)")
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--rows", default=None,
                   help=f"comma-separated, of {', '.join(ROW_KEYS)} (default: {DEFAULT_ROWS['cpu']} on cpu, all on "
                        "cuda)")
    p.add_argument("--compile-models", default=None, help="models that get the torch_compile row (default: all)")
    p.add_argument("--compile-backend", default="inductor",
                   help="the torch_compile row's backend (eager: dynamo's tracing only, for dry runs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--warmup", type=int, default=20, help=f"updates before measuring (a multiple of {LOG_INTERVAL})")
    p.add_argument("--updates", type=int, default=200, help=f"measured updates (a multiple of {LOG_INTERVAL})")
    p.add_argument("--repeats", type=int, default=2, help="each repeat runs the rows in the reverse order")
    p.add_argument("--threads", type=int, default=0, help="OMP_NUM_THREADS for every run (0: torch's default)")
    p.add_argument("--time-budget", type=float, default=0,
                   help="seconds for every run together: a run that would not end within it is skipped and listed, "
                        "one still running at its end is stopped and counted failed (0: no budget)")
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA, help="real GLUE data and vocabularies")
    p.add_argument("--out-dir", type=Path, default=common.RESULTS / "compare")
    p.add_argument("--work-dir", type=Path, default=None,
                   help="the runs' logs and output folders (default work_dirs/benchmarks/compare/DEVICE)")
    a = p.parse_args(argv)
    started = time.monotonic()
    a.size = a.size or ("base" if a.device == "cuda" else "reduced")
    a.rows = a.rows or DEFAULT_ROWS[a.device]
    a.compile_models = a.compile_models or a.models
    for name in ("warmup", "updates"):
        if getattr(a, name) % LOG_INTERVAL or getattr(a, name) <= 0:
            p.error(f"--{name} {getattr(a, name)}: expected a positive multiple of {LOG_INTERVAL}")
    unknown = [k for k in a.rows.split(",") if k not in ROW_KEYS]
    if unknown:
        p.error(f"--rows {a.rows}: unknown row {unknown[0]!r} (expected some of {', '.join(ROW_KEYS)})")
    env = {"OMP_NUM_THREADS": str(a.threads)} if a.threads else {}
    if a.device == "cuda":
        # one GPU: with more visible, fairseq-train spawns a worker per GPU and the Trainer wraps DataParallel
        env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    result = dict(machine=common.machine(), device=a.device, size=a.size, sizes=common.SIZE_TABLES[a.size],
                  batch_size=a.batch_size, warmup=a.warmup, updates=a.updates, repeats=a.repeats,
                  threads=a.threads or "default", time_budget_s=a.time_budget or None, complete=False, models={},
                  skipped=[])
    a.out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = a.out_dir / "compare.json", a.out_dir / "compare.md"
    models = a.models.split(",")
    data = {model: glue_data.build(model, "SST-2", a.data_dir) for model in models}
    order = {model: [name for name, _ in rows(model, data[model], a, 0)] for model in models}
    tables: Dict[str, Dict[str, dict]] = {}
    walls: Dict[str, float] = {}  # row -> its longest run's wall seconds
    failed = 0
    for model, rep, names in plan(models, a):
        commands = dict(rows(model, data[model], a, rep))
        for name in names:
            cmd = commands[name]
            row = tables.setdefault(model, {}).setdefault(
                name, dict(command=common.shell_command(cmd, env), runs=[], errors=[]))
            left = a.time_budget - (time.monotonic() - started) if a.time_budget else 1800
            # a run is started only if it should end within the budget: as long as this row took for another
            # model, or the longest run so far
            expected = walls.get(name, max(walls.values(), default=0.0))
            if a.time_budget and left < max(expected, 1.0):
                result["skipped"].append(dict(model=model, row=name, repeat=rep))
                print(f"{model} | {name:34s} not run: {left:.0f} s left of --time-budget {a.time_budget:.0f} s, "
                      f"it takes about {expected:.0f} s", flush=True)
                continue
            log = work_dir(a) / model / f"{common.slug(name)}.{rep}.log"
            try:
                run = measure(name, cmd, log, a.warmup, env, timeout=min(1800, left))
            except Exception as err:  # a failed or timed-out run: recorded, and the others still run
                failed += 1
                row["errors"].append(dict(repeat=rep, error=str(err).splitlines()[0], log=str(log)))
                print(f"{model} | {name:34s} FAILED: {str(err).splitlines()[0]}", flush=True)
                continue
            run["repeat"] = rep  # the listed order on even repeats, reversed on odd ones
            row["runs"].append(run)
            walls[name] = max(walls.get(name, 0.0), run["wall_s"])
            print(f"{model} | {name:34s} {run['samples_per_s']:8.1f} samples/s  (repeat {rep + 1}, load "
                  f"{run['load_before']} -> {run['load_after']})", flush=True)
            summarise(result, tables, order)
            common.write_atomic(json_path, json.dumps(result, indent=1) + "\n")
    summarise(result, tables, order)
    for model, m in result["models"].items():
        for k, v in m["ratios"].items():
            print(f"{model} | {k}: {v:.2f}x", flush=True)
        for rep, v in per_repeat_ratios(m["rows"], m.get("fastest_hf")).items():
            print(f"{model} | {LAUNCH} / {FASTEST_HF}, repeat {rep + 1}: {v:.3f}x", flush=True)
    result["complete"] = not failed and not result["skipped"]
    common.write_atomic(json_path, json.dumps(result, indent=1) + "\n")
    common.write_atomic(md_path, markdown(result))
    print(markdown(result))
    print(f"wrote {json_path} and {md_path}")
    if failed:
        print(f"compare: {failed} run(s) failed (see their logs above)", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
