"""The one device abstraction of fairseq_npu: npu, cuda or cpu, chosen once per process.

Everything in the plugin that depends on the accelerator asks this module: the distributed backend
(hccl / nccl / gloo), the autocast device type and the half dtypes it supports, seeding,
synchronisation, cache clearing and memory statistics.

Selection order when nothing is requested: npu (torch_npu importable and a device present) > cuda > cpu.
Override with the environment variable ``FAIRSEQ_NPU_DEVICE=auto|npu|cuda|cpu`` or the fairseq flag
``--device-type`` (which sets that variable, so spawned workers inherit the choice). fairseq's own ``--cpu``
always wins. Asking for a device that is not there is an error, never a silent fallback.
"""

import contextlib
import importlib
import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Optional, Tuple

import torch

from fairseq_npu.errors import UsageError

logger = logging.getLogger(__name__)

ENV_VAR = "FAIRSEQ_NPU_DEVICE"
DEVICE_TYPES = ("auto", "npu", "cuda", "cpu")
DIST_BACKENDS = {"npu": "hccl", "cuda": "nccl", "cpu": "gloo"}


def _import_torch_npu():
    """Import torch_npu if it is installed; returns (module or None, reason)."""
    try:
        module = importlib.import_module("torch_npu")
    except ImportError as err:
        return None, f"torch_npu not importable ({err.__class__.__name__})"
    except Exception as err:  # CANN missing or broken: torch_npu raises all sorts
        return None, f"torch_npu failed to import: {err}"
    return module, "torch_npu imported"


def _npu_status() -> Tuple[bool, str]:
    module, reason = _import_torch_npu()
    if module is None:
        return False, reason
    npu = getattr(torch, "npu", None)
    if npu is None:
        return False, "torch_npu imported but torch.npu is missing"
    if not npu.is_available() or npu.device_count() < 1:
        return False, "torch_npu imported but no NPU device is visible"
    return True, f"torch_npu with {npu.device_count()} NPU device(s)"


def _cuda_status() -> Tuple[bool, str]:
    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        return True, f"CUDA with {torch.cuda.device_count()} GPU(s)"
    return False, "no CUDA device"


@dataclass(frozen=True)
class DeviceBackend:
    """What the rest of the plugin needs to know about the chosen device type."""

    type: str  # "npu", "cuda" or "cpu"
    reason: str = field(compare=False)

    @property
    def is_accelerator(self) -> bool:
        return self.type != "cpu"

    @property
    def dist_backend(self) -> str:
        return DIST_BACKENDS[self.type]

    @property
    def autocast_device_type(self) -> str:
        return self.type

    @property
    def module(self):
        """``torch.npu`` / ``torch.cuda``; None on cpu."""
        return getattr(torch, self.type) if self.is_accelerator else None

    @property
    def half_dtypes(self) -> Tuple[torch.dtype, ...]:
        """Half precision dtypes autocast and O2 training can use on this device."""
        if self.type == "cpu":
            return (torch.bfloat16, torch.float16)
        supports_bf16 = getattr(self.module, "is_bf16_supported", lambda: False)
        try:
            bf16 = bool(supports_bf16())
        except Exception:  # some torch_npu builds raise instead of answering False (910A)
            bf16 = False
        return (torch.float16, torch.bfloat16) if bf16 else (torch.float16,)

    def device_count(self) -> int:
        return self.module.device_count() if self.is_accelerator else 1

    def current_index(self) -> int:
        return self.module.current_device() if self.is_accelerator else 0

    def device(self, index: Optional[int] = None) -> torch.device:
        if not self.is_accelerator:
            return torch.device("cpu")
        return torch.device(self.type, self.current_index() if index is None else index)

    def set_device(self, index: int) -> None:
        if self.is_accelerator:
            self.module.set_device(index)

    def synchronize(self) -> None:
        if self.is_accelerator:
            self.module.synchronize()

    def empty_cache(self) -> None:
        if self.is_accelerator:
            self.module.empty_cache()

    def manual_seed(self, seed: int) -> None:
        """Seed the accelerator's generator (torch.manual_seed covers the cpu one)."""
        if self.is_accelerator:
            self.module.manual_seed(seed)

    def memory_stats(self) -> dict:
        """Allocated / peak bytes on the current device; empty on cpu."""
        if not self.is_accelerator:
            return {}
        return {
            "allocated_bytes": int(self.module.memory_allocated()),
            "max_allocated_bytes": int(self.module.max_memory_allocated()),
        }

    def supports_dtype(self, dtype: torch.dtype) -> bool:
        return dtype == torch.float32 or dtype in self.half_dtypes


def select(requested: Optional[str] = None, force_cpu: bool = False) -> DeviceBackend:
    """Choose the device type; raises RuntimeError if the requested one is not available."""
    source = "requested"
    if requested is None:
        requested = os.environ.get(ENV_VAR, "auto") or "auto"
        source = f"{ENV_VAR}={requested}"
    requested = requested.lower()
    if requested not in DEVICE_TYPES:
        raise UsageError(f"{ENV_VAR} / --device-type must be one of {DEVICE_TYPES}, got {requested!r}")

    if force_cpu or _cpu_forced:
        asked = f"--device-type {requested}" if source == "requested" else source
        ignored = f" ({asked} ignored)" if requested not in ("auto", "cpu") else ""
        return DeviceBackend("cpu", f"fairseq --cpu given{ignored}")
    if requested == "cpu":
        return DeviceBackend("cpu", f"{source}")
    if requested in ("npu", "cuda"):
        ok, why = _npu_status() if requested == "npu" else _cuda_status()
        if not ok:
            raise RuntimeError(f"device type {requested!r} was asked for ({source}) but {why}")
        return DeviceBackend(requested, f"{source}; {why}")

    npu_ok, npu_why = _npu_status()
    if npu_ok:
        return DeviceBackend("npu", f"auto: {npu_why}")
    cuda_ok, cuda_why = _cuda_status()
    if cuda_ok:
        return DeviceBackend("cuda", f"auto: {cuda_why}; {npu_why}")
    return DeviceBackend("cpu", f"auto: {npu_why}; {cuda_why}")


_current: Optional[DeviceBackend] = None
_cpu_forced = False  # inside cpu_wins()


def _announce(backend: DeviceBackend) -> None:
    line = f"fairseq_npu: device backend {backend.type} (distributed {backend.dist_backend}) because {backend.reason}"
    if logging.getLogger().handlers:
        logger.info(line)
    else:
        print(line, file=sys.stderr)


def get() -> DeviceBackend:
    """The backend of this process, selected on first use."""
    global _current
    if _current is None:
        _current = select()
        _announce(_current)
    return _current


_runs_seen = 0  # Trainers built in this process


def announce_for_run() -> None:
    """Each training run names its device once: the first run through the selection's own line, a later run in
    the same process (tests, notebooks) again here, so that every run's log is complete and alike."""
    global _runs_seen
    if _runs_seen:
        _announce(get())
    _runs_seen += 1


def set_backend(requested: Optional[str] = None, force_cpu: bool = False) -> DeviceBackend:
    """Re-select (``--device-type``, ``--cpu``, tests); also exported so spawned workers agree."""
    global _current
    backend = select(requested, force_cpu=force_cpu)
    if requested is not None and not (force_cpu or _cpu_forced):
        os.environ[ENV_VAR] = requested
    if backend != _current:
        _current = backend
        _announce(backend)
    return backend


@contextlib.contextmanager
def cpu_wins():
    """While fairseq parses a command line with ``--cpu``: cpu is selected (and exported over a ``$FAIRSEQ_NPU_DEVICE``
    that asks for another device, so spawned workers agree), and a ``--device-type`` or ``$FAIRSEQ_NPU_DEVICE`` of
    the same run yields to it instead of failing."""
    global _cpu_forced
    set_backend(force_cpu=True)
    if os.environ.get(ENV_VAR, "auto") not in ("auto", "cpu"):
        os.environ[ENV_VAR] = "cpu"  # spawned workers select before they see --cpu
    _cpu_forced = True
    try:
        yield
    finally:
        _cpu_forced = False


def reset() -> None:
    """Forget the selection (tests)."""
    global _current, _cpu_forced
    _current = None
    _cpu_forced = False
