"""Hooks for mixed precision and the optimizer off cuda: ``--amp`` (O1), ``--fp16`` (O2) master weights and loss-scale
overflows. The logic lives in fairseq_npu/amp/; these are the wrappers (``--use-apex``'s are in hooks/apex.py)."""

import logging

import torch

from fairseq_npu.amp import master_weights_state
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


def split_plugin_entry(state_dict, key: str):
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
        state_dict, extra = split_plugin_entry(state_dict, master_weights_state.STATE_KEY)
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
