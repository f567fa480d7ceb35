"""Stand-in for ``torch.npu.amp.GradScaler``: torch's GradScaler on host tensors, with torch_npu's differences.

Each rule is torch_npu's, from Ascend/pytorch ``torch_npu/npu/amp/grad_scaler.py``:

* the constructor takes ``dynamic=True`` and no device;
* ``state_dict()`` adds a ``"dynamic"`` key; ``load_state_dict()`` raises ``RuntimeError`` on an empty state and
  reads ``state_dict["dynamic"]`` (a state saved by torch's own scaler, on cpu or cuda, raises ``KeyError``);
* ``unscale_`` on a fused optimizer (one with ``is_fused_optimizer``) first combines its gradients
  (``_maybe_init_combined_params_and_grads``) and then unscales the combined buffers, not ``p.grad``;
* like torch's: ``unscale_`` twice for the same optimizer object before ``update()`` raises, and ``update()``
  (with or without ``new_scale``) before any ``scale()`` fails its ``_scale is None`` check.

Not modelled: ``dynamic=False`` (a static scale) and the NPU's global overflow flag.
"""

import torch


class GradScaler(torch.amp.GradScaler):
    stand_in = True

    def __init__(self, init_scale=2.0 ** 16, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000,
                 dynamic=True, enabled=True):
        super().__init__("cpu", init_scale=init_scale, growth_factor=growth_factor, backoff_factor=backoff_factor,
                         growth_interval=growth_interval, enabled=enabled)
        if not dynamic:
            raise NotImplementedError("the stand-in does not model a static (dynamic=False) torch_npu GradScaler")
        self._dynamic = dynamic

    def state_dict(self):
        state = super().state_dict()
        if self._enabled:
            state["dynamic"] = self._dynamic
        return state

    def load_state_dict(self, state_dict):
        if not self._enabled:
            return
        if len(state_dict) == 0:
            raise RuntimeError("The source state dict is empty, possibly because it was saved "
                               "from a disabled instance of GradScaler.")
        super().load_state_dict(state_dict)
        self._dynamic = state_dict["dynamic"]

    def _unscale_grads_(self, optimizer, inv_scale, found_inf, allow_fp16):
        if not hasattr(optimizer, "is_fused_optimizer"):
            return super()._unscale_grads_(optimizer, inv_scale, found_inf, allow_fp16)
        with torch.no_grad():
            if not optimizer.is_params_grads_combined:
                optimizer._maybe_init_combined_params_and_grads()
            for combined in optimizer.grads_all_group_combined:
                if combined is not None:
                    torch._amp_foreach_non_finite_check_and_unscale_([combined], found_inf, inv_scale)
        return {found_inf.device: found_inf}
