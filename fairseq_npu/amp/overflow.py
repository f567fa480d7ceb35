"""What happens when a mixed-precision step overflows, off cuda.

``Trainer.train_step`` catches the ``OverflowError`` of ``--fp16`` (skip the step, lower the scale) and then
runs ``grad_norm = torch.tensor(0.0).cuda()``, which raises on cpu and npu the first time a step is skipped.
fairseq.trainer gets ``TorchForTrainer`` as its ``torch``: the same module, except that ``torch.tensor``
(called nowhere else in that file) returns a tensor whose ``.cuda()`` goes to the selected backend's device.
"""

import torch
from fairseq.logging import metrics

from fairseq_npu import device
from fairseq_npu.patching import ModuleProxy


class _BackendTensor(torch.Tensor):
    """A plain tensor whose ``.cuda()`` means "to the selected device"; operations return plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def cuda(self, *args, **kwargs):
        plain = self.as_subclass(torch.Tensor)
        backend = device.get()
        if backend.type == "cuda":
            return plain.cuda(*args, **kwargs)
        return plain.to(backend.device())


class TorchForTrainer(ModuleProxy):
    """Stands in for ``torch`` inside fairseq.trainer (see the module docstring)."""

    def tensor(self, *args, **kwargs):
        return self._module.tensor(*args, **kwargs).as_subclass(_BackendTensor)


def log_overflows(count: int) -> None:
    """The running number of steps skipped for overflow, shown beside loss_scale in the training log."""
    metrics.log_scalar("overflows", count, priority=710, round=0, weight=0)
