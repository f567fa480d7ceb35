"""Multi-seed fine-tuning (``--seeds=1,2,3,4,5`` on the full launch scripts): one summary over the seeds' runs.

test/common.sh runs one fine-tuning per seed into ``OUTPUT_DIR/seed<N>`` (each with its own summary.json), then
``python -m fairseq_npu.launch seeds`` writes ``OUTPUT_DIR/summary.json`` from them: every seed's best dev metric
and status, and the median, mean and sample standard deviation over the seeds that finished. The RoBERTa paper
reports the median of five runs on GLUE dev; small tasks (RTE, MRPC, CoLA, STS-B) move by points from seed to seed.

A seed whose run failed, or left no summary or no dev metric, is listed as failed with its reason; the statistics
say how many seeds they cover, and the final ``Accuracy:`` line names the failed seeds, so none vanishes from the
table unnoticed. Standard library only: the launch helpers run without fairseq.
"""

import json
import os
import statistics
from typing import List, Optional, Sequence

from . import summary as run_summary

SEED_DIR = "seed{}"
# fields of one seed's summary.json that describe that run only; the rest (plan, recipe) is shared by the seeds
SEED_SPECIFIC = {"best_metric", "final_metric", "fps", "fps_window", "fps_method", "status", "exit_code", "log",
                 "command", "e2e_seconds", "updates", "epochs", "output_dir", "seed"}


def parse_seeds(text: str) -> List[int]:
    """``"1,2,3"`` -> [1, 2, 3]; ValueError naming the flag for anything else (empty, repeated, not a number)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or not all(p.isdigit() for p in parts):
        raise ValueError(f"--seeds={text}: expected whole numbers separated by commas, e.g. --seeds=1,2,3,4,5")
    seeds = [int(p) for p in parts]
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise ValueError(f"--seeds={text}: seed {repeated[0]} given twice")
    return seeds


def seed_dir(output_dir: str, seed: int) -> str:
    return os.path.join(output_dir, SEED_DIR.format(seed))


def _seed_result(output_dir: str, seed: int, exit_code: Optional[int]) -> dict:
    directory = seed_dir(output_dir, seed)
    result = {"seed": seed, "output_dir": directory, "exit_code": exit_code}
    path = os.path.join(directory, run_summary.SUMMARY)
    try:
        with open(path, encoding="utf-8") as f:
            run = json.load(f)
    except (OSError, ValueError) as err:
        reason = "no summary.json" if isinstance(err, FileNotFoundError) else f"unreadable summary.json ({err})"
        return dict(result, status="failed", reason=f"{reason} (exit code {exit_code})")
    result.update(best_metric=run.get("best_metric"), final_metric=run.get("final_metric"), fps=run.get("fps"),
                  metric_name=run.get("metric_name"), updates=run.get("updates"))
    if exit_code not in (0, None) or run.get("status") != "ok":
        return dict(result, status="failed", reason=f"training failed (exit code {run.get('exit_code', exit_code)})")
    if run.get("best_metric") is None:
        return dict(result, status="failed", reason="no dev metric in the log")
    return dict(result, status="ok")


def _stats(values: Sequence[float]) -> dict:
    if not values:
        return {"median": None, "mean": None, "std": None, "min": None, "max": None}
    return {
        "median": statistics.median(values),
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else None,  # sample standard deviation (n - 1)
        "min": min(values),
        "max": max(values),
    }


def build(output_dir: str, seeds: Sequence[int], exit_codes: Optional[Sequence[int]] = None) -> dict:
    """The multi-seed summary.json: per-seed results, statistics over the finished seeds, the run's plan fields."""
    exit_codes = list(exit_codes) if exit_codes is not None else [None] * len(seeds)
    if len(exit_codes) != len(seeds):
        raise ValueError(f"{len(seeds)} seeds but {len(exit_codes)} exit codes")
    runs = [_seed_result(output_dir, s, rc) for s, rc in zip(seeds, exit_codes)]
    ok = [r for r in runs if r["status"] == "ok"]
    metrics = [r["best_metric"] for r in ok]
    fps = [r["fps"] for r in ok if r.get("fps") is not None]
    summary = {}
    first = next((r for r in runs if "metric_name" in r), None)
    if first is not None:  # the plan of the first seed that got as far as a summary (model, task, recipe ...)
        with open(os.path.join(first["output_dir"], run_summary.SUMMARY), encoding="utf-8") as f:
            plan = json.load(f)
        summary.update({k: v for k, v in plan.items() if k not in SEED_SPECIFIC})
    stats = _stats(metrics)
    summary.update(
        seeds=runs,
        seed_list=list(seeds),
        seeds_ok=len(ok),
        seeds_failed=[r["seed"] for r in runs if r["status"] != "ok"],
        status="ok" if len(ok) == len(runs) else "failed",
        output_dir=os.path.abspath(output_dir),
        metric_name=first.get("metric_name") if first else None,
        best_metric=stats["median"],  # what single-seed tools read: the median over the seeds
        metric_stats=dict(stats, over="best dev metric of each finished seed; std is the sample std (n-1)"),
        fps=statistics.median(fps) if fps else None,
        fps_method="median over the finished seeds of each seed's ActualFPS",
    )
    return summary


_fmt = run_summary._fmt  # the number format of the single-run lines


def final_lines(summary: dict) -> List[str]:
    """``ActualFPS: <median>`` and ``Accuracy: <median> (<spread over the seeds>)``, as the single-seed scripts end."""
    stats, n = summary["metric_stats"], len(summary["seeds"])
    spread = (f"median of {summary['seeds_ok']}/{n} seeds {','.join(str(s) for s in summary['seed_list'])}; "
              f"std {_fmt(stats['std'])}, mean {_fmt(stats['mean'])}, min {_fmt(stats['min'])}, "
              f"max {_fmt(stats['max'])}")
    if summary["seeds_failed"]:
        spread += f"; FAILED seeds: {','.join(str(s) for s in summary['seeds_failed'])}"
    lines = [f"seed {r['seed']}: {_fmt(r.get('best_metric')) if r['status'] == 'ok' else 'FAILED: ' + r['reason']}"
             for r in summary["seeds"]]
    return lines + [f"ActualFPS: {_fmt(summary['fps'])}", f"Accuracy: {_fmt(stats['median'])} ({spread})"]


# ----------------------------------------------------------------------------------------------------------------
# ``python -m fairseq_npu.launch seeds check|summarize`` (registered by launch/__main__.py)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("seeds", help="multi-seed runs: check a --seeds list, or summarize the seeds' runs")
    p.add_argument("action", choices=["check", "summarize"])
    p.add_argument("--seeds", required=True, help="comma-separated seeds, as given to the launch script")
    p.add_argument("--output-dir", help="summarize: the folder holding seed<N>/summary.json")
    p.add_argument("--exit-codes", help="summarize: each seed's exit status, comma-separated, in --seeds order")


def cli(opts) -> None:
    """check: print the seeds space-separated. summarize: write summary.json, print the final lines; exit 1 when a
    seed failed (after printing, so the table still gets the other seeds)."""
    seeds = parse_seeds(opts.seeds)
    if opts.action == "check":
        print(" ".join(str(s) for s in seeds))
        return
    if not opts.output_dir:
        raise ValueError("seeds summarize needs --output-dir")
    codes = [int(c) for c in opts.exit_codes.split(",")] if opts.exit_codes else None
    result = build(opts.output_dir, seeds, codes)
    print(f"summary: {run_summary.write(opts.output_dir, result)}")
    print("\n".join(final_lines(result)))
    if result["status"] != "ok":
        raise SystemExit(1)
