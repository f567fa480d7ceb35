"""Hooks on ``fairseq.trainer``: the Trainer's device, its batches, its cache, its gradient norm, its update, and the
overflow handler's ``torch.tensor(0.0).cuda()``. Every change to the Trainer is in this file."""

import torch
from omegaconf import open_dict

from fairseq_npu import cpu_allocator, device
from fairseq_npu.errors import TrainingDiverged
from fairseq_npu.amp.overflow import TorchForTrainer
from fairseq_npu.update import mode as update_mode


def init(original):
    def __init__(self, cfg, task, model, criterion, *args, **kwargs):
        backend = device.set_backend(force_cpu=True) if cfg.common.cpu else device.get()  # --cpu wins
        device.announce_for_run()
        if backend.type == "cpu" and torch.cuda.is_available() and not cfg.common.cpu:
            with open_dict(cfg):  # cpu chosen on a cuda machine: stock would still take cuda
                cfg.common.cpu = True
        if backend.type == "cpu" or cfg.common.cpu:
            cpu_allocator.apply_for(model)  # before the first update allocates its gradients
        original(self, cfg, task, model, criterion, *args, **kwargs)
        if backend.type == "npu" and not cfg.common.cpu:
            if cfg.distributed_training.distributed_world_size <= 1:
                backend.set_device(cfg.distributed_training.device_id)
            self.device = backend.device()
            if not self.use_distributed_wrapper:  # the DDP wrapper moves the model itself
                self._criterion = self._criterion.to(device=self.device)
                self._model = self._model.to(device=self.device)

    return __init__


def prepare_sample(original):
    from fairseq import utils

    def _prepare_sample(self, sample, is_dummy=False):
        sample, is_dummy_out = original(self, sample, is_dummy)
        if self.device.type not in ("cpu", "cuda") and sample:
            sample = utils.move_to_cuda(sample, device=self.device)  # a plain .to(device), any device
        return sample, is_dummy_out

    return _prepare_sample


def train_step(original):
    def train_step(self, samples, raise_oom=False):
        update = update_mode.for_trainer(self)
        if update is not None:  # --update-mode device / graph: the update object runs it (fairseq_npu/update/)
            return update.train_step(samples)
        first = self.get_num_updates() == 0
        try:
            result = original(self, samples, raise_oom)
        except Exception as err:
            # stock saves crash.pt, then reruns the batch under its NanDetector (whose hooks fail on torch >= 2.x
            # with StopIteration, raised while handling the FloatingPointError): one line says why the run stopped
            cause = err if isinstance(err, FloatingPointError) else err.__context__
            if isinstance(cause, FloatingPointError):
                raise TrainingDiverged(_diverged_line(self, cause, _nonfinite_gradients(self, samples))) from None
            raise
        if first and self.device.type == "npu":
            device.get().empty_cache()  # stock does this on cuda only, after the first update
        return result

    return train_step


def _nonfinite_gradients(trainer, samples) -> list:
    """The parameters whose gradients are not finite on ``samples``: the batch run once more, only once the run has
    failed (stock zeroed the gradients before its NanDetector rerun). Empty when that rerun fails too."""
    try:
        trainer.zero_grad()
        for sample in samples:
            sample, is_dummy = trainer._prepare_sample(sample)
            trainer.task.train_step(sample, trainer.model, trainer.criterion, trainer.optimizer,
                                    trainer.get_num_updates(), ignore_grad=is_dummy)
        return [name for name, p in trainer.model.named_parameters()
                if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
    except Exception:  # the line is still worth printing without the names
        return []


def _diverged_line(trainer, err, names) -> str:
    """fairseq's FloatingPointError (NaN/Inf gradients in fp32, the loss scale at --min-loss-scale) as one line
    naming the parameters whose gradients are not finite."""
    where = (f"; non-finite gradients in {len(names)} parameters: {', '.join(names[:3])}"
             + (", ..." if len(names) > 3 else "")) if names else ""
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return (f"training diverged at update {trainer.get_num_updates() + 1}: {reason}{where} "
            "(fairseq saved crash.pt); lower --lr or use fp32")


def state_dict(original):
    """Before fairseq reads the optimizer's state for a checkpoint, the update object's device counters (loss
    scale, skipped steps) go to the objects it reads them from."""

    def state_dict(self):
        update = update_mode.existing(self)
        if update is not None:
            update.read_out()
            if hasattr(update, "log_report"):
                update.log_report()
        return original(self)

    return state_dict


def clip_grad_norm(original):
    from fairseq.distributed import utils as distributed_utils

    def clip_grad_norm(self, clip_norm):
        if self.device.type == "cuda":
            return original(self, clip_norm)

        # Off cuda: a copy of stock's body (fairseq 0.12.3 as ve-fairseq packages it, Trainer.clip_grad_norm) with
        # the aggregated norm moved to the trainer's device instead of .cuda(); the norm is made inside the
        # optimizer, out of reach of a wrapper.
        def agg_norm_fn(total_norm):
            total_norm = total_norm.to(self.device).float() ** 2
            total_norm = distributed_utils.all_reduce(total_norm, group=self.data_parallel_process_group)
            return total_norm ** 0.5

        should_agg_norm = self.is_fsdp and (
            self.data_parallel_process_group is not None or torch.distributed.is_initialized()
        )
        return self.optimizer.clip_grad_norm(clip_norm, aggregate_norm_fn=agg_norm_fn if should_agg_norm else None)

    return clip_grad_norm


# fairseq.trainer's ``torch``: the module, with a ``torch.tensor`` whose ``.cuda()`` lands on the backend
torch_module = TorchForTrainer
