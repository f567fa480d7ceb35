"""Hooks for mixed precision and the optimizer off cuda: ``--amp`` (O1), ``--fp16`` (O2) master weights, loss-scale
overflows, and ``--use-apex`` with apex installed. The logic lives in fairseq_npu/amp/; these are the wrappers."""

import logging

import torch

from fairseq_npu.amp import apex_amp, master_weights_state
from fairseq_npu.amp.amp_optimizer import DeviceAMPOptimizer
from fairseq_npu.amp.autocast import autocast_for
from fairseq_npu.amp.fp32_master_params import build_flat_fp32_params, sync_grads_to_fp32, sync_params_to_fp16
from fairseq_npu.amp.overflow import log_overflows
from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW

logger = logging.getLogger(__name__)


def amp_optimizer(original):
    """``fairseq.optim.AMPOptimizer`` (what Trainer builds for --amp) -> DeviceAMPOptimizer, a subclass."""
    return DeviceAMPOptimizer


def task_train_step(original):
    # A copy of stock's body (FairseqTask.train_step of fairseq 0.12.3 as ve-fairseq packages it), ``original``
    # unused: stock opens torch.cuda.amp.autocast inside it, around the forward only, which a wrapper cannot
    # replace. The one difference: autocast_for(optimizer), on the selected device in --amp-dtype.
    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        model.train()
        model.set_num_updates(update_num)
        with torch.autograd.profiler.record_function("forward"), autocast_for(optimizer):
            loss, sample_size, logging_output = criterion(model, sample)
        if ignore_grad:
            loss *= 0
        with torch.autograd.profiler.record_function("backward"):
            optimizer.backward(loss)
        return loss, sample_size, logging_output

    return train_step


def build_fp32_params(original):
    """The flat fp32 master copy on the parameters' own device (stock asks torch.cuda.current_device())."""

    def build_fp32_params(args, params, flatten=True):
        pipeline = getattr(args, "pipeline_model_parallel", False) and getattr(args, "distributed_no_spawn", False)
        if not flatten or not params or pipeline or params[0].device.type == "cuda":
            return original(args, params, flatten=flatten)
        return build_flat_fp32_params(params)

    return build_fp32_params


def _multi_tensor_syncs_apply(optimizer) -> bool:
    # behind the plugin's optimizer name only: stock optimizers keep stock's copies
    return (optimizer.has_flat_params and isinstance(optimizer.fp32_optimizer, FairseqFusedAdamW)
            and hasattr(torch, "_foreach_copy_"))


def sync_fp16_grads_to_fp32(original):
    def _sync_fp16_grads_to_fp32(self):
        return sync_grads_to_fp32(self) if _multi_tensor_syncs_apply(self) else original(self)

    return _sync_fp16_grads_to_fp32


def sync_fp32_params_to_fp16(original):
    def _sync_fp32_params_to_fp16(self):
        return sync_params_to_fp16(self) if _multi_tensor_syncs_apply(self) else original(self)

    return _sync_fp32_params_to_fp16


def _split_plugin_entry(state_dict, key: str):
    """An optimizer state without the plugin's entry ``key`` (the torch optimizer must not see it), and that entry
    (None when the checkpoint has none)."""
    if isinstance(state_dict, dict) and key in state_dict:
        state_dict = dict(state_dict)
        return state_dict, state_dict.pop(key)
    return state_dict, None


def half_precision_state_dict(original):
    """FP16Optimizer / MemoryEfficientFP16Optimizer: the fp32 masters and the loss scaler's counters are saved
    with the optimizer state (fairseq_npu/amp/master_weights_state.py)."""

    def state_dict(self):
        return dict(original(self), **{master_weights_state.STATE_KEY: master_weights_state.extra_state(self)})

    return state_dict


def half_precision_load_state_dict(original):
    """... and restored after the stock load; a checkpoint without them loads as before."""

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict, extra = _split_plugin_entry(state_dict, master_weights_state.STATE_KEY)
        result = original(self, state_dict, optimizer_overrides)
        master_weights_state.restore(self, extra)
        return result

    return load_state_dict


def check_overflow(original):
    """DynamicLossScaler.check_overflow (--fp16/--bf16, O2): count skipped steps, log them as ``overflows``."""

    def check_overflow(self, grad_norm):
        try:
            original(self, grad_norm)
        except OverflowError:
            self.fairseq_npu_overflows = getattr(self, "fairseq_npu_overflows", 0) + 1
            log_overflows(self.fairseq_npu_overflows)
            raise
        log_overflows(getattr(self, "fairseq_npu_overflows", 0))

    return check_overflow


# --use-apex: each steps aside unless apex drives the run (fairseq_npu/amp/apex_amp.py)


def apex_backward(original):
    """``with amp.scale_loss(loss, optimizer) as scaled: scaled.backward()``."""

    def backward(self, loss):
        state = apex_amp.state_of(self)
        if state is None:
            return original(self, loss)
        with state.amp.scale_loss(loss, self.optimizer) as scaled_loss:
            scaled_loss.backward()

    return backward


def apex_clip_grad_norm(original):
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


def apex_state_dict(original):
    """apex's loss-scaler state saved with the optimizer's (apex keeps it in module globals)."""

    def state_dict(self):
        state = apex_amp.state_of(self)
        saved = original(self)
        if state is not None and hasattr(state.amp, "state_dict"):
            saved = dict(saved, **{apex_amp.STATE_KEY: state.amp.state_dict()})
        return saved

    return state_dict


def apex_load_state_dict(original):
    """apex's loss-scaler state restored from the optimizer state of a checkpoint."""

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        state_dict, amp_state = _split_plugin_entry(state_dict, apex_amp.STATE_KEY)
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
