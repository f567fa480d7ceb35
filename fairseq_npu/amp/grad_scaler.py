"""Dynamic loss scaling for O1 (autocast) training on the selected device, configured from fairseq's flags.

Stock ``AMPOptimizer`` builds ``torch.cuda.amp.GradScaler`` (deprecated, and disabled off cuda) and passes
``--amp-init-scale`` as the *growth interval*. Here the scaler is the device's own one and its settings follow
fairseq's loss-scale flags the way ``--fp16`` (O2) reads them, so O1 and O2 take the same numbers.
"""

import logging

import torch

from fairseq_npu import device

logger = logging.getLogger(__name__)


def scale_window(cfg) -> int:
    """Updates without overflow before the scale doubles: --amp-scale-window, else --fp16-scale-window, else
    fairseq's --fp16 default (2**14 / data-parallel size / update freq)."""
    common = cfg.common
    for window in (getattr(common, "amp_scale_window", None), getattr(common, "fp16_scale_window", None)):
        if window is not None:
            return int(window)
    if len(cfg.optimization.update_freq) > 1:
        raise ValueError("--fp16-scale-window must be given explicitly when using a custom --update-freq schedule")
    data_parallel = max(1, int(cfg.distributed_training.distributed_world_size / common.model_parallel_size))
    return max(1, int(2 ** 14 / data_parallel / cfg.optimization.update_freq[0]))


def make_grad_scaler(init_scale: float, growth_interval: int, enabled: bool = True):
    """torch_npu's GradScaler on npu (it reads the NPU's overflow status), ``torch.amp.GradScaler`` elsewhere."""
    backend = device.get()
    kwargs = dict(init_scale=float(init_scale), growth_interval=int(growth_interval), enabled=enabled)
    if backend.type == "npu":
        npu_amp = getattr(torch.npu, "amp", None)
        if npu_amp is not None and hasattr(npu_amp, "GradScaler"):
            return npu_amp.GradScaler(**kwargs)
        return torch.amp.GradScaler("npu", **kwargs)
    return torch.amp.GradScaler(backend.type, **kwargs)
