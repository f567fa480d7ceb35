"""Accuracy: small RoBERTa and ALBERT trained from scratch on real SST-2 and STS-B, stock path vs plugin path,
same budget (same number of updates, batch size, learning-rate schedule and seed), dev metric every few updates.

- stock path: ``--task sentence_prediction --optimizer adam``, fp32 (ALBERT loads the plugin for its model only);
- plugin path: ``--task sentence_prediction_npu --group-by-length --optimizer fused_adamw --amp`` (bf16 on cpu).

Writes the learning curves (dev metric against updates and against wall-clock seconds) to ``docs/img/`` and the
numbers to ``benchmarks/results/accuracy_cpu.json``. From-scratch models of this size on a fraction of an epoch are
far below the published fine-tuned figures; the point is stock vs plugin at equal budget, not the absolute level.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common  # noqa: E402
import fairseq_log  # noqa: E402
import glue_data  # noqa: E402

# per task: batch size (README.glue.md), peak lr, updates, validation interval; dev metric as each path logs it
BUDGET = {
    "SST-2": dict(batch_size=32, lr=2e-4, updates=300, every=50),
    "STS-B": dict(batch_size=16, lr=2e-4, updates=360, every=60),
}
METRIC = {"SST-2": "accuracy", "STS-B": "pearson"}
PATHS = ("stock", "plugin")
# extra plugin variants (--paths), to tell what moves the curve: less strict grouping, or no grouping at all
VARIANTS = {
    "plugin-window1024": ["--group-window", "1024"],
    "plugin-nogroup": None,
}


def train_cmd(model: str, task: str, path: str, data: Path) -> list:
    b = BUDGET[task]
    cmd = [str(common.BIN / "fairseq-train"), str(data),
           *common.common_train_flags(b["batch_size"], b["lr"], b["updates"], b["updates"] // 16),
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
    records = fairseq_log.parse_records(log_text)
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


def plot(result: dict, img_dir: Path) -> list:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in result["runs"]:
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for model, by_path in result["runs"][task].items():
            for path, run in by_path.items():
                pts = run["curve"]["points"]
                style = dict(marker="o", linestyle="--" if path == "stock" else "-", label=f"{model} {path}")
                axes[0].plot([p["update"] for p in pts], [p["value"] for p in pts], **style)
                if all(p["seconds"] is not None for p in pts):
                    axes[1].plot([p["seconds"] for p in pts], [p["value"] for p in pts], **style)
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
    p.add_argument("--out", default="accuracy_cpu")
    p.add_argument("--plot-only", action="store_true", help="redraw the plots from the saved results")
    a = p.parse_args(argv)

    if a.plot_only:
        import json

        result = json.loads((common.RESULTS / f"{a.out}.json").read_text())
        print(plot(result, common.REPO / "docs" / "img"))
        return 0
    result = dict(machine=common.machine(), sizes=common.SMALL_SIZES, budget=BUDGET, runs={})
    path_list = a.paths.split(",")
    for task in a.tasks.split(","):
        for model in a.models.split(","):
            data = glue_data.build(model, task)
            # alternate which path runs first, so a change of machine load does not always favour the same one
            flip = (list(BUDGET).index(task) + a.models.split(",").index(model)) % 2
            paths = path_list[::-1] if flip else path_list
            for path in paths:
                cmd = train_cmd(model, task, path, data)
                slug = path.replace(", ", "_").replace(" ", "_")
                log = common.WORK / "accuracy" / a.out / f"{model}.{task}.{slug}.log"
                info = common.run_logged(cmd, log)
                c = curve(log.read_text(), METRIC[task])
                print(f"{task} {model} {path}: final {c['metric']} {c['final']} best {c['best']} "
                      f"({info['wall_s']} s, load {info['load_before']} -> {info['load_after']})", flush=True)
                result["runs"].setdefault(task, {}).setdefault(model, {})[path] = dict(
                    command=common.shell_command(cmd), curve=c, **info)
                common.save_result(a.out, result)
    result["name"] = a.out
    result["plots"] = plot(result, common.REPO / "docs" / "img")
    print(common.save_result(a.out, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
