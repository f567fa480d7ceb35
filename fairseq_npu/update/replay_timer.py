"""The device time of each graph replay, measured with the device's timing events and read without a host sync.

On the host a replay is one launch; its cost is device time, which the host cannot see. Two events around each
replay give it. They are read only once the device has passed them (``query()`` does not wait): at the
log-interval read-out, which has synced anyway, or when many are pending. Timing therefore adds two event records
per update and no sync.

Set beside the wall time per update (batch size / samples per second), the mean replay time says whether a run is
device-bound (the two are close: a faster update needs less device work, e.g. shorter pad buckets) or host-bound
(the device waits for the host: data loading, Python).
"""

from collections import Counter, deque
from typing import Optional

MAX_PENDING = 1024  # event pairs kept before the passed ones are read (a device this far behind is not expected)


class ReplayTimer:
    """``start()`` before a replay, ``stop(label, start)`` after it; ``report()`` gives the mean per label."""

    def __init__(self, event_class):
        self.event_class = event_class  # torch.cuda.Event, torch.npu.Event
        self.pending = deque()  # (label, start event, end event), in stream order
        self.total_ms = Counter()
        self.count = Counter()

    def start(self):
        event = self.event_class(enable_timing=True)
        event.record()
        return event

    def stop(self, label: str, start) -> None:
        end = self.event_class(enable_timing=True)
        end.record()
        self.pending.append((label, start, end))
        if len(self.pending) > MAX_PENDING:
            self.collect()

    def collect(self) -> None:
        """Read every pair the device has passed; events complete in stream order, so stop at the first that
        has not."""
        while self.pending and self.pending[0][2].query():
            label, start, end = self.pending.popleft()
            self.total_ms[label] += start.elapsed_time(end)
            self.count[label] += 1

    def report(self) -> dict:
        """{"replay_ms": {label: mean ms}, "replay_ms_mean": over every timed replay, "replays_timed": n}."""
        self.collect()
        timed = sum(self.count.values())
        mean: Optional[float] = round(sum(self.total_ms.values()) / timed, 3) if timed else None
        by_shape = {label: round(self.total_ms[label] / self.count[label], 3) for label in sorted(self.count)}
        return {"replay_ms": by_shape, "replay_ms_mean": mean, "replays_timed": timed}
