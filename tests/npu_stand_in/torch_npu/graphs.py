"""Stand-in for torch_npu's NPU graphs (``torch.npu.NPUGraph``, ``torch.npu.graph``, ``graph_pool_handle``,
``is_current_stream_capturing``; torch_npu/npu/graphs.py), with the capture rules the update relies on.

A capture records every aten operator dispatched inside ``with torch.npu.graph(g):`` (forward and backward alike)
and ``g.replay()`` runs the recorded operators again, in order, on the same tensors, writing each result into the
tensor the capture produced: inputs copied into the captured input tensors before a replay are what the replay
reads, parameters and gradients updated in place stay updated, and random operators draw new numbers.

Rules, as strict as the real capture:

- host reads are refused while capturing (``.item()``, ``bool()``, ``.tolist()``, comparisons answered on the
  host, operators whose output size depends on the data): the real capture cannot wait for the device
  (torch_npu/csrc/core/npu/NPUGraphsUtils.h, ``assertNotCapturing``: stream synchronisation and generator set-up
  are refused with "... during NPU graph capture");
- ``torch.npu.synchronize()`` is refused while capturing (same source);
- autocast with its weight cache is refused: a cached cast made during capture would be stale at replay
  (torch_npu/npu/graphs.py, ``make_graphed_callables``: "does not support the autocast caching. Please set
  `cache_enabled=False`");
- another thread's pinned host allocation (``host_alloc``: cudaHostAlloc / aclrtMallocHost, which
  ``Tensor.pin_memory`` calls, e.g. on a DataLoader's reading thread) is refused while a capture in
  ``capture_error_mode="global"`` (the default) is underway, and invalidates that capture: its end raises
  (CUDA's cudaStreamCaptureModeGlobal, torch_npu's ACL_MODEL_RI_CAPTURE_MODE_GLOBAL; torch/cuda/graphs.py and
  torch_npu/npu/graphs.py, ``graph``: '"global" will error on actions in other threads, "thread_local" will only
  error for actions in the current thread'); the mode is one of ``CAPTURE_ERROR_MODES``;
- a capture is refused at ``TASK_QUEUE_ENABLE=2`` (torch_npu reads the level once per process; level 2 is what
  the ModelZoo's scripts export), and into a graph that already holds one
  (torch_npu/csrc/core/npu/NPUGraph.cpp, ``NPUGraph::capture_begin``);
- dropout can be made uncapturable (``STATE["dropout_capture"] = False``), as it is on some torch_npu/CANN
  versions: a graph that holds a random operator then replays the numbers of its capture.

A capture changes nothing, as on the device, where it records kernels without running them: the stand-in runs each
operator to record it (it has no device to defer them to), keeps a copy of every tensor that existed before the
capture the first time an operator writes it in place (the operator schema's ``Tensor(a!)`` arguments), and puts
those copies back when the capture ends. The work is done by the replays, the first one included. Tensors created
during the capture are the graph's own, and keep what the capture computed.

The recorder records operators only: it is the device's rules, not its own operators, that this stand-in shares with
torch.cuda's capture (torch/cuda/graphs.py), so tests of the whole-update capture (cuda's) run on it too.
"""

import itertools
import os
import threading

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

STATE = {"capturing": False, "dropout_capture": True}
CAPTURE_ERROR_MODES = ("global", "thread_local", "relaxed")
_CAPTURE = {"thread": None, "mode": None, "invalidated": None}  # the capture underway, and what broke it
_POOLS = itertools.count(1)

# operators that need the device's answer on the host, or whose output size depends on the data
HOST_READS = {"_local_scalar_dense", "is_nonzero", "equal", "nonzero", "masked_select", "unique", "_unique",
              "_unique2", "unique_consecutive", "unique_dim", "item"}
ALLOCATIONS = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
RANDOM = {"native_dropout", "bernoulli", "bernoulli_", "rand", "rand_like", "randn", "randn_like", "uniform_",
          "normal_"}


class CaptureError(RuntimeError):
    pass


def _name(func) -> str:
    return func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else getattr(func, "__name__", str(func))


class _Recorder(TorchDispatchMode):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = _name(func)
        if name in HOST_READS:
            raise CaptureError(f"{name} during NPU graph capture: the capture cannot read a device value on the host "
                               "(torch_npu/csrc/core/npu/NPUGraphsUtils.h assertNotCapturing)")
        self.graph._keep_before_write(func, args, kwargs)
        out = func(*args, **kwargs)
        self.graph._note_new_storages(args, kwargs, out)
        # a build that cannot capture random operators replays the numbers drawn while capturing
        frozen = out.detach().clone() if name in RANDOM and not STATE["dropout_capture"] else None
        if name not in ALLOCATIONS:  # an allocation has nothing to redo: its memory is the graph's
            self.graph._ops.append((func, args, kwargs, out, frozen))
        return out


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except RuntimeError:  # "npu" is a device type only while the stand-in package is loaded
        return False


class _AutocastCheck(TorchFunctionMode):
    """Above the dispatcher, where autocast's state is visible (it is excluded below it)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if torch.is_autocast_cache_enabled() and any(_autocast_on(d) for d in ("npu", "cuda", "cpu")):
            raise CaptureError("autocast with its cache enabled during NPU graph capture; set cache_enabled=False "
                               "(torch_npu/npu/graphs.py make_graphed_callables)")
        return func(*args, **(kwargs or {}))


def _storage_key(tensor):
    storage = tensor.untyped_storage()
    return storage.data_ptr() if storage.nbytes() else None


def _flat_tensors(tree):
    return [t for t in tree_flatten(tree)[0] if torch.is_tensor(t)]


def _written_arguments(func, args, kwargs):
    """The tensors ``func`` writes in place: its schema's mutable (``Tensor(a!)``) arguments."""
    for index, argument in enumerate(func._schema.arguments):
        if argument.alias_info is None or not argument.alias_info.is_write:
            continue
        positional = not argument.kwarg_only and index < len(args)
        yield from _flat_tensors(args[index] if positional else kwargs.get(argument.name))


class NPUGraph:
    def __init__(self):
        self._ops = None
        self._recorder = None
        self._saved = {}  # storage key -> (storage, its bytes before the capture first wrote it)
        self._new_storages = set()  # storages the capture allocated: the graph's own
        self.auto_dispatch_capture = False

    def _keep_before_write(self, func, args, kwargs):
        for tensor in _written_arguments(func, args, kwargs):
            key = _storage_key(tensor)
            if key is not None and key not in self._new_storages and key not in self._saved:
                storage = tensor.untyped_storage()
                self._saved[key] = (storage, storage.clone())

    def _note_new_storages(self, args, kwargs, out):
        inputs = {_storage_key(t) for t in _flat_tensors((args, kwargs))}
        for tensor in _flat_tensors(out):
            key = _storage_key(tensor)
            if key is not None and key not in inputs:
                self._new_storages.add(key)

    def capture_begin(self, pool=None, capture_error_mode="global"):
        if os.environ.get("TASK_QUEUE_ENABLE", "").strip() == "2":
            raise RuntimeError("TASK_QUEUE_ENABLE=2 is not supported during NPU graph capture; export "
                               "TASK_QUEUE_ENABLE=1 or 0")
        if self._ops is not None:
            raise RuntimeError("this NPUGraph already holds a captured graph; capture into a new one")
        if STATE["capturing"]:
            raise CaptureError("only one NPU graph capture may be underway at a time")
        if capture_error_mode not in CAPTURE_ERROR_MODES:
            raise RuntimeError(f"Unknown capture error mode {capture_error_mode!r}; expected one of "
                               f"{', '.join(CAPTURE_ERROR_MODES)}")
        _CAPTURE.update(thread=threading.get_ident(), mode=capture_error_mode, invalidated=None)
        self._ops = []
        self._saved, self._new_storages = {}, set()
        self._recorder = _Recorder(self)
        self._autocast_check = _AutocastCheck()
        self._autocast_check.__enter__()
        self._recorder.__enter__()
        STATE["capturing"] = True

    def capture_end(self):
        STATE["capturing"] = False
        self._recorder.__exit__(None, None, None)
        self._autocast_check.__exit__(None, None, None)
        for storage, before in self._saved.values():  # as on the device, the capture has changed nothing
            storage.copy_(before)
        self._saved = {}
        invalidated, _CAPTURE["invalidated"], _CAPTURE["thread"] = _CAPTURE["invalidated"], None, None
        if invalidated is not None:
            self._ops = None
            raise CaptureError(f"operation failed due to a previous error during capture: the capture was "
                               f"invalidated ({invalidated})")

    def replay(self):
        if self._ops is None:
            raise RuntimeError("replay of an NPU graph that was never captured")
        for func, args, kwargs, recorded, frozen in self._ops:
            if frozen is not None:  # this build replays the random numbers of the capture
                recorded.detach().copy_(frozen)
                continue
            # the device's kernels only, as a graph replays them: no autograd bookkeeping on the way
            with torch._C._AutoDispatchBelowADInplaceOrView():
                result = func(*args, **kwargs)
            targets, _ = tree_flatten(recorded)
            values, _ = tree_flatten(result)
            for target, value in zip(targets, values):
                if not (torch.is_tensor(target) and torch.is_tensor(value)) or target is value:
                    continue
                if target.data_ptr() == value.data_ptr() and target.stride() == value.stride():
                    continue  # a view of the same memory: nothing to write
                target.detach().copy_(value)  # the replay writes into the captured tensor, as a real one does

    def pool(self):
        return (0, next(_POOLS))

    def reset(self):
        self._ops = None


class graph:
    """``torch.npu.graph(npu_graph, pool=None, stream=None, auto_dispatch_capture=False,
    capture_error_mode="global")`` as torch_npu/npu/graphs.py defines it."""

    def __init__(self, npu_graph, pool=None, stream=None, auto_dispatch_capture=False, capture_error_mode="global"):
        self.npu_graph = npu_graph
        self.pool = () if pool is None else (pool,)
        self.capture_error_mode = capture_error_mode

    def __enter__(self):
        synchronize()
        self.npu_graph.capture_begin(*self.pool, capture_error_mode=self.capture_error_mode)

    def __exit__(self, exc_type, exc_value, traceback):
        self.npu_graph.capture_end()


def host_alloc(nbytes: int) -> bytearray:
    """A pinned host allocation (cudaHostAlloc / aclrtMallocHost behind ``Tensor.pin_memory``); see the module
    docstring for when it is refused."""
    if (STATE["capturing"] and _CAPTURE["mode"] == "global" and _CAPTURE["thread"] != threading.get_ident()):
        why = "pinned host allocation from another thread during a capture in global mode"
        _CAPTURE["invalidated"] = why
        raise CaptureError(f"operation not permitted when stream is capturing: {why}")
    return bytearray(nbytes)


def graph_pool_handle():
    return (0, next(_POOLS))


def is_current_stream_capturing():
    return STATE["capturing"]


def synchronize(*args):
    if STATE["capturing"]:
        raise CaptureError("synchronize during NPU graph capture (torch_npu/csrc/core/npu/NPUGraphsUtils.h "
                           "assertNotCapturing)")


class Stream:
    def __init__(self, *args, **kwargs):
        pass

    def wait_stream(self, other):
        pass


class _StreamContext:
    def __init__(self, stream):
        self.stream = stream

    def __enter__(self):
        return self.stream

    def __exit__(self, *exc):
        return False


def stream(s):
    return _StreamContext(s)


def current_stream(*args):
    return Stream()
