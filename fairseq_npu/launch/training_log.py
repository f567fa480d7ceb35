"""Read a fairseq ``--log-format json`` log: training intervals, validation results, world size; compute FPS.

FPS (samples per second) comes from fairseq's ``train_inner`` records, one per ``--log-interval`` updates. Each
record carries, over the updates since the previous record: ``bsz`` (sentences per update, summed over all
workers), ``wpb`` (tokens per update) and ``wps`` (tokens per second of wall time on the master). So the interval
took ``delta_updates * wpb / wps`` seconds and processed ``delta_updates * bsz`` samples. ``wps`` and ``wpb`` are
logged to one decimal on values in the hundreds or more, which makes that time exact to well under 1%; ``ups``
(two decimals, often below 1 on big models) is the fallback. ``train_wall`` is logged in whole seconds and is
useless for short intervals.

FPS = sum of samples / sum of seconds over the intervals that
- start after the warm-up (the first record always, since fairseq's timer starts after the first update and the
  first updates pay for graph compilation and allocator growth; then any interval starting before
  ``warmup_updates``), and
- do not span validation or checkpoint saving: an interval is dropped when a validation or checkpoint line, or
  an epoch boundary, lies between it and the previous record (fairseq's timer keeps running through those).
"""

import json
import math
import re
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional

_RECORD = re.compile(r"\|\s*(?P<tag>train_inner|train|valid\w*)\s*\|\s*(?P<json>\{.*\})\s*$")
_WORLD = re.compile(r"training on (\d+) devices")
# lines fairseq prints while the training timer runs but no training happens
_PAUSE = re.compile(r"begin validation on|Saving checkpoint to|Preparing to save checkpoint|begin dry-run validation")


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


def parse(lines: Iterable[str]) -> TrainingLog:
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
            world = _WORLD.search(line)
            if world:
                log.world_size = int(world.group(1))
            elif _PAUSE.search(line):
                pause = True
            continue
        try:
            record = {k: _number(v) for k, v in json.loads(match.group("json")).items()}
        except json.JSONDecodeError:
            continue
        tag = match.group("tag")
        if tag == "train_inner":
            epoch, updates = int(record.get("epoch", 0)), int(record.get("num_updates", 0))
            if log.intervals and epoch != log.intervals[-1].epoch:
                pause = True
            log.intervals.append(Interval(epoch, updates, float(record.get("bsz", 0)), record, pause))
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
    fps: Optional[float]
    samples: float
    seconds: float
    intervals_used: int
    intervals_total: int
    first_update: Optional[int]  # the timed window: updates (first_update, last_update]
    last_update: Optional[int]


def fps(log: TrainingLog, warmup_updates: Optional[int] = None) -> Throughput:
    """Samples/s after warm-up over the intervals free of validation and checkpointing (see module doc).

    ``warmup_updates`` defaults to a tenth of the logged updates, at most 100. If the warm-up would leave no
    interval, only the first record is dropped; if that leaves none, fps is None.
    """
    records = log.intervals
    if warmup_updates is None:
        warmup_updates = min(100, (records[-1].num_updates // 10) if records else 0)
    # (start, record) per interval; the first record has no known start and is never timed
    spans = [(records[i - 1].num_updates, records[i]) for i in range(1, len(records))]
    clean = [(start, r) for start, r in spans if not r.after_pause and r.num_updates > start]
    used = [(s, r) for s, r in clean if s >= warmup_updates] or clean
    samples = seconds = 0.0
    for start, record in used:
        delta = record.num_updates - start
        took = record.seconds(delta)
        if took is None:
            continue
        samples += delta * record.bsz
        seconds += took
    value = samples / seconds if seconds > 0 else None
    return Throughput(
        fps=value, samples=samples, seconds=seconds, intervals_used=len(used), intervals_total=len(records),
        first_update=used[0][0] if used else None, last_update=used[-1][1].num_updates if used else None,
    )


def metric_series(log: TrainingLog, subset: str, metric: str) -> List[float]:
    """Values of ``<subset>_<metric>`` over the validation records of ``subset``, in order."""
    key = f"{subset}_{metric}"
    return [r[key] for r in log.valid.get(subset, []) if isinstance(r.get(key), float) and not math.isnan(r[key])]
