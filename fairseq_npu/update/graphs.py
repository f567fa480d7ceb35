"""``--update-mode graph``: the update captured once per batch shape in a device graph, then replayed.

The pad buckets and full batches of ``sentence_prediction_npu`` give a training run a handful of batch shapes.
For each shape (every tensor's shape and dtype, and the precision) the first ``WARMUP_UPDATES`` updates run
eagerly on a side stream (torch's rule before a capture: lazy initialisations, workspaces and the autograd
engine's streams settle there); the next one is captured, and every later update of that shape copies its batch
into the graph's input buffers and replays it. The host then does a few copies and one launch per update instead
of one launch per kernel.

What is captured depends on the device (``GraphBackend``):

- **cuda** (``torch.cuda.CUDAGraph``): the whole of ``DeviceUpdate.body``: zero the gradients in place, forward,
  backward, unscale, norm, clip, the fused AdamW step that skips on ``found_inf``, the loss scale update, the
  counters.
- **npu** (``torch.npu.NPUGraph``, torch_npu/npu/graphs.py): the zeroing, forward and backward; the optimizer step
  stays eager after the replay, because torch_npu's ``NpuFusedAdamW`` is not capturable. Whether this
  torch_npu/CANN captures dropout (a replay must draw new numbers) is probed once at start
  (``probe_npu_dropout``); where it does not, or where ``TASK_QUEUE_ENABLE=2`` rules capture out
  (``npu_task_queue_refusal``), the run stays eager and says why.

Memory: one pool for every graph. Graphs replay in data order, not in capture order, which is safe here because
nothing allocated in the pool outlives a replay: gradients (zeroed in place, never set to None), parameters,
optimizer moments, the loss scale, the counters and the learning-rate tensors are all allocated before the first
capture, outside the pool; what the criterion returns for logging is read by the host-side metric updates right
after the replay, in stream order, before any other graph runs.

Threads: a capture restricts only its own thread (``capture_error_mode="thread_local"``). fairseq's batch
iterator pins each batch in host memory (``DataLoader(pin_memory=True)``) on a thread of its own, which keeps
reading ahead while the update captures. Under torch's default mode ("global") that thread's pinned allocation
(cudaHostAlloc, aclrtMallocHost) is refused during any capture: the capture fails and the reading thread raises,
which ends the run. Nothing that thread does touches the capturing stream, so nothing of it belongs in the graph.

Randomness: dropout inside a graph draws from torch's graph-safe Philox state, which replay advances and which
``torch.manual_seed`` resets; fairseq seeds every update with seed + update number, so a run is reproducible from
``--seed`` (its dropout masks are not the eager run's).

The kernel's eps under a graph (cuda) is ``--adam-eps`` itself: fairseq's eps placement makes it
``eps / sqrt(1 - beta2 ** step)``, a number a graph cannot recompute per replay. A replay therefore adds eps after
the bias correction, as torch's and Hugging Face's AdamW do; the two placements differ while ``beta2 ** step`` is
not negligible (the first ~200 updates at beta2 0.98, a few thousand at 0.999), and then only where sqrt(v) is
comparable to eps. Eager updates of the same run (warm-up, fallbacks) keep fairseq's placement.

An update runs eagerly, with the same numerics, and the reason is counted (``fallbacks``) when: the device has no
graphs (cpu); the batch is partial or a dummy; its length is not a pad bucket; there are several batches per update
(``--update-freq > 1``); the shape is still warming up; the graph limit is reached; a capture failed for this shape
(one warning naming the cause; the run goes on).
"""

import json
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Optional

import torch

from fairseq_npu.update.device_update import DeviceUpdate
from fairseq_npu.update.replay_timer import ReplayTimer

logger = logging.getLogger(__name__)

WARMUP_UPDATES = 3  # eager updates of a shape before it is captured
MAX_GRAPHS = 16  # pad buckets x precisions of one run stay far below this
# other threads (fairseq's batch reader pinning host memory) stay free while this one captures: module docstring
CAPTURE_ERROR_MODE = "thread_local"
# criteria whose sample size is fixed by the batch shape (the graph bakes 1 / sample size in)
SHAPE_DETERMINED_SAMPLE_SIZE = ("sentence_prediction",)


@dataclass(frozen=True)
class GraphBackend:
    device_type: str
    module: object  # torch.cuda or torch.npu: Stream, stream, current_stream, synchronize, graph, graph_pool_handle
    graph_class: type
    whole_update: bool  # the optimizer step too (cuda), or forward and backward only (npu)
    event_class: Optional[type] = None  # timing events (torch.cuda.Event, torch.npu.Event): replays timed if set


def graph_backend(device_type: str) -> Optional[GraphBackend]:
    if device_type == "cuda":
        return GraphBackend("cuda", torch.cuda, torch.cuda.CUDAGraph, whole_update=True, event_class=torch.cuda.Event)
    if device_type == "npu" and hasattr(getattr(torch, "npu", None), "NPUGraph"):
        return GraphBackend("npu", torch.npu, torch.npu.NPUGraph, whole_update=False,
                            event_class=getattr(torch.npu, "Event", None))
    return None


def npu_task_queue_refusal() -> Optional[str]:
    """Why torch_npu will refuse every capture of this process, or None. torch_npu reads ``TASK_QUEUE_ENABLE`` once
    and refuses NPU graph capture at level 2 (torch_npu/csrc/core/npu/NPUGraph.cpp, ``NPUGraph::capture_begin``);
    the launch scripts run capturing runs at level 1 (test/common.sh)."""
    if os.environ.get("TASK_QUEUE_ENABLE", "").strip() == "2":
        return "TASK_QUEUE_ENABLE=2, a level at which torch_npu captures no graph (export TASK_QUEUE_ENABLE=1)"
    return None


def probe_npu_dropout(backend: GraphBackend, device) -> Optional[str]:
    """None when this torch_npu/CANN captures dropout (two replays draw different masks), else why not."""
    try:
        ones = torch.ones(256, device=device)
        graph = backend.graph_class()
        with backend.module.graph(graph, capture_error_mode=CAPTURE_ERROR_MODE):
            dropped = torch.nn.functional.dropout(ones, 0.5, training=True)
        graph.replay()
        first = dropped.clone()
        graph.replay()
        same = torch.equal(first, dropped)
    except Exception as err:  # a build that cannot capture at all
        first_line = str(err).splitlines()[0] if str(err) else ""
        return f"NPU graph capture of dropout failed ({type(err).__name__}: {first_line})"
    return "this torch_npu/CANN replays dropout's captured mask" if same else None


def _tensors(tree, prefix=""):
    """(path, tensor) pairs of a nested sample, in a fixed order."""
    if torch.is_tensor(tree):
        yield prefix, tree
    elif isinstance(tree, dict):
        for key in sorted(tree):
            yield from _tensors(tree[key], f"{prefix}/{key}")
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            yield from _tensors(item, f"{prefix}/{i}")


class _Captured:
    def __init__(self, graph, static_sample, outputs):
        self.graph = graph
        self.label = "x".join(map(str, static_sample["net_input"]["src_tokens"].shape))  # batch x length
        self.inputs = dict(_tensors(static_sample))  # the graph's input buffers, filled before each replay
        self.outputs = outputs  # (logging outputs, sample size, grad norm) as captured


class GraphedUpdate:
    """Replays one captured graph per batch shape; see the module docstring."""

    def __init__(self, update: DeviceUpdate, batch_size: Optional[int], buckets=None, criterion_name: str = ""):
        self.update = update
        self.batch_size = batch_size
        self.bucket_lengths = tuple(getattr(buckets, "buckets", ()) or ())
        self.graphs: Dict[tuple, _Captured] = {}
        self.seen = Counter()
        self.failed: Dict[tuple, str] = {}
        self.fallbacks = Counter()  # reason -> updates that ran eagerly for it
        self.updates = 0
        self.replays = 0
        self.capture_seconds = 0.0
        self.pool = None
        self.side_stream = None
        device_type = update.device_type
        self.backend = graph_backend(device_type)
        event_class = self.backend.event_class if self.backend is not None else None
        self.timer = ReplayTimer(event_class) if event_class is not None else None
        self.disabled = None
        if self.backend is None:
            self.disabled = f"device {device_type} (graphs need cuda, or npu with torch_npu's NPUGraph)"
        elif criterion_name not in SHAPE_DETERMINED_SAMPLE_SIZE:
            self.disabled = f"criterion {criterion_name}: its sample size is not fixed by the batch shape"
        elif self.backend.device_type == "npu":
            self.disabled = npu_task_queue_refusal() or probe_npu_dropout(self.backend, update.device)
        update.on_read_out = self.log_report  # every --log-interval updates: the last one in the log is the run's
        if self.disabled:
            logger.warning(f"update: --update-mode graph runs eagerly: {self.disabled}")
        else:
            update.zero_in_place = True  # gradients keep their addresses from the first update on

    # ---------------------------------------------------------------------------------------------------------

    def key(self, sample) -> tuple:
        return (tuple((path, tuple(t.shape), t.dtype) for path, t in _tensors(sample)),
                self.update.precision)

    def fallback_reason(self, samples) -> Optional[str]:
        if self.disabled:
            return self.disabled
        if len(samples) != 1:
            return "--update-freq > 1"
        sample = samples[0]
        if not sample or sample == "DUMMY" or "net_input" not in sample:
            return "dummy batch"
        tokens = sample["net_input"].get("src_tokens")
        if tokens is None or tokens.dim() != 2:
            return "no 2-D src_tokens"
        if self.batch_size and tokens.size(0) != self.batch_size:
            return "partial batch"
        if self.bucket_lengths and tokens.size(1) not in self.bucket_lengths:
            return "length outside the pad buckets"
        key = self.key(sample)
        if key in self.failed:
            return "capture failed for this shape"
        if key not in self.graphs and len(self.graphs) >= MAX_GRAPHS:
            return "graph limit reached"
        return None

    def train_step(self, samples) -> dict:
        graphs_before = len(self.graphs)
        result = self._train_step(samples)
        if len(self.graphs) != graphs_before:
            self.log_report()
        return result

    def _train_step(self, samples) -> dict:
        self.updates += 1
        reason = self.fallback_reason(samples)
        if reason is not None:
            self.fallbacks[reason] += 1
            return self.update.train_step(samples)
        key = self.key(samples[0])
        captured = self.graphs.get(key)
        if captured is not None:
            return self.update.train_step(samples, run_body=lambda b, d: self._replay(captured, samples[0]),
                                          prepare=False)
        self.seen[key] += 1
        if self.seen[key] <= WARMUP_UPDATES:
            self.fallbacks["warm-up"] += 1
            return self.update.train_step(samples, run_body=self._on_side_stream)
        return self.update.train_step(samples, run_body=lambda b, d: self._capture(key, b, d, samples[0]))

    # ---------------------------------------------------------------------------------------------------------

    def _on_side_stream(self, batches, dummies):
        module = self.backend.module
        if self.side_stream is None:
            self.side_stream = module.Stream()
        self.side_stream.wait_stream(module.current_stream())
        with module.stream(self.side_stream):
            result = self.update.body(batches, dummies)
        module.current_stream().wait_stream(self.side_stream)
        return result

    def _capture(self, key, batches, dummies, host_sample):
        update, backend = self.update, self.backend
        static = batches[0]  # already on the device: it becomes the graph's input buffers
        started = time.perf_counter()
        graph = backend.graph_class()
        if self.pool is None:
            self.pool = backend.module.graph_pool_handle()
        try:
            backend.module.synchronize()
            with update.capturing(), backend.module.graph(graph, pool=self.pool,
                                                          capture_error_mode=CAPTURE_ERROR_MODE):
                if backend.whole_update:
                    outputs = update.body([static], [False])
                else:  # npu: forward and backward; the step runs eagerly after each replay
                    update.zero_grad()
                    outputs = (*update.forward_backward([static], [False]), None)
            backend.module.synchronize()
        except Exception as err:  # any capture failure: this shape runs eagerly from now on
            self.failed[key] = f"{type(err).__name__}: {err}"
            logger.warning(f"update: {backend.device_type} graph capture failed for batch shape "
                           f"{tuple(static['net_input']['src_tokens'].shape)} ({type(err).__name__}: "
                           f"{str(err).splitlines()[0] if str(err) else ''}); that shape runs eagerly")
            self.fallbacks["capture failed for this shape"] += 1
            return update.body(batches, dummies)
        self.capture_seconds += time.perf_counter() - started
        captured = self.graphs[key] = _Captured(graph, static, outputs)
        logger.info(f"update: captured {backend.device_type} graph {len(self.graphs)} for batch shape "
                    f"{tuple(static['net_input']['src_tokens'].shape)} in {time.perf_counter() - started:.2f} s")
        # the capture recorded the work without doing it: this batch's update is the first replay (its learning
        # rate and step count were set on the host while capturing)
        return self._replay(captured, host_sample, first=True)

    def _replay(self, captured: _Captured, host_sample, first=False):
        update = self.update
        whole = self.backend.whole_update
        if not first:
            for path, source in _tensors(host_sample):
                target = captured.inputs.get(path)
                if target is not None:
                    pinned = source.device.type == "cpu" and self.backend.device_type == "cuda"
                    target.copy_(source.pin_memory() if pinned else source, non_blocking=True)
            if whole:
                update.before_replay()
        started = self.timer.start() if self.timer is not None else None
        captured.graph.replay()
        if started is not None:
            self.timer.stop(captured.label, started)
        self.replays += 1
        logging_outputs, sample_size, grad_norm = captured.outputs
        if not whole:
            grad_norm = update.step(sample_size)  # npu: the optimizer step, eagerly
        # host numbers the criterion and task logged at capture time, recomputed for this batch
        refreshed = []
        for output in logging_outputs:
            output = dict(output)
            if "ntokens" in output and "ntokens" in host_sample:
                output["ntokens"] = host_sample["ntokens"]
            log_padding = getattr(update.trainer.task, "_log_padding", None)
            if log_padding is not None:
                log_padding(host_sample, output)
            refreshed.append(output)
        return refreshed, sample_size, grad_norm

    # ---------------------------------------------------------------------------------------------------------

    def read_out(self) -> None:
        self.update.read_out()

    def log_report(self) -> None:
        """One line the launch layer reads into summary.json (fairseq_npu/launch/training_log.py)."""
        logger.info(f"update: graph report {json.dumps(self.report(), sort_keys=True)}")

    def report(self) -> dict:
        """For the training log and summary.json."""
        return {
            "captured": bool(self.graphs),
            "graphs": len(self.graphs),
            "capture_seconds": round(self.capture_seconds, 3),
            "updates": self.updates,
            "replayed": self.replays,
            "replay_share": round(self.replays / self.updates, 4) if self.updates else 0.0,
            "fallbacks": dict(self.fallbacks),
            "disabled": self.disabled,
            # device time per replay, by batch shape (update/replay_timer.py); none where the device has no events
            **(self.timer.report() if self.timer is not None else {}),
        }
