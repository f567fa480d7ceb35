"""Stand-in for Ascend apex's ``apex.optimizers.NpuFusedAdamW`` (Ascend/apex ``apex/optimizers/npu_fused_adamw.py``):

* it marks itself ``is_npu_fused_optimizer = True``, which is how apex.amp recognises it;
* ``step()`` outside ``amp.initialize`` raises ``RuntimeError('apex.optimizers.NpuFusedAdamW should be used with
  AMP.')``;
* it updates from the buffers apex.amp combined at the end of the first backward (``_amp_stash``), never from
  ``p.grad``: torch's AdamW maths on the combined parameters, ``state["step"]`` a Python int.
"""

import math

import torch


class NpuFusedAdamW(torch.optim.Optimizer):
    stand_in = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        if amsgrad:
            raise NotImplementedError("the stand-in does not model amsgrad")
        self.is_npu_fused_optimizer = True
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=False))

    @torch.no_grad()
    def step(self, closure=None):
        if not hasattr(self, "_amp_stash"):
            raise RuntimeError("apex.optimizers.NpuFusedAdamW should be used with AMP.")
        from apex.amp import combined_init

        combined_init(self)
        stash = self._amp_stash
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        combined = {id(p) for p in stash.combined_params_list}
        offset = 0
        for group in self.param_groups:
            params = [p for p in group["params"] if id(p) in combined]
            size = sum(p.numel() for p in params)
            start, offset = offset, offset + size
            if not params:
                continue
            param, grad = stash.param_combine[start:start + size], stash.grad_combine[start:start + size]
            for p in params:
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
            exp_avg = torch.cat([self.state[p]["exp_avg"].reshape(-1) for p in params])
            exp_avg_sq = torch.cat([self.state[p]["exp_avg_sq"].reshape(-1) for p in params])
            t = self.state[params[0]]["step"]
            beta1, beta2 = group["betas"]
            param.mul_(1 - group["lr"] * group["weight_decay"])
            exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
            exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (exp_avg_sq.sqrt() / math.sqrt(1 - beta2 ** t)).add_(group["eps"])
            param.addcdiv_(exp_avg, denom, value=-group["lr"] / (1 - beta1 ** t))
            done = 0
            for p in params:
                self.state[p]["exp_avg"].copy_(exp_avg[done:done + p.numel()].view(p.shape))
                self.state[p]["exp_avg_sq"].copy_(exp_avg_sq[done:done + p.numel()].view(p.shape))
                done += p.numel()
        return loss
