"""Device-generic autocast for a task's forward pass.

Stock ``FairseqTask.train_step`` wraps the forward in ``torch.cuda.amp.autocast`` when the optimizer is an
``AMPOptimizer`` (``--amp``), which does nothing on npu and cpu. Tasks of this plugin call ``autocast_for``
instead: it autocasts on the selected device type, in the half dtype the run asked for.
"""

import contextlib

import torch

from fairseq_npu import device


def _is_amp_optimizer(optimizer) -> bool:
    from fairseq.optim.amp_optimizer import AMPOptimizer

    return isinstance(optimizer, AMPOptimizer) or getattr(optimizer, "fairseq_npu_autocast_dtype", None) is not None


def autocast_dtype_for(optimizer) -> torch.dtype:
    """The half dtype to autocast to: the optimizer's own choice, else ``--amp-dtype`` (see amp.flags)."""
    chosen = getattr(optimizer, "fairseq_npu_autocast_dtype", None)
    if chosen is not None:
        return chosen
    from fairseq_npu.amp.flags import amp_dtype

    return amp_dtype()


def autocast_for(optimizer):
    """Context manager: the optimizer's own autocast (DeviceAMPOptimizer and the device update build it from
    fairseq_npu.precision, as validation, evaluate and predict do); for another AMP optimizer, autocast on the
    current device; else nothing."""
    own = getattr(optimizer, "autocast", None)
    if callable(own):
        return own()
    if optimizer is None or not _is_amp_optimizer(optimizer):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.get().autocast_device_type, dtype=autocast_dtype_for(optimizer))
