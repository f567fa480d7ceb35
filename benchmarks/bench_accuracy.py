"""Accuracy: small RoBERTa and ALBERT trained from scratch on real SST-2 and STS-B, stock path vs plugin path,
same budget (same number of updates, batch size, learning-rate schedule and seed), dev metric every few updates.

- stock path: ``--task sentence_prediction --optimizer adam``, fp32 (ALBERT loads the plugin for its model only);
- plugin path: ``--task sentence_prediction_npu --group-by-length --optimizer fused_adamw --amp`` (bf16 on cpu).

Two budgets (``--budget``): ``early`` (a few hundred updates: how the first part of a run compares) and ``epoch``
(SST-2: one epoch, STS-B: three; what a short fine-tuning run ends with). ``--seeds 1,2,3`` repeats every run with
each seed and ``--jobs 2`` runs two trainings at a time (each single-threaded under ``OMP_NUM_THREADS=1``).

Writes the learning curves (dev metric against updates and against wall-clock seconds) to ``docs/img/`` and the
numbers to ``benchmarks/results/<out>.json``. From-scratch models of this size are far below the published
fine-tuned figures; the point is stock vs plugin at equal budget, not the absolute level.
"""

import argparse
import statistics
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks import common, glue_data
from fairseq_npu.launch import training_log

# per budget and task: batch size (README.glue.md), peak lr, updates, validation interval
BUDGETS = {
    "early": {
        "SST-2": dict(batch_size=32, lr=2e-4, updates=300, every=50),
        "STS-B": dict(batch_size=16, lr=2e-4, updates=360, every=60),
    },
    # SST-2: 67,349 sentences / 32 = 2,105 updates (one epoch); STS-B: 5,749 pairs / 16 = 360 per epoch, three epochs
    "epoch": {
        "SST-2": dict(batch_size=32, lr=5e-4, updates=2105, every=421),
        "STS-B": dict(batch_size=16, lr=5e-4, updates=1080, every=180),
    },
}
BUDGET = BUDGETS["early"]
METRIC = {"SST-2": "accuracy", "STS-B": "pearson"}
PATHS = ("stock", "plugin")
# extra plugin variants (--paths), to tell what moves the curve: less strict grouping, or no grouping at all
VARIANTS = {
    "plugin-window1024": ["--group-window", "1024"],
    # what the launch scripts run on a cpu: the window, and the one device update (dropout masks, kernel decay)
    "plugin-defaults": ["--group-window", "1024", "--update-mode", "device"],
    "plugin-nogroup": None,
}


def train_cmd(model: str, task: str, path: str, data: Path, budget: dict = None, seed: int = 1) -> list:
    b = (budget or BUDGET)[task]
    # warm-up: 1/16 of the updates, close to the 6% of fairseq's GLUE recipe
    cmd = [common.fairseq_train(), str(data),
           *common.common_train_flags(b["batch_size"], b["lr"], b["updates"], b["updates"] // 16, seed),
           *common.model_flags(model, common.SMALL_SIZES), *common.task_flags(task),
           "--max-update", str(b["updates"]), "--log-interval", "20",
           "--validate-interval-updates", str(b["every"]), "--validate-interval", "1000",
           "--no-save", "--batch-size-valid", "64"]
    if path == "stock":
        if model == "albert":
            cmd += ["--user-dir", "fairseq_npu"]
        cmd += ["--task", "sentence_prediction", "--optimizer", "adam"]
        if task == "STS-B":
            cmd += ["--report-pearson-and-spearman"]
    else:
        cmd += ["--user-dir", "fairseq_npu", "--task", "sentence_prediction_npu", "--optimizer", "fused_adamw", "--amp"]
        extra = VARIANTS.get(path, [])
        if extra is not None:
            cmd += ["--group-by-length", *extra]
    return cmd


def curve(log_text: str, metric: str) -> dict:
    """Dev metric (both paths log it in percent) by update and by seconds since the first training record."""
    records = training_log.parse(log_text).records
    inner = records.get("train_inner", [])
    valid = records.get("valid", [])
    if not valid:
        raise ValueError("no validation records in the log")
    t0 = inner[0]["_time"] - inner[0]["num_updates"] / inner[0]["ups"] if inner and inner[0].get("ups") else None
    points = []
    for r in valid:
        value = r.get(f"valid_{metric}")
        if value is None:
            raise ValueError(f"validation record lacks valid_{metric}: {sorted(r)}")
        points.append(dict(update=r["valid_num_updates"], value=round(value, 2), loss=r.get("valid_loss"),
                           seconds=round(r["_time"] - t0, 1) if t0 is not None else None))
    finite = [p["value"] for p in points if p["value"] == p["value"]]  # pearson is nan for constant predictions
    return dict(metric=metric, points=points, final=points[-1]["value"], best=max(finite) if finite else None)


def seed_runs(run: dict) -> list:
    """The runs of one (task, model, path): a list with one run per seed (older results hold a single run)."""
    return list(run["seeds"].values()) if "seeds" in run else [run]


def summary(runs: list) -> dict:
    """Final and best dev metric over seeds: each seed's value, their mean and sample standard deviation."""
    finals = [r["curve"]["final"] for r in runs]
    finite = [v for v in finals if v == v]
    bests = [r["curve"]["best"] for r in runs if r["curve"]["best"] is not None]
    return dict(finals=finals, mean=statistics.fmean(finite) if finite else None,
                sd=statistics.stdev(finite) if len(finite) > 1 else None,
                best_mean=statistics.fmean(bests) if bests else None,
                wall_mean=statistics.fmean(r["wall_s"] for r in runs))


def plot(result: dict, img_dir: Path) -> list:
    """One figure per task: the dev metric against updates and against seconds; with several seeds, their mean as
    the line and each seed as a faint line of the same colour. Without matplotlib: none, said once."""
    try:
        import matplotlib
    except ImportError:
        print("plots skipped: matplotlib is not installed (the numbers are in the result JSON)")
        return []

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in result["runs"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        colour = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
        for model, by_path in result["runs"][task].items():
            for path, run in by_path.items():
                runs = seed_runs(run)
                c = next(colour)
                style = dict(marker="o", markersize=3, color=c, linestyle="--" if path == "stock" else "-")
                label = f"{model} {path}" + (f" (mean of {len(runs)} seeds)" if len(runs) > 1 else "")
                n = min(len(r["curve"]["points"]) for r in runs)
                updates = [runs[0]["curve"]["points"][i]["update"] for i in range(n)]
                mean = [statistics.fmean(r["curve"]["points"][i]["value"] for r in runs) for i in range(n)]
                axes[0].plot(updates, mean, label=label, **style)
                for r in runs:
                    pts = r["curve"]["points"]
                    if len(runs) > 1:
                        axes[0].plot([p["update"] for p in pts], [p["value"] for p in pts], color=c, alpha=0.25,
                                     linewidth=0.8)
                    if all(p["seconds"] is not None for p in pts):
                        axes[1].plot([p["seconds"] for p in pts], [p["value"] for p in pts],
                                     label=label if r is runs[0] else None, **style)
        label = f"dev {METRIC[task]} (%)"
        axes[0].set(xlabel="updates", ylabel=label, title=f"{task}: same number of updates")
        axes[1].set(xlabel="wall-clock seconds (2 shared cpu cores)", ylabel=label, title=f"{task}: against time")
        for ax in axes:
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        fig.tight_layout()
        out = img_dir / f"{result.get('name', 'accuracy')}_{task.lower().replace('-', '')}.png"
        fig.savefig(out, dpi=110)
        plt.close(fig)
        written.append(str(out.relative_to(common.REPO)))
    return written


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--tasks", default="SST-2,STS-B")
    p.add_argument("--paths", default=",".join(PATHS), help=f"comma-separated; also: {', '.join(VARIANTS)}")
    p.add_argument("--budget", default="early", choices=sorted(BUDGETS))
    p.add_argument("--seeds", default="1", help="comma-separated seeds; every run is repeated with each")
    p.add_argument("--jobs", type=int, default=1, help="trainings at a time (use OMP_NUM_THREADS=1 with 2 jobs)")
    p.add_argument("--out", default="accuracy_cpu")
    p.add_argument("--plot-only", action="store_true", help="redraw the plots from the saved results")
    a = p.parse_args(argv)

    if a.plot_only:
        import json

        result = json.loads((common.RESULTS / f"{a.out}.json").read_text())
        result.setdefault("name", a.out)  # results saved by a run that stopped before its plots
        result["plots"] = plot(result, common.REPO / "docs" / "img")
        print(result["plots"])
        common.save_result(a.out, result)
        return 0
    budget = BUDGETS[a.budget]
    seeds = [int(x) for x in a.seeds.split(",")]
    models, path_list = a.models.split(","), a.paths.split(",")
    tasks = a.tasks.split(",")
    result = dict(name=a.out, machine=common.machine(), sizes=common.SMALL_SIZES,
                  budget={t: budget[t] for t in tasks}, budget_name=a.budget,
                  seeds=seeds, jobs=a.jobs, runs={})
    plan = []
    for task in tasks:
        for model in models:
            data = glue_data.build(model, task)
            for seed in seeds:
                # alternate which path runs first, so a change of machine load does not always favour the same one
                flip = (list(budget).index(task) + models.index(model) + seed) % 2
                for path in (path_list[::-1] if flip else path_list):
                    plan.append((task, model, path, seed, data))
    lock = threading.Lock()

    def one(job):
        task, model, path, seed, data = job
        cmd = train_cmd(model, task, path, data, budget, seed)
        log = common.WORK / "accuracy" / a.out / f"{model}.{task}.{path}.seed{seed}.log"
        info = common.run_logged(cmd, log, timeout=7200)
        c = curve(log.read_text(), METRIC[task])
        with lock:
            print(f"{task} {model} {path} seed {seed}: final {c['metric']} {c['final']} best {c['best']} "
                  f"({info['wall_s']} s, load {info['load_before']} -> {info['load_after']})", flush=True)
            runs = result["runs"].setdefault(task, {}).setdefault(model, {}).setdefault(path, {"seeds": {}})
            runs["seeds"][str(seed)] = dict(seed=seed, command=common.shell_command(cmd), curve=c, **info)
            common.save_result(a.out, result)

    with ThreadPoolExecutor(max_workers=max(1, a.jobs)) as pool:
        for future in [pool.submit(one, job) for job in plan]:
            future.result()  # re-raises a failed training's error
    # the saved order follows the plan, not the order in which parallel runs finished
    result["runs"] = {t: {m: {p: result["runs"][t][m][p] for p in path_list} for m in models}
                      for t in tasks}
    result["name"] = a.out
    result["plots"] = plot(result, common.REPO / "docs" / "img")
    print(common.save_result(a.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
