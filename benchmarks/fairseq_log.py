"""Reading fairseq-train's ``--log-format json`` output: per-interval training records, validation records and the
throughput they imply.

fairseq logs, every ``--log-interval`` updates, ``ups`` (updates per second over that interval: the
``train_inner`` meters are reset after each log line) and ``bsz`` (sentences per update, summed over workers).
Samples per second over a set of intervals is therefore total sentences / total time, with each interval's time
``n_updates / ups``; averaging the per-interval rates instead would overweight the fast intervals.
"""

import json
import re
import time
from dataclasses import dataclass
from typing import Dict, List, Optional

_RECORD = re.compile(r"\|\s*(?:INFO\s*\|\s*)?(train_inner|train|valid(?:_\w+)?)\s*\|\s*(\{.*\})\s*$")
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)")


def parse_records(text: str) -> Dict[str, List[dict]]:
    """Records by kind (``train_inner``, ``train``, ``valid``...) from a fairseq json log, numbers as floats; the
    line's timestamp, when it has one, as ``_time`` (seconds since the epoch)."""
    out: Dict[str, List[dict]] = {}
    for line in text.splitlines():
        m = _RECORD.search(line)
        if not m:
            continue
        try:
            raw = json.loads(m.group(2))
        except json.JSONDecodeError:
            continue
        record = {k: _number(v) for k, v in raw.items()}
        stamp = _STAMP.match(line)
        if stamp:
            record["_time"] = time.mktime(time.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S"))
        out.setdefault(m.group(1), []).append(record)
    return out


def _number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return value


@dataclass
class Throughput:
    samples_per_s: float
    updates_per_s: float
    measured_updates: int
    measured_seconds: float
    real_tokens_per_batch: float  # fairseq's wpb: non-pad tokens
    pad_ratio: Optional[float]  # logged by sentence_prediction_npu only
    samples_per_cpu_s: Optional[float] = None  # from cpu_ms (benchmarks/cpu_timed_train.py)


def throughput(records: List[dict], warmup_updates: int) -> Throughput:
    """Samples/s over the ``train_inner`` intervals that start after ``warmup_updates`` updates."""
    prev = 0.0
    samples = seconds = updates = tokens = cpu = 0.0
    pads = []
    timed = all("cpu_ms" in r for r in records)
    for r in records:
        end = r["num_updates"]
        n = end - prev
        start, prev = prev, end
        if start < warmup_updates or n <= 0:
            continue
        if not r.get("ups"):
            raise ValueError(f"train_inner record at update {end:g} has no ups: {r}")
        t = n / r["ups"]
        seconds += t
        updates += n
        samples += n * r["bsz"]
        tokens += n * r.get("wpb", 0.0)
        if timed:
            cpu += n * r["cpu_ms"] / 1000.0
        if "pad_ratio" in r:
            pads.append((n, r["pad_ratio"]))
    if updates == 0:
        raise ValueError(f"no train_inner interval after {warmup_updates} warm-up updates "
                         f"(last update logged: {prev:g}); train longer or log more often")
    pad = sum(n * p for n, p in pads) / sum(n for n, _ in pads) if pads else None
    return Throughput(samples / seconds, updates / seconds, int(updates), seconds, tokens / updates, pad,
                      samples / cpu if timed and cpu > 0 else None)
