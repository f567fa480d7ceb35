"""O1 mixed precision (fairseq ``--amp``) on npu, cuda and cpu.

Replaces ``fairseq.optim.AMPOptimizer`` (installed by a hook, so ``Trainer`` builds this class for ``--amp``):

* the scaler is the device's (``grad_scaler.make_grad_scaler``), not ``torch.cuda.amp.GradScaler``;
* init scale ``--fp16-init-scale`` (as stock), growth interval ``--amp-scale-window`` / ``--fp16-scale-window``
  (stock wrongly used ``--amp-init-scale``), floor ``--threshold-loss-scale`` (stock ignored it), stop at
  ``--min-loss-scale`` (as stock);
* autocast dtype from ``--amp-dtype`` (fp16 with loss scaling, or bf16 without);
* an overflowing step is skipped, the scale lowered and the running count of skipped steps logged as
  ``overflows``; with bf16 (no scaler) a non-finite gradient also skips the step instead of writing NaNs;
* the gradients are unscaled exactly once per update: ``unscale_`` and ``step`` go to the same optimizer object
  (stock unscales the torch optimizer, then steps the fairseq wrapper, which GradScaler counts as another
  optimizer and unscales again: the optimizer saw gradients divided by the scale twice);
* the gradients are cleared by the inner optimizer's own ``zero_grad`` (stock sets ``p.grad = None``, which an
  NPU fused optimizer, updating from one buffer its gradients were combined into, never sees again);
* the scaler's state is saved in the checkpoint with the optimizer state and restored on resume (stock drops
  it, so a resumed run restarted from the initial scale), from any device's scaler and from an ``--fp16``
  checkpoint's ``loss_scale``.
"""

import logging

import torch
from fairseq.logging import metrics
from fairseq.optim.amp_optimizer import AMPOptimizer
from fairseq.optim.fairseq_optimizer import FairseqOptimizer

from fairseq_npu import precision
from fairseq_npu.errors import MAX_CONSECUTIVE_SKIPS, TrainingDiverged
from fairseq_npu.amp import flags
from fairseq_npu.amp.grad_scaler import make_grad_scaler, scale_window

logger = logging.getLogger(__name__)

SCALER_KEY = "fairseq_npu_amp_scaler"


class DeviceAMPOptimizer(AMPOptimizer):
    def __init__(self, cfg, params, fp32_optimizer, **kwargs):
        FairseqOptimizer.__init__(self, cfg.optimizer)  # not AMPOptimizer.__init__: it builds a cuda scaler
        self.fp32_optimizer = fp32_optimizer
        self.precision = precision.policy(cfg.common)  # its autocast is the forward's (fairseq_npu.amp.autocast_for)
        self.fairseq_npu_autocast_dtype = flags.AMP_DTYPES[self.precision.autocast_dtype]
        self.loss_scaling = self.fairseq_npu_autocast_dtype == torch.float16
        self._grad_scaler = make_grad_scaler(
            init_scale=cfg.common.fp16_init_scale, growth_interval=scale_window(cfg), enabled=self.loss_scaling
        )
        self.min_loss_scale = cfg.common.min_loss_scale
        self.threshold_loss_scale = cfg.common.threshold_loss_scale
        self.overflows = 0
        self.consecutive_skips = 0  # the divergence check (fairseq_npu.errors.MAX_CONSECUTIVE_SKIPS)
        self._grads_finite = True
        logger.info(
            f"AMP (O1): autocast {str(self.fairseq_npu_autocast_dtype).replace('torch.', '')}, "
            + (f"dynamic loss scale from {self.scaler.get_scale()}, window {scale_window(cfg)}"
               if self.loss_scaling else "no loss scaling")
        )

    def autocast(self):
        return self.precision.autocast()

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """Unscales, clips; on a non-finite norm lowers the scale (or stops at --min-loss-scale)."""
        # the object step() passes to scaler.step: GradScaler records "unscaled" per optimizer object
        self.scaler.unscale_(self.fp32_optimizer)
        grad_norm = self.fp32_optimizer.clip_grad_norm(max_norm, aggregate_norm_fn)
        self._grads_finite = bool(torch.isfinite(grad_norm).all())
        self.consecutive_skips = 0 if self._grads_finite else self.consecutive_skips + 1
        if self.consecutive_skips >= MAX_CONSECUTIVE_SKIPS:
            raise TrainingDiverged(
                f"training diverged: the last {self.consecutive_skips} updates had non-finite gradients and were "
                f"skipped ({self.overflows + 1} skipped in all"
                + (f", loss scale {self.scaler.get_scale():g}" if self.loss_scaling else "") + "); lower --lr or use fp32")
        if not self._grads_finite:
            self.overflows += 1
            if self.loss_scaling:
                new_scale = self.next_loss_scale
                if new_scale <= self.min_loss_scale:
                    raise FloatingPointError(
                        f"AMP: minimum loss scale reached ({self.min_loss_scale}). Your loss is probably exploding. "
                        f"Try restarting training or use fp32. {new_scale}"
                    )
                logger.info(f"AMP: overflow detected, skipping the step and setting the loss scale to {new_scale}")
            else:
                logger.info("AMP: non-finite gradients (bf16, no loss scaling), skipping the step")
        return grad_norm

    def zero_grad(self):
        # the inner optimizer knows how its gradients must be cleared (fused_adamw on npu: in place)
        self.fp32_optimizer.zero_grad()

    def multiply_grads(self, c):
        # the inner optimizer's (stock: the inherited loop over the same params; fused_adamw: multi-tensor)
        self.fp32_optimizer.multiply_grads(c)

    def step(self):
        if self.loss_scaling:
            self.scaler.step(self.fp32_optimizer)  # skips the update when unscale_ found inf/nan
            self.scaler.update()
            floor = self.threshold_loss_scale
            if floor is not None and self.scaler.get_scale() < floor:
                self.scaler.update(new_scale=float(floor))
        elif self._grads_finite:
            self.fp32_optimizer.step()
        self._grads_finite = True
        metrics.log_scalar("overflows", self.overflows, priority=710, round=0, weight=0)

    @property
    def next_loss_scale(self):
        scale = self.scaler.get_scale() * self.scaler.get_backoff_factor()
        floor = self.threshold_loss_scale
        return max(scale, floor) if floor is not None else scale

    def state_dict(self):
        state = self.fp32_optimizer.state_dict()
        state[SCALER_KEY] = {**self.scaler.state_dict(), "overflows": self.overflows}
        return state

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict = dict(state_dict)
        scaler_state = state_dict.pop(SCALER_KEY, None)
        if scaler_state is not None:
            scaler_state = dict(scaler_state)
            self.overflows = int(scaler_state.pop("overflows", 0))
            if self.loss_scaling and scaler_state:
                self._load_scaler_state(scaler_state)
        elif "loss_scale" in state_dict and self.loss_scaling:  # a --fp16 (O2) checkpoint: keep its scale
            # (not update(new_scale=...): before the first scale() the scaler has no scale tensor to replace)
            self._load_scaler_state({"scale": float(state_dict.pop("loss_scale"))})
        state_dict.pop("loss_scale", None)
        self.fp32_optimizer.load_state_dict(state_dict, optimizer_overrides)

    def _load_scaler_state(self, saved: dict) -> None:
        """``saved`` over this scaler's own state: keys another device's scaler does not write are filled in
        (torch_npu's load_state_dict requires "dynamic", which torch's scaler on cpu/cuda does not save)."""
        self.scaler.load_state_dict({**self.scaler.state_dict(), **saved})
