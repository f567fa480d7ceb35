"""The device update's cpu dropout (fairseq_npu/models/uniform_dropout.py): torch's dropout semantics with a mask
from 16 random bits per element: the keep rate in every lane of a draw, lanes independent of each other, the scale
applied as native_dropout applies it, the backward, eval mode, reproducibility under a seed, and which modules are
swapped where."""

import math

import pytest
import torch
from fairseq.modules.fairseq_dropout import FairseqDropout
from torch import nn

from fairseq_npu.models.uniform_dropout import (UniformMaskDropout, UniformMaskFairseqDropout, dropout, keep_mask,
                                                use_uniform_dropout)


def _within(rate, expected, n, sds=5.0):
    return abs(rate - expected) < sds * math.sqrt(expected * (1 - expected) / n)


@pytest.mark.parametrize("p", [0.1, 0.25, 0.5, 0.9, 0.3333])
def test_every_lane_of_a_draw_keeps_one_minus_p_independently_of_its_neighbours(p):
    """Each int64 draw gives four elements: each of the four positions keeps 1 - p (to the 1 / 65536 step), and
    two neighbours, in one draw or across two, are kept together at (1 - p)^2 (five binomial standard
    deviations each)."""
    torch.manual_seed(7)
    n = 4 * 250_001  # an odd number of draws
    keep = keep_mask((n,), p).double()
    q = 1 - round(p * 65536) / 65536
    assert abs(q - (1 - p)) <= 0.5 / 65536
    lanes = keep.view(-1, 4)
    for lane in range(4):
        assert _within(lanes[:, lane].mean().item(), q, lanes.shape[0]), lane
    for a, b in ((0, 1), (1, 2), (2, 3)):
        assert _within((lanes[:, a] * lanes[:, b]).mean().item(), q * q, lanes.shape[0]), (a, b)
    assert _within((lanes[:-1, 3] * lanes[1:, 0]).mean().item(), q * q, lanes.shape[0] - 1)
    odd = keep_mask((3, 5, 7), p)  # 105 elements: the last draw's spare lanes are left out
    assert odd.shape == (3, 5, 7) and odd.dtype == torch.bool


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_keeps_one_minus_p_and_scales_the_kept_values_as_torch_does(dtype):
    torch.manual_seed(0)
    x = torch.randn(1000, 1000).to(dtype)
    p = 0.1
    y = dropout(x, p, training=True)
    kept = y != 0
    rate = kept.double().mean().item()
    assert abs(rate - (1 - p)) < 5 * math.sqrt(p * (1 - p) / x.numel())  # five binomial standard deviations
    # native_dropout's product: x * mask, then times the scale (a double) in float: the same rounding here
    assert torch.equal(y[kept], (x * torch.ones_like(x)).mul_(1 / (1 - p))[kept])
    assert torch.equal(y, torch.nn.functional.dropout(x, 0.0, True) * kept.to(dtype) * (1 / (1 - p)))


def test_backward_is_the_mask_times_the_scale():
    torch.manual_seed(1)
    x = torch.randn(64, 128, requires_grad=True)
    y = dropout(x, 0.25, training=True)
    grad = torch.randn(64, 128)
    y.backward(grad)
    kept = (y != 0).float()
    assert torch.equal(x.grad, grad * kept * (1 / 0.75))


def test_eval_and_zero_p_are_the_identity_and_a_seed_repeats_the_mask():
    x = torch.randn(32, 16)
    assert dropout(x, 0.1, training=False) is x
    assert torch.equal(dropout(x, 0.0, training=True), x)
    torch.manual_seed(3)
    a = dropout(x, 0.1, training=True)
    torch.manual_seed(3)
    assert torch.equal(a, dropout(x, 0.1, training=True))


def test_modules_are_swapped_on_the_cpu_only():
    def model():
        return nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1), FairseqDropout(0.2, module_name="x"))

    assert use_uniform_dropout(model(), "cuda") == 0 and use_uniform_dropout(model(), "npu") == 0
    m = model()
    assert use_uniform_dropout(m, "cpu") == 2
    assert isinstance(m[1], UniformMaskDropout) and m[1].p == 0.1
    assert isinstance(m[2], UniformMaskFairseqDropout) and m[2].p == 0.2
    m.eval()
    x = torch.randn(8, 4)
    assert torch.equal(m(x), m[0](x))  # eval mode: no dropout
    m.train()
    torch.manual_seed(0)
    out = m[2](m[1](torch.ones(10000)))
    assert abs((out != 0).float().mean().item() - 0.9 * 0.8) < 0.02  # both applied in training
