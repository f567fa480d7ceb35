"""Hook on fairseq's batch-reading thread: it ends before the interpreter does.

fairseq reads training batches in a daemon thread (``fairseq.data.iterators.BackgroundConsumer``) that keeps
filling its buffer after the training loop has returned (at ``--max-update``, mid-epoch). When Python finalizes while
that thread still runs (collating a batch with ``--num-workers 0``, unpickling one from a worker, freeing one), Python
ends it from under C++ frames and the process aborts with "terminate called without an active exception" (exit 134,
after "done training"): a finished run reported as failed. Measured without this hook: 1 run in 12 of a fast
captured loop (benchmarks/graph_host_time.py), 6 of 6 of tests/test_hooks.py's fairseq-train with a slow
collation (0 of 6 with it).

Here the thread reads its source through ``_until_exit``, which fetches no further batch once the process exits. At
exit (an ``atexit`` handler, run before finalization) ``finish`` tells each thread so, makes room in its buffer for the
batch in hand and the end marker (the buffered batches are dropped, as they were), and waits, at most ``EXIT_WAIT_S``,
for the thread to end: no reading thread is left when the interpreter finalizes.
"""

import atexit
import queue
import threading
import time
import weakref

EXIT_WAIT_S = 30.0  # the longest the batch in hand may take to finish at exit (a hung worker: give up, as before)
_exiting = threading.Event()
_threads = weakref.WeakSet()  # the reading threads started in this process


def _until_exit(source):
    iterator = iter(source)
    while not _exiting.is_set():
        try:
            item = next(iterator)
        except StopIteration:
            return
        yield item


def run(original):
    def run(self):
        self._source = _until_exit(self._source)
        _threads.add(self)
        return original(self)

    return run


def finish(timeout: float = EXIT_WAIT_S) -> bool:
    """End every reading thread (see the module docstring); True if all ended within ``timeout``."""
    _exiting.set()
    deadline = time.monotonic() + timeout
    for thread in list(_threads):
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                thread._queue.get_nowait()  # room for the batch in hand, then for the end marker
            except queue.Empty:
                pass
            thread.join(0.005)
    return not any(thread.is_alive() for thread in list(_threads))


atexit.register(finish)
