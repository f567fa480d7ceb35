"""fairseq's GELU without its float32 round trip, for the device update on cpu and cuda.

fairseq's ``gelu`` (``fairseq/modules/gelu.py``) casts a half-precision input to float32, applies GELU and casts
back: two copies of every feed-forward activation each way, every layer, every update. torch's own GELU kernel
computes half inputs in float32 internally and rounds once, which is the same result: forward and backward are
bit-identical on the cpu in bf16 and fp16 (``tests/test_device_update.py`` trains both ways; on cuda
``tests/test_cuda.py`` checks the kernels). On other devices (an NPU's kernels may compute half natively) the
module keeps fairseq's function.
"""

import torch
import torch.nn.functional as F
from fairseq.modules.gelu import gelu as fairseq_gelu

NATIVE_GELU_DEVICES = ("cpu", "cuda")  # torch's GELU computes half inputs in float32 here


def use_native_gelu(model: torch.nn.Module, device_type: str) -> int:
    """Points every ``activation_fn`` of ``model`` that is fairseq's ``gelu`` at torch's; returns how many."""
    if device_type not in NATIVE_GELU_DEVICES:
        return 0
    swapped = 0
    for module in model.modules():
        if getattr(module, "activation_fn", None) is fairseq_gelu:
            module.activation_fn = F.gelu
            swapped += 1
    return swapped
