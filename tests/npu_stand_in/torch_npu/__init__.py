"""Stand-in for torch_npu (tests only): same names, records calls, runs nothing on a device (see ../README.md)."""

import os
import sys
import types

import torch

from . import graphs, optim  # noqa: F401  (torch_npu.optim.NpuFusedAdamW)
from .grad_scaler import GradScaler

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
def _synchronize(*args):
    graphs.synchronize(*args)  # refused while a graph is being captured
    CALLS.append(("synchronize", args))


npu.synchronize = _synchronize
npu.empty_cache = _recorded("empty_cache")
npu.manual_seed = _recorded("manual_seed")
npu.manual_seed_all = _recorded("manual_seed_all")
npu.memory_allocated = _recorded("memory_allocated", 1024)
npu.max_memory_allocated = _recorded("max_memory_allocated", 2048)
npu.reset_peak_memory_stats = _recorded("reset_peak_memory_stats")
npu.is_bf16_supported = lambda: STATE["bf16"]


def get_amp_supported_dtype():
    """torch.autocast(device_type="npu") asks the device module for this (torch/amp/autocast_mode.py) and refuses
    to run without it; torch_npu/npu/autocast_utils.py answers fp16 (+ bf16 where supported) and fp32."""
    if npu.is_bf16_supported():
        return [torch.float16, torch.bfloat16, torch.float32]
    return [torch.float16, torch.float32]


npu.get_amp_supported_dtype = get_amp_supported_dtype
# NPU graphs (torch_npu/npu/graphs.py): capture and replay, with the real capture's rules (graphs.py here)
for _name in ("NPUGraph", "graph", "graph_pool_handle", "is_current_stream_capturing", "Stream", "stream",
              "current_stream"):
    setattr(npu, _name, getattr(graphs, _name))
npu.amp = types.ModuleType("torch.npu.amp")
npu.amp.GradScaler = GradScaler
HOST_TENSORS_ENV = "TORCH_NPU_STAND_IN_HOST_TENSORS"  # "1": keep_tensors_on_host() at import (spawned processes)


def keep_tensors_on_host():
    """No tensor can live on the stand-in's device, so fairseq_npu's npu backend is told to place its tensors in
    host memory: the plugin's npu code paths (device choice, torch_npu's GradScaler, NpuFusedAdamW, autocast on
    "npu", hccl) then train a model for real. Undo with ``keep_tensors_on_host.undo()``."""
    from fairseq_npu import device

    current = device.DeviceBackend.device
    if getattr(current, "stand_in", False):
        return

    def on_host(self, index=None):
        return torch.device("cpu") if self.type == "npu" else current(self, index)

    on_host.stand_in = True
    device.DeviceBackend.device = on_host

    def undo():
        device.DeviceBackend.device = current

    keep_tensors_on_host.undo = undo


keep_tensors_on_host.undo = lambda: None


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
    if os.environ.get(HOST_TENSORS_ENV) == "1":
        keep_tensors_on_host()


def reset():
    CALLS.clear()
    STATE.update(available=True, count=8, current=0, bf16=True)
    graphs.STATE.update(capturing=False, dropout_capture=True)


install()
