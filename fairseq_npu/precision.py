"""The precision policy: which dtype the weights are in and what the forward pass autocasts to, decided once.

Training, validation, ``fairseq-npu-evaluate``/``fairseq-npu-predict`` and the launch scripts ask :func:`policy`,
which reads the run's configuration (fairseq's ``--fp16``/``--bf16``/``--amp``, this plugin's ``--amp-dtype``) and the
selected device, never the optimizer a task happened to see last:

- ``--fp16`` / ``--bf16`` (and their ``--memory-efficient-`` forms): O2, the weights are half, no autocast;
- ``--amp``: O1, fp32 weights and autocast on the device in :func:`amp_dtype` (``--amp-dtype``; auto: float16 on
  cuda and npu, bfloat16 where the device has no float16, bfloat16 on cpu);
- otherwise fp32.

This module needs only the standard library at import time (torch is imported where a dtype is made), so the
launch helpers can use it without importing fairseq or torch.

Environment contract
--------------------
fairseq's dataclass configs drop flags they do not know, and spawned workers (``--distributed-world-size``) parse
nothing, so what the plugin decides while the command line is parsed travels to run time, and to every worker, in
these variables. They are set by the flags named; setting them by hand does the same, and a value outside those
listed is refused with one line before fairseq parses (``fairseq_npu.environment``).

``FAIRSEQ_NPU_DEVICE`` = auto | npu | cuda | cpu
    The device type (``fairseq_npu.device``); set by ``--device-type``. fairseq's ``--cpu`` wins over it.
``FAIRSEQ_NPU_AMP_DTYPE`` = auto | float16 | bfloat16
    The autocast dtype of ``--amp`` (:func:`amp_dtype`); set by ``--amp-dtype``.
``FAIRSEQ_NPU_APEX`` = "<opt level> <loss scale>", e.g. ``O2 128.0``
    Set when ``--use-apex`` runs with apex installed: apex.amp drives this run (``fairseq_npu.amp.apex_amp``);
    unset otherwise. The opt level defaults to :data:`DEFAULT_OPT_LEVEL`.
``FAIRSEQ_NPU_UPDATE_MODE`` = stock | device | graph
    Who runs an update (``fairseq_npu.update.mode``); set by ``--update-mode``. stock: fairseq's train_step;
    device: the update object, no host sync; graph: the same, captured per batch shape in a CUDA graph on cuda.
``FAIRSEQ_NPU_CPU_MALLOC`` = auto | keep | system
    A user setting, read at start-up: glibc's allocator tuning for large CPU parameters
    (``fairseq_npu.cpu_allocator``).
``FAIRSEQ_NPU_PLUGIN`` = on | off
    ``off``: importing ``fairseq_npu`` neither imports fairseq nor installs hooks, unless fairseq is already
    imported (``--user-dir`` always gets the plugin). The launch helpers run under it; the fairseq-free modules
    (``launch``, ``glue_tasks``, ``precision``, ``argv``) work, nothing else does.
``FAIRSEQ_NPU_SHARED_DATA``
    Tests only: the folder with real GLUE data and vocabularies (default ``../shared/data``).
"""

import contextlib
import os
from dataclasses import dataclass
from typing import Optional, Union

AMP_DTYPE_ENV = "FAIRSEQ_NPU_AMP_DTYPE"
AMP_DTYPES = ("float16", "bfloat16")
OPT_LEVELS = ("O0", "O1", "O2")
# apex's --opt-level when --use-apex gives none, for fairseq-train and the launch scripts alike. O1, as the Ascend
# ModelZoo's own fairseq parser defaulted to (its scripts pass --opt-level O2 explicitly), so a ModelZoo command
# line means here what it meant there; O1 also keeps fp32 weights, the safer recipe when nothing was asked for.
DEFAULT_OPT_LEVEL = "O1"


# "<opt level> <loss scale>", e.g. "O2 128.0", "O1 dynamic", "O0 default" (apex's own); unset: apex not driving
APEX_ENV = "FAIRSEQ_NPU_APEX"
COMBINE_GRAD_LEVELS = ("O1", "O2")  # Ascend apex: combine_grad and its NpuFused* optimizers only at these levels


@dataclass(frozen=True)
class ApexRequest:
    opt_level: str
    loss_scale: Union[float, str, None]  # a number (static scale), "dynamic", or None: apex's default


def request_apex(opt_level: Optional[str], loss_scale: Optional[str] = None) -> None:
    """Record for this process (and its spawned workers) that apex drives the run; ``None`` clears it."""
    if opt_level is None:
        os.environ.pop(APEX_ENV, None)
        return
    try:
        scale = "default" if loss_scale is None else "dynamic" if loss_scale == "dynamic" else str(float(loss_scale))
    except ValueError:
        scale = "default"  # argparse rejects the value with its own message right after
    os.environ[APEX_ENV] = f"{opt_level} {scale}"


def apex_requested() -> Optional[ApexRequest]:
    """Whether apex.amp drives this run (``--use-apex`` with apex installed), and how."""
    value = os.environ.get(APEX_ENV, "").split()
    if len(value) != 2:
        return None
    level, scale = value
    return ApexRequest(level, None if scale == "default" else scale if scale == "dynamic" else float(scale))


# fairseq's mixed-precision switches, the one list: its config names (cfg.common) and the weights dtype each O2 switch
# casts the model to, in the order fairseq's Trainer tests them (--fp16 first, then --bf16); --amp (O1) autocasts
HALF_WEIGHTS = {"fp16": "float16", "memory_efficient_fp16": "float16", "bf16": "bfloat16",
                "memory_efficient_bf16": "bfloat16"}
PRECISION_CONFIG_NAMES = (*HALF_WEIGHTS, "amp")


def flag_name(config_name: str) -> str:
    """``memory_efficient_fp16`` -> ``--memory-efficient-fp16``."""
    return "--" + config_name.replace("_", "-")


PRECISION_FLAGS = tuple(flag_name(name) for name in PRECISION_CONFIG_NAMES)


@dataclass(frozen=True)
class Precision:
    """How a model runs: weights dtype and autocast dtype (None: no autocast), on a device type."""

    device_type: str  # "npu", "cuda" or "cpu"
    weights: str = "float32"  # "float32", "float16" or "bfloat16"
    autocast_dtype: Optional[str] = None  # "float16" or "bfloat16" under --amp

    def weights_dtype(self):
        import torch

        return getattr(torch, self.weights)

    def autocast(self, cache_enabled: bool = True):
        """Context manager for the forward pass: torch.autocast on the device, or nothing. Training, validation,
        evaluate and predict all enter it; ``cache_enabled=False`` while a CUDA graph is captured."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device_type, dtype=getattr(torch, self.autocast_dtype),
                              cache_enabled=cache_enabled)


def amp_dtype(backend, requested: Optional[str] = None) -> str:
    """The autocast dtype of O1 (``--amp``) on ``backend`` (a fairseq_npu.device.DeviceBackend).

    ``requested`` defaults to ``$FAIRSEQ_NPU_AMP_DTYPE`` (set by ``--amp-dtype``); a dtype the device does not
    support is an error, never a silent fallback."""
    import torch

    requested = requested or os.environ.get(AMP_DTYPE_ENV, "auto") or "auto"
    if requested != "auto":
        if requested not in AMP_DTYPES:
            raise ValueError(f"--amp-dtype {requested}: expected auto or one of {', '.join(AMP_DTYPES)}")
        if not backend.supports_dtype(getattr(torch, requested)):
            raise RuntimeError(f"--amp-dtype {requested}: device {backend.type} does not support it "
                               f"(supported: {[str(d).replace('torch.', '') for d in backend.half_dtypes]})")
        return requested
    if backend.type == "cpu":
        return "bfloat16"  # cpu autocast has bf16 kernels, and bf16 needs no loss scaling
    halves = backend.half_dtypes
    return "float16" if torch.float16 in halves else str(halves[0]).replace("torch.", "")


def policy(common, backend=None) -> Precision:
    """The precision of a run from fairseq's common config (``cfg.common``, or an argparse Namespace with the same
    names: fp16, bf16, amp, memory_efficient_fp16, memory_efficient_bf16) on ``backend`` (default: the selected
    device)."""
    if backend is None:
        from fairseq_npu import device

        backend = device.get()
    weights = next((dtype for name, dtype in HALF_WEIGHTS.items() if getattr(common, name, False)), "float32")
    return Precision(backend.type, weights, amp_dtype(backend) if getattr(common, "amp", False) else None)


def half_weights_on_command_line(args) -> Optional[str]:
    """The weights dtype an O2 flag of a raw fairseq command line asks for (None: fp32 weights)."""
    return next((dtype for name, dtype in HALF_WEIGHTS.items() if flag_name(name) in args), None)


def any_precision_config(common) -> bool:
    """Whether fairseq's config asks for any mixed precision (O1 or O2)."""
    return any(getattr(common, name, False) for name in PRECISION_CONFIG_NAMES)


def native_bf16(device_type: str) -> bool:
    """Whether the device computes bfloat16 natively, as torch reports it (False when torch cannot say).

    cpu: AVX512-BF16 or AMX, torch's own checks (``torch.cpu._is_avx512_bf16_supported``,
    ``_is_amx_tile_supported``). Not mkldnn's ``_is_mkldnn_bf16_supported``: that is also True on AVX512 cores
    without them, where bf16 is emulated and bf16 autocast trained 2.3x slower than fp32. cuda / npu: the device
    module's ``is_bf16_supported``."""
    import torch

    def ask(fn_name, module):
        fn = getattr(module, fn_name, None)
        try:
            return bool(fn()) if fn is not None else False
        except Exception:  # some torch_npu builds raise instead of answering (910A)
            return False

    if device_type == "cpu":
        return ask("_is_avx512_bf16_supported", torch.cpu) or ask("_is_amx_tile_supported", torch.cpu)
    module = getattr(torch, device_type, None)
    if module is None or not ask("is_available", module):
        return False
    return ask("is_bf16_supported", module)


def launch_default(device_type: str, preset: str = "fast", bf16: bool = False) -> str:
    """The launch scripts' ``--precision=auto`` (a name of recipes.PRECISIONS).

    stock: fairseq's fp16 recipe on accelerators, fp32 on cpu. fast: cpu bf16 autocast (O1) where the processor
    has native bf16, else fp32; cuda bf16 (O2, fp32 master weights, no loss scale) where supported, else the fp16
    recipe; npu the fp16 recipe (O2), the Ascend ModelZoo's precision."""
    if preset == "stock":
        return "fp32" if device_type == "cpu" else "fp16"
    if device_type == "cpu":
        return "amp" if bf16 else "fp32"
    if device_type == "cuda":
        return "bf16" if bf16 else "fp16"
    return "fp16"
