"""Hooks for ``--use-apex`` with apex installed: apex.amp drives mixed precision inside stock fairseq's Trainer.

The apex path in one place: the decision (``fairseq_npu.precision.apex_requested``, made while the command line is
parsed), the logic (fairseq_npu/amp/apex_amp.py: initialize, loss scale, skipped steps) and these wrappers, which
each step aside unless apex drives the run.
"""

import logging

import torch

from fairseq_npu import precision
from fairseq_npu.amp import apex_amp
from fairseq_npu.amp.overflow import log_overflows
from fairseq_npu.hooks.amp import split_plugin_entry

logger = logging.getLogger(__name__)


def build_optimizer(original):
    """--use-apex: amp.initialize after the stock build; later rebuilds keep apex's optimizer."""

    def _build_optimizer(self):
        kept = apex_amp.state_of(self._optimizer) if self._optimizer is not None else None
        if kept is not None:  # this model is apex's already, whatever was parsed since
            if apex_amp.trainable_param_ids(self) != kept.param_ids:
                raise RuntimeError("--use-apex: the model's parameters changed after apex.amp.initialize "
                                   "(apex cannot initialize twice); drop --use-apex for this run")
            return  # fairseq rebuilds the optimizer before loading a checkpoint into it: keep apex's
        req = apex_amp.requested()
        if req is None or precision.any_precision_config(self.cfg.common):
            return original(self)
        original(self)
        apex_amp.initialize(self, req)

    return _build_optimizer


def backward(original):
    """``with amp.scale_loss(loss, optimizer) as scaled: scaled.backward()``."""

    def backward(self, loss):
        state = apex_amp.state_of(self)
        if state is None:
            return original(self, loss)
        with state.amp.scale_loss(loss, self.optimizer) as scaled_loss:
            scaled_loss.backward()

    return backward


def clip_grad_norm(original):
    """A step apex skips becomes fairseq's OverflowError (no update counted); logs apex's loss scale."""
    from fairseq.logging import metrics

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        state = apex_amp.state_of(self)
        if state is None:
            return original(self, max_norm, aggregate_norm_fn)
        scale = apex_amp.loss_scale(state.amp)
        if scale is not None:
            metrics.log_scalar("loss_scale", scale, priority=700, round=4, weight=0)
        if apex_amp.skip_pending(self.optimizer):
            self.optimizer.step()  # apex's one-shot skip: restores step() and drops the master gradients
            state.overflows += 1
            log_overflows(state.overflows)
            raise OverflowError(f"apex.amp skipped the step; loss scale now {scale}")
        grad_norm = original(self, max_norm, aggregate_norm_fn)
        if not torch.isfinite(grad_norm).all():
            # a static --loss-scale: apex would step on inf/nan gradients; skip the update instead
            state.overflows += 1
            log_overflows(state.overflows)
            raise OverflowError(f"inf/nan gradients under apex.amp's static loss scale {scale}")
        log_overflows(state.overflows)
        return grad_norm

    return clip_grad_norm


def state_dict(original):
    """apex's loss-scaler state saved with the optimizer's (apex keeps it in module globals)."""

    def state_dict(self):
        state = apex_amp.state_of(self)
        saved = original(self)
        if state is not None and hasattr(state.amp, "state_dict"):
            saved = dict(saved, **{apex_amp.STATE_KEY: state.amp.state_dict()})
        return saved

    return state_dict


def load_state_dict(original):
    """apex's loss-scaler state restored from the optimizer state of a checkpoint."""

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict, amp_state = split_plugin_entry(state_dict, apex_amp.STATE_KEY)
        result = original(self, state_dict, optimizer_overrides)
        state = apex_amp.state_of(self)
        if state is None:
            if amp_state is not None:
                logger.info("fairseq_npu: the checkpoint holds apex.amp loss-scale state; this run does not "
                            "use --use-apex, so it is ignored")
        elif amp_state is None:
            logger.warning("fairseq_npu: --use-apex resumes from a checkpoint without apex.amp state; the "
                           f"loss scale starts again from {apex_amp.loss_scale(state.amp)}")
        else:
            state.amp.load_state_dict(amp_state)
            logger.info(f"fairseq_npu: apex.amp loss scale restored to {apex_amp.loss_scale(state.amp)}")
        return result

    return load_state_dict
