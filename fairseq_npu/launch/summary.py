"""summary.json of a launch-script run, and the lines the scripts print last (``ActualFPS:``, ``Accuracy:``).

``status`` is ``running`` from the plan until the run ends, then ``ok``, ``failed`` (with a ``reason``) or
``interrupted`` (the launch script was stopped by a signal). A run whose command exited 0 is still ``failed`` when
its log does not hold what the run was for: a finite validation loss and a dev metric (full runs), a timed
training interval (performance runs), the metric of the evaluated split (evaluation).
"""

import json
import math
import os
import tempfile
from typing import List, Optional

from fairseq_npu.argv import flag_value

from . import training_log

SUMMARY = "summary.json"


def _best(values: List[float], metric: str) -> Optional[float]:
    if not values:
        return None
    return min(values) if metric == "loss" else max(values)


def _finite(value) -> bool:
    return isinstance(value, float) and math.isfinite(value)


def _whole(value) -> Optional[int]:
    """A logged count, or None where fairseq logged null (an epoch whose every update was skipped)."""
    return int(value) if _finite(value) else None


def running(plan: dict) -> dict:
    """The summary written when a run starts: a folder never holds the summary of an earlier run beside its log."""
    return dict(plan, status="running")


def failure_reason(summary: dict, log: training_log.TrainingLog) -> Optional[str]:
    """Why a run whose command exited 0 did not produce what it was for; None when it did."""
    mode = summary["mode"]
    if mode == "eval":
        if summary.get("final_metric") is None:
            return f"no {summary['metric_name']} for split {summary['valid_subsets'].split(',')[0]} in the log"
        return None
    if mode == "full":
        subset = summary["valid_subset"]
        for record in log.valid.get(subset, []):
            loss = record.get(f"{subset}_loss")
            if loss is not None and not _finite(loss):
                epoch = _whole(record.get("epoch"))
                return (f"{subset}_loss is {loss} at epoch {epoch} (the run diverged; a lower --lr or "
                        "--precision=fp32 may help)")
        if summary.get("best_metric") is None:
            resumed = " (the run resumed from a checkpoint that had finished its schedule)" if log.resumed else ""
            return f"no {subset}_{summary['metric_name']} in the log{resumed}"
        return None
    if not log.intervals:
        return "no training interval in the log"
    loss = log.intervals[-1].stats.get("loss")
    if loss is not None and not _finite(loss):
        return f"train loss is {loss} at update {log.intervals[-1].num_updates} (the run diverged)"
    if summary.get("fps") is None:
        return "no training interval could be timed (train longer or pass a smaller --log-interval)"
    return None


def build(plan: dict, log: training_log.TrainingLog, *, e2e_seconds: float, exit_code: int, log_path: str,
          command: List[str], warmup_updates: Optional[int] = None, signal_name: Optional[str] = None) -> dict:
    """Everything a results table needs about one run, from its plan (command.build) and its log.

    ``signal_name``: the launch script was stopped by this signal (status ``interrupted``).
    """
    summary = _measure(plan, log, e2e_seconds=e2e_seconds, exit_code=exit_code, log_path=log_path, command=command,
                       warmup_updates=warmup_updates)
    if signal_name:
        summary.update(status="interrupted", reason=f"stopped by {signal_name}")
    elif exit_code != 0:
        said = f": {log.error}" if log.error else ""
        summary.update(status="failed", reason=f"the command exited with code {exit_code}{said}")
    else:
        reason = failure_reason(summary, log)
        summary.update(status="failed" if reason else "ok", **({"reason": reason} if reason else {}))
    return summary


def _measure(plan: dict, log: training_log.TrainingLog, *, e2e_seconds: float, exit_code: int, log_path: str,
             command: List[str], warmup_updates: Optional[int]) -> dict:
    summary = dict(plan)
    metric, subset = plan["metric"], plan["valid_subsets"].split(",")[0]
    summary.update(exit_code=exit_code, log=log_path, command=command, e2e_seconds=round(e2e_seconds, 3))
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
    counts = [_whole(r.get("train_num_updates")) for r in epoch_records] + ([last.num_updates] if last else [])
    counts = [c for c in counts if c is not None]
    updates = max(counts) if counts else None
    values = training_log.metric_series(log, subset, metric)
    summary.update(
        device_count=log.world_size,
        epochs=(_whole(epoch_records[-1].get("epoch")) or 0) if epoch_records else (last.epoch if last else 0),
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
        update=_update(command, log),
    )
    return summary


def _update(command: List[str], log: training_log.TrainingLog) -> dict:
    """Who ran the updates (fairseq_npu/update/): the mode, and under graphs whether capture ran, the share of
    updates that replayed a graph, the graphs and their capture time, and why updates fell back."""
    mode = flag_value(command, "--update-mode") or "stock"
    report = dict(log.graph_report or {})
    if mode != "graph":
        return {"mode": mode, "captured": False}
    if not report:
        return {"mode": mode, "captured": False, "fallbacks": {"no graph report in the log": None}}
    return {"mode": mode, **report}


def write(output_dir: str, summary: dict, name: str = SUMMARY) -> str:
    """Write summary.json (or ``name``) atomically (temp file, then rename): a reader never sees half a file."""
    os.makedirs(output_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".summary.", suffix=".json", dir=output_dir)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
        f.write("\n")
    path = os.path.join(output_dir, name)
    os.replace(tmp, path)
    return path


def _fmt(value) -> str:
    if value is None:
        return "NA"
    return f"{value:.3f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


def final_lines(summary: dict) -> List[str]:
    """The last lines a script prints: ``ActualFPS: <samples/s>`` and, for full and eval runs, ``Accuracy: <metric>``."""
    lines = [f"ActualFPS: {_fmt(summary.get('fps'))}"]
    if summary["mode"] in ("full", "eval"):  # a failed or stopped run's metric is in summary.json, not a result
        lines.append(f"Accuracy: {_fmt(summary.get('best_metric') if summary.get('status') == 'ok' else None)}")
    return lines
