"""Device-generic autocast for a task's forward pass.

Stock ``FairseqTask.train_step`` wraps the forward in ``torch.cuda.amp.autocast`` when the optimizer is an
``AMPOptimizer`` (``--amp``), which does nothing on npu and cpu. Tasks of this plugin call ``autocast_for``
instead. The autocast itself is built in one place, ``fairseq_npu.precision.PrecisionPolicy.autocast``, for
training, validation, evaluate and predict alike; this only asks the optimizer for it.
"""

import contextlib


def autocast_for(optimizer):
    """Context manager: the optimizer's own autocast, else nothing. ``--amp`` always builds DeviceAMPOptimizer (a
    hook replaces fairseq's AMPOptimizer), and the device update has one too: both return their precision
    policy's autocast. Every other optimizer trains in its weights' dtype (fp32, or --fp16/--bf16's half)."""
    own = getattr(optimizer, "autocast", None)
    return own() if callable(own) else contextlib.nullcontext()
