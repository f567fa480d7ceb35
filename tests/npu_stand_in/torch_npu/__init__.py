"""Stand-in for torch_npu (tests only): same names, records calls, runs nothing on a device."""

import sys
import types

import torch

from . import optim  # noqa: F401  (torch_npu.optim.NpuFusedAdamW)

CALLS = []  # (name, args) of every torch.npu call, for assertions
STATE = {"available": True, "count": 8, "current": 0, "bf16": True}


def _recorded(name, result=None):
    def call(*args, **kwargs):
        CALLS.append((name, args))
        return result() if callable(result) else result

    call.__name__ = name
    return call


def _set_device(index):
    CALLS.append(("set_device", (index,)))
    STATE["current"] = int(getattr(index, "index", index) or 0)


npu = types.ModuleType("torch.npu")
npu.is_available = lambda: STATE["available"]
npu.device_count = lambda: STATE["count"] if STATE["available"] else 0
npu.current_device = lambda: STATE["current"]
npu.set_device = _set_device
npu.synchronize = _recorded("synchronize")
npu.empty_cache = _recorded("empty_cache")
npu.manual_seed = _recorded("manual_seed")
npu.manual_seed_all = _recorded("manual_seed_all")
npu.memory_allocated = _recorded("memory_allocated", 1024)
npu.max_memory_allocated = _recorded("max_memory_allocated", 2048)
npu.reset_peak_memory_stats = _recorded("reset_peak_memory_stats")
npu.is_bf16_supported = lambda: STATE["bf16"]
npu.amp = types.ModuleType("torch.npu.amp")
npu.amp.GradScaler = torch.amp.GradScaler  # the real one works on cpu tensors with device="cpu"


def install():
    """Make torch.npu / torch_npu importable the way the real package does on import."""
    if not hasattr(torch, "npu"):
        torch.npu = npu
    sys.modules.setdefault("torch.npu", torch.npu)
    try:
        torch.utils.rename_privateuse1_backend("npu")
    except RuntimeError:
        pass  # already renamed in this process
    # The rename cannot be undone, and from now on torch.accelerator believes an "npu" accelerator exists and
    # asks its (absent) hooks, which breaks e.g. DataLoader(pin_memory=True) in later tests of the same process.
    # No tensor can live on the stand-in, so report the real accelerators only (cuda, where there is one).
    if not getattr(torch.accelerator.is_available, "stand_in", False):
        def is_available():
            return torch.cuda.is_available()

        def current_accelerator(check_available=False):
            return torch.device("cuda") if torch.cuda.is_available() else None

        is_available.stand_in = current_accelerator.stand_in = True
        torch.accelerator.is_available = is_available
        torch.accelerator.current_accelerator = current_accelerator


def reset():
    CALLS.clear()
    STATE.update(available=True, count=8, current=0, bf16=True)


install()
