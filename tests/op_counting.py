"""Counting the operators a piece of code dispatches: its host work, each operator a kernel launch or more on a
device. Host reads of tensor values (``.item()``, ``bool(t)``) show up as ``_local_scalar_dense``."""

import collections

from torch.utils._python_dispatch import TorchDispatchMode


class CountOps(TorchDispatchMode):
    """``with CountOps() as ops: ...`` then ``ops.names``: operator name -> times dispatched."""

    def __init__(self):
        super().__init__()
        self.names = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names[func.overloadpacket.__name__] += 1
        return func(*args, **(kwargs or {}))
