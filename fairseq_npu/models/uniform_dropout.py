"""Dropout on the CPU with its mask drawn as one float32 uniform per element, for the device update on cpu.

torch's CPU dropout (``native_dropout``) fills its mask with ``bernoulli_(1 - p)``, which draws a double, two 32-bit
words of the Mersenne Twister, per element: the slowest operator group of a small GLUE model's update after the
matmuls. Here the mask is ``rand >= p`` from one float32 uniform (24 bits; p is kept to 6e-8), applied as
native_dropout applies its own: ``x * mask * (1 / (1 - p))`` with the scale in float, and the same in backward.
Forward and backward together take about 30% less time (docs/benchmarks.md, finding 13). The masks are as random
and as reproducible under fairseq's per-update seed, but not the same draws as torch's dropout.

Off the cpu (CUDA's and NPU's dropout draw with fast counter-based generators, inside one kernel) and in eval
mode the modules behave exactly as before.
"""

import torch
import torch.nn.functional as F
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import nn


class _UniformMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = torch.rand(x.shape, dtype=torch.float32, device=x.device) >= p
        ctx.scale = 1.0 / (1.0 - p)
        ctx.save_for_backward(keep)
        return x.mul(keep).mul_(ctx.scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (keep,) = ctx.saved_tensors
        return grad.mul(keep).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """``F.dropout(x, p, training)``, with the uniform mask on the cpu."""
    if not training or p <= 0.0 or x.device.type != "cpu" or p >= 1.0:
        return F.dropout(x, p, training)
    return _UniformMaskDropout.apply(x, p)


class UniformMaskDropout(nn.Dropout):
    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.inplace) if self.inplace else dropout(x, self.p, self.training)


class UniformMaskFairseqDropout(FairseqDropout):
    def forward(self, x, inplace: bool = False):
        if self.p > 0 and (self.training or self.apply_during_inference) and not inplace:
            return dropout(x, self.p, True)
        return super().forward(x, inplace)


def use_uniform_dropout(model: nn.Module, device_type: str) -> int:
    """Turns the dropout modules of ``model`` (torch's ``nn.Dropout``, fairseq's ``FairseqDropout``) into the
    uniform-mask ones in place on the cpu; returns how many."""
    if device_type != "cpu":
        return 0
    swapped = 0
    for module in model.modules():
        kind = type(module)
        if kind is nn.Dropout:
            module.__class__ = UniformMaskDropout
        elif kind is FairseqDropout:
            module.__class__ = UniformMaskFairseqDropout
        else:
            continue
        swapped += 1
    return swapped
