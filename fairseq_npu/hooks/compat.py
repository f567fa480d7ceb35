"""Hooks for stock fairseq code that predates the libraries installed with it, or knows cuda only elsewhere:
numpy 2's removal of ``np.compat``, and the seeds of the generators a run draws from."""

import types

import numpy
import torch
from fairseq import utils

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
    """fairseq's per-update seed (``Trainer._set_seed``, every update) for the generators the run draws from.

    npu: stock seeds cpu and cuda only, so the npu generator is seeded too. cpu: only the cpu generator, as
    ``torch.manual_seed`` seeds it (the same numbers follow). ``torch.manual_seed`` also queues a seed for each
    accelerator module that is not initialized (cuda, xpu, mtia), formatting the Python stack for each: 1.3 ms
    per update under cProfile on a CPU-only torch (docs/benchmarks.md, finding 14), for generators a cpu run never uses."""

    def __init__(self, seed):
        backend = device.get()
        if backend.type == "cpu" and utils.xm is None and not torch.cuda.is_available():
            assert isinstance(seed, int)  # stock's check
            self.rng_state = utils.get_rng_state()  # what leaving the ``with`` block restores, as stock
            torch.default_generator.manual_seed(seed)
            return
        original(self, seed)
        if backend.type == "npu":
            backend.manual_seed(seed)

    return __init__
