"""CPU training: keep freed memory in the process instead of handing it back to the kernel after every update.

Every update allocates the same large buffers again: fairseq sets gradients to None after each step, and the
embedding's backward builds a fresh dense gradient (roberta_base: 50,265 x 768 fp32 = 154 MB). glibc serves any
block over its mmap threshold (at most 32 MB) with a fresh ``mmap`` and returns it with ``munmap`` on free, so each
update page-faults all of that memory in again (docs/benchmarks.md, finding 8, has what that costs). Two
``mallopt`` settings make glibc serve large blocks from its heap and never trim it, so the second update reuses
warm pages. The price: the process keeps its peak memory until it exits (a training process's peak is where it
stays anyway).

Blocks up to 32 MiB do not need it: glibc raises its mmap threshold to the size of each mmapped block it frees
(up to that maximum), so they move to the heap by themselves. So the Trainer hook applies the settings (``auto``)
only when the model holds a parameter, hence a gradient, above 32 MiB: RoBERTa's 50,265-row embedding (51 MB
at 256 dims, 154 MB at 768) yes, ALBERT's 128-dim factorized one (15 MB) no. ``FAIRSEQ_NPU_CPU_MALLOC=keep``
applies them for any model, ``system`` never.
Other C libraries (musl, macOS) are left alone.
"""

import ctypes
import ctypes.util
import logging
import os
import platform

from fairseq_npu.errors import UsageError

logger = logging.getLogger(__name__)

ENV_VAR = "FAIRSEQ_NPU_CPU_MALLOC"  # "auto" (default), "keep" or "system"
CHOICES = ("auto", "keep", "system")
GLIBC_MMAP_THRESHOLD_MAX = 32 * 2**20  # 64-bit glibc: blocks above it are always mmapped and unmapped
M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # the largest value mallopt takes: free heap top below 2 GiB is never trimmed

_applied = None  # None: not tried yet in this process; else the outcome (True: applied)


def choice() -> str:
    value = os.environ.get(ENV_VAR, "auto").strip().lower()
    if value not in CHOICES:
        raise UsageError(f"${ENV_VAR}={os.environ[ENV_VAR]!r}: use 'auto' (the default), 'keep' or 'system'")
    return value


def largest_parameter_bytes(model) -> int:
    return max((p.numel() * p.element_size() for p in model.parameters()), default=0)


def apply_for(model) -> bool:
    """The Trainer's call on cpu: keep freed memory where the model's gradients need it (see the module doc)."""
    how = choice()
    if how == "auto" and largest_parameter_bytes(model) <= GLIBC_MMAP_THRESHOLD_MAX:
        return False
    return keep_freed_memory()


def keep_freed_memory() -> bool:
    """Apply the glibc settings once per process (unless ``system``); True when they are in effect."""
    global _applied
    if _applied is not None:
        return _applied
    how = choice()
    _applied = False
    if how == "system":
        return False
    if platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, _TRIM_NEVER) == 1
    except (OSError, AttributeError):
        ok = False
    if ok:
        logger.info(f"fairseq_npu: cpu allocator keeps freed memory (glibc mmap off, no trimming); "
                    f"{ENV_VAR}=system to keep glibc's defaults")
    _applied = ok
    return ok
