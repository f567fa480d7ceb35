"""Dropout on the CPU with its mask drawn from 16 random bits per element, for the device update on cpu.

torch's CPU dropout (``native_dropout``) fills its mask with ``bernoulli_(1 - p)``, which draws a double, two 32-bit
words of the Mersenne Twister, per element: the slowest operator group of a small GLUE model's update after the
matmuls. Here one 64-bit draw gives four elements' masks: the draws are read as 16-bit integers, uniform over
65,536 values, and an element is dropped when its integer falls in the lowest ``round(p * 65536)`` of them, so p is
kept to 7.6e-6 (0.1 drops 0.1000061 of the elements). The mask is applied as native_dropout applies its own:
``x * mask * (1 / (1 - p))`` with the scale in float, and the same in backward. A mask takes a quarter of the
time of one float32 uniform per element (``torch.rand``: 0.29 against 1.14 ms for a 25 x 32 x 256 mask), the
generator's words a quarter of ``bernoulli_``'s (docs/benchmarks.md, findings 13 and 14). The masks are as random
and as reproducible under fairseq's per-update seed, but not the same draws as torch's dropout.

Off the cpu (CUDA's and NPU's dropout draw with fast counter-based generators, inside one kernel) and in eval
mode the modules behave exactly as before.
"""

import math

import torch
import torch.nn.functional as F
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import nn


LEVELS = 2**16  # the values a 16-bit lane of a draw takes


def keep_mask(shape, p: float, device=None) -> torch.Tensor:
    """A boolean mask, each element kept with probability 1 - round(p * 65536) / 65536, from 16 random bits per
    element: the 64-bit draws of ``random_`` over the whole int64 range, read as four int16 lanes each."""
    numel = math.prod(shape)
    words = torch.empty((numel + 3) // 4, dtype=torch.int64, device=device)
    # [-2^63, 2^63 - 1): torch takes a whole 64-bit draw for a range this wide; the one value left out biases a lane
    # by 2^-64
    words.random_(-2**63, 2**63 - 1)
    threshold = round(p * LEVELS) - LEVELS // 2  # lanes below it (the lowest round(p * 65536) values) are dropped
    return (words.view(torch.int16)[:numel] >= threshold).view(shape)


class _UniformMaskDropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = keep_mask(x.shape, p, x.device)
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
