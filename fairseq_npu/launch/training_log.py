"""Read a fairseq ``--log-format json`` log: records by kind, training intervals, validation results, world size;
compute throughput. The one log reader of the plugin: the launch scripts' summary.json and the benchmarks use it.

FPS (samples per second) comes from fairseq's ``train_inner`` records, one per ``--log-interval`` updates. Each
record carries, over the updates since the previous record: ``bsz`` (sentences per update, summed over all
workers), ``wpb`` (tokens per update) and ``wps`` (tokens per second of wall time on the master). So the interval
took ``delta_updates * wpb / wps`` seconds and processed ``delta_updates * bsz`` samples. ``wps`` and ``wpb`` are
logged to one decimal on values in the hundreds or more, which makes that time exact to well under 1%; ``ups``
(two decimals, often below 1 on big models) is the fallback. ``train_wall`` is logged in whole seconds and is
useless for short intervals.

FPS = sum of samples / sum of seconds (time-weighted, not a mean of per-interval rates) over the intervals that
- start at or after ``warmup_updates`` (the first updates pay for graph compilation and allocator growth). By
  default that is a tenth of the logged updates, at most 100 and at least 1, so the first record is never timed:
  fairseq's meters start after the first update. ``warmup_updates=0`` times the first record too; and
- do not span validation or checkpoint saving: an interval is dropped when a validation or checkpoint line, or
  an epoch boundary, lies between it and the previous record (fairseq's timer keeps running through those).
"""

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Union

_RECORD = re.compile(r"\|\s*(?P<tag>train_inner|train|valid\w*)\s*\|\s*(?P<json>\{.*\})\s*$")
_WORLD = re.compile(r"training on (\d+) devices")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")
# lines fairseq prints while the training timer runs but no training happens
# fairseq's line when a run continues from its own checkpoint_last.pt (a rerun into the same folder)
_RESUMED = re.compile(r"Loaded checkpoint \S*checkpoint_last\.pt \(epoch \d+ @ [1-9]\d* updates\)")
# a command's one-line refusal (``fairseq-train: error: ...``, errors.py), or the last line of a traceback
_ERROR = re.compile(r"^[\w.-]+: error: \S")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt)\b.*")
_PAUSE = re.compile(r"begin validation on|Saving checkpoint to|Preparing to save checkpoint|begin dry-run validation")
_GRAPH_REPORT = re.compile(r"update: graph report (\{.*\})\s*$")  # fairseq_npu/update/graphs.py, each log step


def _count(value) -> int:
    """A logged count; fairseq logs null where every update of the interval was skipped."""
    return int(value) if isinstance(value, float) and math.isfinite(value) else 0


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@dataclass
class Interval:
    """One ``train_inner`` record and what precedes it in the log."""

    epoch: int
    num_updates: int
    bsz: float
    stats: Dict[str, float]
    after_pause: bool = False  # validation / checkpoint / epoch boundary since the previous record

    def seconds(self, delta_updates: int) -> Optional[float]:
        wps, wpb, ups = self.stats.get("wps"), self.stats.get("wpb"), self.stats.get("ups")
        if isinstance(wps, float) and isinstance(wpb, float) and wps > 0 and wpb > 0:
            return delta_updates * wpb / wps
        if isinstance(ups, float) and ups > 0:
            return delta_updates / ups
        return None


@dataclass
class TrainingLog:
    intervals: List[Interval] = field(default_factory=list)
    valid: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)  # subset -> records in order
    epochs: List[Dict[str, float]] = field(default_factory=list)  # "train" (end of epoch) records
    evals: List[Dict[str, float]] = field(default_factory=list)  # lines of fairseq-npu-evaluate --json
    world_size: Optional[int] = None
    resumed: bool = False  # training continued from a checkpoint that had made updates
    error: Optional[str] = None  # the last error line: why a command that failed did
    graph_report: Optional[dict] = None  # the last ``update: graph report`` (--update-mode graph)
    # every record by its tag (train_inner, train, valid, valid_<subset>...), numbers as floats, and the line's
    # timestamp as ``_time`` (seconds since the epoch, local time) where it has one
    records: Dict[str, List[Dict[str, float]]] = field(default_factory=dict)


def parse(lines: Union[str, Iterable[str]]) -> TrainingLog:
    """Parse a log given as its text or as lines."""
    if isinstance(lines, str):
        lines = lines.splitlines()
    log = TrainingLog()
    pause = False
    for line in lines:
        match = _RECORD.search(line)
        if match is None and line.startswith('{"task": '):  # fairseq-npu-evaluate --json: one object per split
            try:
                log.evals.append({k: _number(v) for k, v in json.loads(line).items()})
            except json.JSONDecodeError:
                pass
            continue
        if match is None:
            if _ERROR.match(line) or _EXCEPTION.match(line):
                log.error = line.strip()
            world = _WORLD.search(line)
            report = _GRAPH_REPORT.search(line)
            if report:
                try:
                    log.graph_report = json.loads(report.group(1))
                except json.JSONDecodeError:
                    pass
            elif world:
                log.world_size = int(world.group(1))
            elif _RESUMED.search(line):
                log.resumed = True
            elif _PAUSE.search(line):
                pause = True
            continue
        try:
            record = {k: _number(v) for k, v in json.loads(match.group("json")).items()}
        except json.JSONDecodeError:
            continue
        tag = match.group("tag")
        stamp = _STAMP.match(line)
        if stamp:
            record["_time"] = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
        log.records.setdefault(tag, []).append(record)
        if tag == "train_inner":
            epoch, updates = _count(record.get("epoch")), _count(record.get("num_updates"))
            if log.intervals and epoch != log.intervals[-1].epoch:
                pause = True
            log.intervals.append(Interval(epoch, updates, float(_count(record.get("bsz"))), record, pause))
            pause = False
        elif tag == "train":
            log.epochs.append(record)
            pause = True
        else:
            log.valid.setdefault(tag, []).append(record)
            pause = True
    return log


def parse_file(path) -> TrainingLog:
    with open(path, encoding="utf-8", errors="replace") as f:
        return parse(f)


@dataclass
class Throughput:
    samples_per_s: Optional[float]  # FPS; None when no interval could be timed
    updates_per_s: Optional[float]
    measured_updates: int
    measured_seconds: float
    samples: float
    real_tokens_per_batch: Optional[float]  # fairseq's wpb (non-pad tokens per update), update-weighted
    pad_ratio: Optional[float]  # logged by sentence_prediction_npu only, update-weighted
    samples_per_cpu_s: Optional[float]  # from cpu_ms, where every timed record has it (benchmarks/cpu_timed_train.py)
    intervals_used: int
    intervals_total: int
    first_update: Optional[int]  # the timed window: updates (first_update, last_update]
    last_update: Optional[int]


def fps(log: TrainingLog, warmup_updates: Optional[int] = None, strict: bool = False) -> Throughput:
    """Samples/s after warm-up over the intervals free of validation and checkpointing (see module doc).

    If the warm-up leaves no interval, every clean interval but the first record's is timed instead, or with
    ``strict`` (the benchmarks: a figure must come from the window asked for) ValueError says so.
    """
    records = log.intervals
    if warmup_updates is None:
        warmup_updates = max(1, min(100, (records[-1].num_updates // 10) if records else 0))
    # (start, record) per interval; the first record's interval starts at update 0
    spans = [(records[i - 1].num_updates if i else 0, records[i]) for i in range(len(records))]
    clean = [(start, r) for start, r in spans if not r.after_pause and r.num_updates > start]
    used = [(s, r) for s, r in clean if s >= warmup_updates]
    if not used and strict:
        last = records[-1].num_updates if records else 0
        raise ValueError(f"no train_inner interval after {warmup_updates} warm-up updates "
                         f"(last update logged: {last}); train longer or log more often")
    used = used or [(s, r) for s, r in clean if s > 0]
    samples = seconds = updates = tokens = cpu = 0.0
    pads = []
    timed_cpu = bool(used) and all("cpu_ms" in r.stats for _, r in used)
    for start, record in used:
        delta = record.num_updates - start
        took = record.seconds(delta)
        if took is None:
            continue
        samples += delta * record.bsz
        seconds += took
        updates += delta
        wpb = record.stats.get("wpb")
        tokens += delta * wpb if isinstance(wpb, float) else 0.0
        if timed_cpu:
            cpu += delta * record.stats["cpu_ms"] / 1000.0
        if isinstance(record.stats.get("pad_ratio"), float):
            pads.append((delta, record.stats["pad_ratio"]))
    return Throughput(
        samples_per_s=samples / seconds if seconds > 0 else None,
        updates_per_s=updates / seconds if seconds > 0 else None,
        measured_updates=int(updates), measured_seconds=seconds, samples=samples,
        real_tokens_per_batch=tokens / updates if updates else None,
        pad_ratio=sum(n * p for n, p in pads) / sum(n for n, _ in pads) if pads else None,
        samples_per_cpu_s=samples / cpu if timed_cpu and cpu > 0 else None,
        intervals_used=len(used), intervals_total=len(records),
        first_update=used[0][0] if used else None, last_update=used[-1][1].num_updates if used else None,
    )


def metric_series(log: TrainingLog, subset: str, metric: str) -> List[float]:
    """Values of ``<subset>_<metric>`` over the validation records of ``subset``, in order."""
    key = f"{subset}_{metric}"
    return [r[key] for r in log.valid.get(subset, []) if isinstance(r.get(key), float) and not math.isnan(r[key])]
