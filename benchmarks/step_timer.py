"""One timing wrapper for the benchmark runners that run fairseq-train in their own process
(``cpu_timed_train.py``, ``graph_host_time.py``'s child): a function's duration logged as a fairseq metric, so that
each ``train_inner`` record carries its mean over the interval. Imports fairseq only, never the plugin: the stock
rows must run stock fairseq."""

from fairseq.logging import metrics


def timed(original, key: str, clock, round_to: int = 2):
    """``original`` wrapped to log its duration on ``clock`` (time.process_time, time.perf_counter...) in ms as the
    metric ``key`` of the aggregation it runs in."""

    def wrapper(*args, **kwargs):
        start = clock()
        out = original(*args, **kwargs)
        metrics.log_scalar(key, (clock() - start) * 1000.0, 1, round=round_to)
        return out

    return wrapper
