"""summary.json of a launch-script run, and the lines the scripts print last (``ActualFPS:``, ``Accuracy:``)."""

import json
import os
import tempfile
from typing import List, Optional

from . import training_log

SUMMARY = "summary.json"


def _best(values: List[float], metric: str) -> Optional[float]:
    if not values:
        return None
    return min(values) if metric == "loss" else max(values)


def build(plan: dict, log: training_log.TrainingLog, *, e2e_seconds: float, exit_code: int, log_path: str,
          command: List[str], warmup_updates: Optional[int] = None) -> dict:
    """Everything a results table needs about one run, from its plan (command.build) and its log."""
    summary = dict(plan)
    metric, subset = plan["metric"], plan["valid_subsets"].split(",")[0]
    summary.update(status="ok" if exit_code == 0 else "failed", exit_code=exit_code, log=log_path, command=command,
                   e2e_seconds=round(e2e_seconds, 3))
    if plan["mode"] == "eval":
        record = next((r for r in reversed(log.evals) if r.get("split") == subset), None)
        value = record.get(metric) if record else None
        summary.update(
            fps=record.get("samples_per_second") if record else None,
            fps_method="samples/s of the evaluation loop after its first batch, all workers together",
            device_count=int(record["world_size"]) if record and "world_size" in record else None,
            samples=int(record["sentences"]) if record and "sentences" in record else None,
            metric_name=metric, final_metric=value, best_metric=value,
            evals={r.get("split"): r for r in log.evals},
        )
        return summary

    throughput = training_log.fps(log, warmup_updates)
    last = log.intervals[-1] if log.intervals else None
    epoch_records = log.epochs
    updates = None
    if epoch_records:
        updates = int(epoch_records[-1].get("train_num_updates", 0))
    if last is not None:
        updates = max(updates or 0, last.num_updates)
    values = training_log.metric_series(log, subset, metric)
    summary.update(
        device_count=log.world_size,
        epochs=int(epoch_records[-1]["epoch"]) if epoch_records else (last.epoch if last else 0),
        updates=updates,
        fps=round(throughput.samples_per_s, 3) if throughput.samples_per_s else None,
        fps_method=(
            "samples/s = sum(bsz*updates) / sum(updates*wpb/wps) over train_inner intervals after warm-up, "
            "excluding intervals that span validation, checkpoint saving or an epoch boundary"
        ),
        fps_window={"after_update": throughput.first_update, "to_update": throughput.last_update,
                    "intervals": throughput.intervals_used, "of_intervals": throughput.intervals_total,
                    "samples": throughput.samples, "seconds": round(throughput.measured_seconds, 6)},
        metric_name=metric if plan["mode"] == "full" else None,
        final_metric=values[-1] if values else None,
        best_metric=_best(values, metric),
        valid_subset=subset if plan["mode"] == "full" else None,
    )
    return summary


def write(output_dir: str, summary: dict) -> str:
    """Write summary.json atomically (temp file, then rename): a reader never sees half a file."""
    os.makedirs(output_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".json", dir=output_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    path = os.path.join(output_dir, SUMMARY)
    os.replace(tmp, path)
    return path


def _fmt(value) -> str:
    if value is None:
        return "NA"
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def final_lines(summary: dict) -> List[str]:
    """The last lines a script prints: ``ActualFPS: <samples/s>`` and, for full and eval runs, ``Accuracy: <metric>``."""
    lines = [f"ActualFPS: {_fmt(summary.get('fps'))}"]
    if summary["mode"] in ("full", "eval"):
        lines.append(f"Accuracy: {_fmt(summary.get('best_metric'))}")
    return lines
