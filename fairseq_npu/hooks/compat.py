"""Hooks for stock fairseq code that predates the libraries installed with it, or knows cuda only elsewhere:
numpy 2's removal of ``np.compat``, and the seed of the npu generator."""

import types

import numpy

from fairseq_npu import device
from fairseq_npu.patching import ModuleProxy


class NumpyWithCompat(ModuleProxy):
    """numpy as a fairseq data module sees it: everything forwarded, plus the ``np.compat.long`` numpy 2 removed."""

    def __init__(self, numpy_module):
        super().__init__(numpy_module)
        self.compat = types.SimpleNamespace(long=numpy_module.int64)


def numpy_lacks_compat() -> bool:
    return not hasattr(numpy, "compat")  # numpy 1.x still has it: nothing to patch


def set_torch_seed_init(original):
    def __init__(self, seed):
        original(self, seed)
        backend = device.get()
        if backend.type == "npu":
            backend.manual_seed(seed)

    return __init__
