"""Counting the operators code dispatches (its host work: most operators are a kernel launch or more on a device)
and its host reads of tensor values, by phase. Used by ``host_ops_train.py`` and by the tests."""

import collections
import weakref

from torch.utils._python_dispatch import TorchDispatchMode

SYNC_OPS = {"_local_scalar_dense"}  # what .item(), bool(t) and float(t) of a tensor dispatch to


class OpCounter(TorchDispatchMode):
    """``with OpCounter() as ops: ...``, then ``ops.names`` (operator -> count), ``ops.by_phase`` (phase ->
    operator -> count) and ``ops.syncs`` (phase -> host reads). Push a name on ``ops.phases`` to attribute what
    runs meanwhile to it. Reads of tensors made from Python values (``torch.tensor(...)``) are not host reads of
    device data, so they are left out of ``syncs``."""

    def __init__(self, phase: str = "all"):
        super().__init__()
        self.phases = [phase]
        self.names = collections.Counter()
        self.by_phase = collections.defaultdict(collections.Counter)
        self.syncs = collections.Counter()
        self._host_made = weakref.WeakSet()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        phase = self.phases[-1]
        name = func.overloadpacket.__name__
        self.names[name] += 1
        self.by_phase[phase][name] += 1
        if name in SYNC_OPS and not (args and args[0] in self._host_made):
            self.syncs[phase] += 1
        out = func(*args, **(kwargs or {}))
        if name == "lift_fresh":
            self._host_made.add(out)
        return out
