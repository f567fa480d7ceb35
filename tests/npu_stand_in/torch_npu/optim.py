"""Stand-in for torch_npu.optim: ``NpuFusedAdamW``, as strict as the real one about where it reads gradients.

Each rule below is torch_npu's, from Ascend/pytorch ``torch_npu/optim/npu_fused_optim_base.py`` (base) and
``torch_npu/optim/npu_fused_adamw.py`` (adamw):

* at the first ``step()`` (or the first ``zero_grad()`` or GradScaler ``unscale_`` that finds gradients) the
  parameters with a gradient, and their gradients, are combined per dtype into one buffer each: every ``p.data``
  and ``p.grad`` becomes a view of it (base: ``_maybe_init_combined_params_and_grads``, through
  ``npu_combine_tensors``, which re-points the tensors in place). The same objects, so ``p.grad is g`` still holds;
* from then on ``step()`` updates the combined parameters from the combined gradients only (adamw:
  ``_group_step``). A gradient replaced by a new tensor (``p.grad = None``, then backward) is never read;
* ``zero_grad(set_to_none=True)`` raises ``ValueError`` (base: ``zero_grad``); ``zero_grad()`` zeroes the
  combined buffers in place, and before any combination falls back to torch's in-place zeroing;
* parameters must be float32 or float16 (base: ``TypeError``);
* the update is torch's AdamW: ``p *= 1 - lr * wd``, moments, ``denom = sqrt(v) / sqrt(1 - beta2**t) + eps``,
  ``p -= lr / (1 - beta1**t) * m / denom``; ``state["step"]`` is a Python int, counted per parameter and once
  for the combined state (adamw: ``_init_param_state``, ``_group_step``).

Everything runs on host tensors (the stand-in has no device memory).
"""

import math
from collections import defaultdict

import torch

DTYPES = (torch.float32, torch.float16)  # base: index 0 fp32, index 1 fp16


def _combine(tensors):
    """One zero-initialised buffer holding ``tensors`` back to back; each tensor becomes a view of it, its value
    copied (torch_npu.utils.npu_combine_tensors). None for an empty list."""
    if not tensors:
        return None
    combined = torch.zeros(sum(t.numel() for t in tensors), dtype=tensors[0].dtype, device=tensors[0].device)
    offset = 0
    for t in tensors:
        piece = combined[offset:offset + t.numel()].view(t.shape)
        piece.copy_(t)
        t.data = piece  # same object, new storage: what npu_change_data_ptr does
        offset += t.numel()
    return combined


class NpuFusedOptimizerBase(torch.optim.Optimizer):
    stand_in = True

    def __init__(self, params, defaults):
        super().__init__(params, defaults)
        self.is_fused_optimizer = True  # torch_npu's GradScaler looks for it (unscales the combined buffer)
        self.is_params_grads_combined = False
        self.is_states_combined = False
        self.params_lists_indexed_by_group = []
        self.params_all_group_combined = [None, None]
        self.grads_all_group_combined = [None, None]
        self.combined_params_indexed_by_group = None
        self.combined_grads_indexed_by_group = None

    @torch.no_grad()
    def _maybe_init_combined_params_and_grads(self):
        if self.is_params_grads_combined:
            return
        per_group, every = [], ([], [])
        for group in self.param_groups:
            lists = ([], [])
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.dtype not in DTYPES:
                    raise TypeError(f"Fused optimizer's parameters must be either float32 or float16, but received "
                                    f"{p.dtype}")
                lists[DTYPES.index(p.dtype)].append(p)
            per_group.append(lists)
            for index in (0, 1):
                every[index].extend(lists[index])
        self.params_lists_indexed_by_group = per_group
        for index in (0, 1):
            self.params_all_group_combined[index] = _combine(every[index])
            self.grads_all_group_combined[index] = _combine([p.grad for p in every[index]])
        # each group's part of the combined buffers, in order
        self.combined_params_indexed_by_group, self.combined_grads_indexed_by_group = [], []
        offsets = [0, 0]
        for lists in per_group:
            params_parts, grads_parts = [], []
            for index in (0, 1):
                size = sum(p.numel() for p in lists[index])
                start, offsets[index] = offsets[index], offsets[index] + size
                for whole, parts in ((self.params_all_group_combined[index], params_parts),
                                     (self.grads_all_group_combined[index], grads_parts)):
                    parts.append(whole[start:start + size] if whole is not None and size else None)
            self.combined_params_indexed_by_group.append(params_parts)
            self.combined_grads_indexed_by_group.append(grads_parts)
        if any(b is not None for b in self.params_all_group_combined):
            self.is_params_grads_combined = True

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        self._maybe_init_combined_params_and_grads()
        if not self.is_states_combined:
            self._maybe_init_combined_states()
        for index in range(len(self.param_groups)):
            self._group_step(index)
        return loss

    @torch.no_grad()
    def zero_grad(self, set_to_none=False):
        if set_to_none:
            raise ValueError("set_to_none is not supported in fused optimizers")
        if not self.is_params_grads_combined:
            self._maybe_init_combined_params_and_grads()
            if not self.is_params_grads_combined:
                super().zero_grad(set_to_none=False)
                return
        for combined in self.grads_all_group_combined:
            if combined is not None:
                combined.zero_()

    def get_combined_grads(self):
        return self.grads_all_group_combined


class NpuFusedAdamW(NpuFusedOptimizerBase):
    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        if amsgrad:
            raise NotImplementedError("the stand-in does not model amsgrad")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False))

    def _maybe_init_combined_states(self):
        self.combined_param_states_indexed_by_group = []
        for lists in self.params_lists_indexed_by_group:
            states = []
            for params in lists:
                for p in params:
                    state = self.state[p]
                    if len(state) == 0:
                        state["step"] = 0
                        state["exp_avg"] = torch.zeros_like(p)
                        state["exp_avg_sq"] = torch.zeros_like(p)
                    else:  # loaded from a checkpoint: fresh tensors that can be combined
                        state["exp_avg"] = state["exp_avg"].clone().to(p.dtype)
                        state["exp_avg_sq"] = state["exp_avg_sq"].clone().to(p.dtype)
                combined = defaultdict(dict)
                combined["step"] = self.state[params[0]]["step"] if params else 0
                combined["exp_avg"] = _combine([self.state[p]["exp_avg"] for p in params])
                combined["exp_avg_sq"] = _combine([self.state[p]["exp_avg_sq"] for p in params])
                states.append(combined)
            self.combined_param_states_indexed_by_group.append(states)
        if self.combined_param_states_indexed_by_group:
            self.is_states_combined = True

    def _group_step(self, group_index):
        group = self.param_groups[group_index]
        for p in group["params"]:
            if p.grad is not None:
                # a parameter whose grad appeared after the first step: KeyError, as in torch_npu
                self.state[p]["step"] += 1
        beta1, beta2 = group["betas"]
        for param, grad, state in zip(self.combined_params_indexed_by_group[group_index],
                                      self.combined_grads_indexed_by_group[group_index],
                                      self.combined_param_states_indexed_by_group[group_index]):
            if param is None or grad is None:
                continue
            param.mul_(1 - group["lr"] * group["weight_decay"])
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            state["step"] += 1
            bias_correction1 = 1 - beta1 ** state["step"]
            bias_correction2 = 1 - beta2 ** state["step"]
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
            param.addcdiv_(exp_avg, denom, value=-group["lr"] / bias_correction1)
