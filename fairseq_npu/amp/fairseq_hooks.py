"""The changes to stock fairseq that mixed precision needs off cuda; each is listed in fairseq_npu.hooks.HOOKS.

Every ``install_*`` is idempotent (the patched object carries its original, see ``hooks.wrap``).
"""

import logging
import sys

import torch

from fairseq_npu import device
from fairseq_npu.hooks import is_hooked, wrap

logger = logging.getLogger(__name__)


def install_amp_optimizer():
    """``fairseq.optim.AMPOptimizer`` (what Trainer builds for --amp) -> DeviceAMPOptimizer, a subclass."""
    from fairseq import optim

    from fairseq_npu.amp.amp_optimizer import DeviceAMPOptimizer

    wrap(optim, "AMPOptimizer", lambda original: DeviceAMPOptimizer)


def install_task_autocast():
    """FairseqTask.train_step: the forward runs under autocast on the selected device, in --amp-dtype."""
    from fairseq.tasks.fairseq_task import FairseqTask

    from fairseq_npu.amp.autocast import autocast_for

    def make(original):
        def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
            # stock: identical, except torch.cuda.amp.autocast (fp16, cuda only) around the forward
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

    wrap(FairseqTask, "train_step", make)


def install_fp32_master_params():
    """FP16Optimizer.build_fp32_params: the flat fp32 master copy on the parameters' own device."""
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin

    from fairseq_npu.amp.fp32_master_params import build_flat_fp32_params

    if is_hooked(_FP16OptimizerMixin, "build_fp32_params"):
        return

    def make(original):
        def build_fp32_params(args, params, flatten=True):
            pipeline = getattr(args, "pipeline_model_parallel", False) and getattr(args, "distributed_no_spawn", False)
            if not flatten or not params or pipeline or params[0].device.type == "cuda":
                return original(args, params, flatten=flatten)
            return build_flat_fp32_params(params)

        return build_fp32_params

    wrap(_FP16OptimizerMixin, "build_fp32_params", make)
    # stock declares it a classmethod and calls it as cls.build_fp32_params(args, params, flatten=...)
    _FP16OptimizerMixin.build_fp32_params = staticmethod(_FP16OptimizerMixin.__dict__["build_fp32_params"])


def install_multi_tensor_master_syncs():
    """FP16Optimizer's fp16 <-> flat fp32 syncs as one multi-tensor copy each, under --optimizer fused_adamw."""
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin

    from fairseq_npu.amp.fp32_master_params import sync_grads_to_fp32, sync_params_to_fp16
    from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW

    def applies(self) -> bool:
        # behind the plugin's optimizer name only: stock optimizers keep stock's copies
        return (self.has_flat_params and isinstance(self.fp32_optimizer, FairseqFusedAdamW)
                and hasattr(torch, "_foreach_copy_"))

    def make_grads(original):
        def _sync_fp16_grads_to_fp32(self):
            return sync_grads_to_fp32(self) if applies(self) else original(self)

        return _sync_fp16_grads_to_fp32

    def make_params(original):
        def _sync_fp32_params_to_fp16(self):
            return sync_params_to_fp16(self) if applies(self) else original(self)

        return _sync_fp32_params_to_fp16

    wrap(_FP16OptimizerMixin, "_sync_fp16_grads_to_fp32", make_grads)
    wrap(_FP16OptimizerMixin, "_sync_fp32_params_to_fp16", make_params)


def install_trainer_overflow():
    """fairseq.trainer's ``torch``: its overflow handler's ``torch.tensor(0.0).cuda()`` lands on the backend."""
    from fairseq import trainer

    from fairseq_npu.amp.overflow import TorchForTrainer

    if not isinstance(trainer.torch, TorchForTrainer):
        trainer.torch = TorchForTrainer(trainer.torch)


def install_trainer_clip_grad_norm():
    """Trainer.clip_grad_norm: the fsdp norm aggregation moves the norm to the trainer's device, not .cuda()."""
    from fairseq.distributed import utils as distributed_utils
    from fairseq.trainer import Trainer

    def make(original):
        def clip_grad_norm(self, clip_norm):
            if self.device.type == "cuda":
                return original(self, clip_norm)

            def agg_norm_fn(total_norm):
                total_norm = total_norm.to(self.device).float() ** 2
                total_norm = distributed_utils.all_reduce(total_norm, group=self.data_parallel_process_group)
                return total_norm ** 0.5

            should_agg_norm = self.is_fsdp and (
                self.data_parallel_process_group is not None or torch.distributed.is_initialized()
            )
            return self.optimizer.clip_grad_norm(clip_norm, aggregate_norm_fn=agg_norm_fn if should_agg_norm else None)

        return clip_grad_norm

    wrap(Trainer, "clip_grad_norm", make)


def install_overflow_count():
    """DynamicLossScaler.check_overflow (--fp16/--bf16, O2): count skipped steps, log them as ``overflows``."""
    from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler

    from fairseq_npu.amp.overflow import log_overflows

    def make(original):
        def check_overflow(self, grad_norm):
            try:
                original(self, grad_norm)
            except OverflowError:
                self.fairseq_npu_overflows = getattr(self, "fairseq_npu_overflows", 0) + 1
                log_overflows(self.fairseq_npu_overflows)
                raise
            log_overflows(getattr(self, "fairseq_npu_overflows", 0))

        return check_overflow

    wrap(DynamicLossScaler, "check_overflow", make)


def install_flags():
    """fairseq-train's parser gets --amp-dtype and the ModelZoo flags (--use-apex, --opt-level, ...)."""
    from fairseq import options

    from fairseq_npu.amp import flags

    def make(original):
        def add_optimization_args(parser, *args, **kwargs):
            group = original(parser, *args, **kwargs)
            flags.add_args(parser)
            return group

        return add_optimization_args

    wrap(options, "add_optimization_args", make)


def install_parse():
    """parse_args_and_arch: ModelZoo flags rewritten before parsing; --bf16 stops implying --tpu."""
    from fairseq import options

    from fairseq_npu.amp import flags

    def make(original):
        def parse_args_and_arch(parser, input_args=None, *args, **kwargs):
            argv = flags.translate(sys.argv[1:] if input_args is None else list(input_args))
            result = original(parser, argv, *args, **kwargs)
            flags.unset_bf16_tpu(result[0] if isinstance(result, tuple) else result, argv)
            return result

        return parse_args_and_arch

    wrap(options, "parse_args_and_arch", make)
