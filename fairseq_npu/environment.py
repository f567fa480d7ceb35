"""The plugin's environment variables, checked when a command starts (their contract: fairseq_npu/precision.py).

A variable set by hand to a value the plugin does not know ended in a traceback deep in training
(``FAIRSEQ_NPU_DEVICE=gpu``, ``FAIRSEQ_NPU_CPU_MALLOC=fast``), in a line naming a flag the user never gave
(``FAIRSEQ_NPU_AMP_DTYPE=fp8`` read as ``--amp-dtype fp8``), or was silently read as the default
(``FAIRSEQ_NPU_APEX``). Here each is one UsageError naming the variable, its value and the values it takes,
raised before fairseq parses the command line (fairseq_npu/hooks/flags.py) and before fairseq-npu-evaluate or
-predict loads a checkpoint. The allowed values live in the modules that read each variable.
``FAIRSEQ_NPU_PLUGIN`` is read by the package's ``__init__`` before anything else, and is not checked here
(anything but ``off`` means on).
"""

import os

from fairseq_npu.errors import UsageError


def _allowed() -> dict:
    from fairseq_npu import cpu_allocator, device, precision
    from fairseq_npu.update import mode as update_mode

    return {
        device.ENV_VAR: device.DEVICE_TYPES,
        precision.AMP_DTYPE_ENV: ("auto", *precision.AMP_DTYPES),
        cpu_allocator.ENV_VAR: cpu_allocator.CHOICES,
        update_mode.ENV: update_mode.MODES,
    }


def _apex_problem(value: str):
    """``FAIRSEQ_NPU_APEX`` is "<opt level> <loss scale>" (precision.request_apex writes it)."""
    from fairseq_npu import precision

    parts = value.split()
    if len(parts) != 2 or parts[0] not in precision.OPT_LEVELS:
        return f"expected '<opt level> <loss scale>' with an opt level of {', '.join(precision.OPT_LEVELS)}"
    if parts[1] not in ("default", "dynamic"):
        try:
            float(parts[1])
        except ValueError:
            return "the loss scale must be a number, 'dynamic' or 'default'"
    return None


def check_environment() -> None:
    """Raise UsageError for the first ``FAIRSEQ_NPU_*`` variable whose value the plugin does not take.
    Unset or empty means the default, as each reader treats it."""
    for name, values in _allowed().items():
        value = os.environ.get(name)
        if value and value.strip().lower() not in values:
            raise UsageError(f"{name}={value!r} (environment): expected one of {', '.join(values)}, or unset it")
    from fairseq_npu import precision

    apex = os.environ.get(precision.APEX_ENV)
    if apex:
        problem = _apex_problem(apex)
        if problem:
            raise UsageError(f"{precision.APEX_ENV}={apex!r} (environment): {problem}, or unset it")
