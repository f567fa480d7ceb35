"""Gradient norm and clipping for ``fused_adamw``: fairseq's ``utils.clip_grad_norm_`` in a few multi-tensor ops.

fairseq computes the total norm with apex's ``amp_C`` kernel when it is installed, and otherwise one
``torch.norm`` per gradient: about 400 operators per update for roberta_base (a norm and a detach for each of
201 gradients), every update, whether or not ``--clip-norm`` is set (the norm is logged as ``gnorm``). Off CUDA it
also moves each of those norms to the CPU before stacking them, which on an NPU is 201 device-to-host copies,
each one a host sync. Here the norms come from one ``torch._foreach_norm`` (a single fused kernel on CUDA, on the
device everywhere), then a stack and a norm on the gradients' device: 3 operators, no sync.

Same contract and result as fairseq's function: the 2-norm over all gradients as a float32 tensor (computed in
the same order on the CPU, so bit-identical there), ``aggregate_norm_fn`` applied to it, and with ``max_norm > 0``
the gradients scaled by ``min(1, max_norm / (norm + 1e-6))``. Gradients that are not all float32 on one device,
and fairseq's MoE ``expert`` parameters, take fairseq's own function.
"""

from typing import Callable, Iterable, Optional

import torch
from fairseq import utils


def _total_norm(grads) -> torch.Tensor:
    get_total_norm = getattr(torch.nn.utils, "get_total_norm", None)  # torch >= 2.6
    if get_total_norm is not None:
        return get_total_norm(grads, 2.0, foreach=True)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2.0)), 2.0)


def clip_grad_norm_(params: Iterable[torch.Tensor], max_norm: float,
                    aggregate_norm_fn: Optional[Callable[[torch.Tensor], torch.Tensor]] = None) -> torch.Tensor:
    params = list(params)
    with_grad = [p for p in params if p.grad is not None]
    grads = [p.grad for p in with_grad]
    if (len(grads) < 2 or any(hasattr(p, "expert") for p in with_grad)
            or any(g.dtype != torch.float32 or g.device != grads[0].device or g.is_sparse for g in grads)):
        return utils.clip_grad_norm_(params, max_norm, aggregate_norm_fn)
    with torch.no_grad():
        total_norm = _total_norm(grads)
        if aggregate_norm_fn is not None:
            total_norm = aggregate_norm_fn(total_norm)
        if max_norm > 0:
            clip_coef = (float(max_norm) / (total_norm + 1e-6)).clamp_(max=1)
            torch._foreach_mul_(grads, clip_coef)
    return total_norm
