"""What happens when a mixed-precision step overflows, off cuda.

``Trainer.train_step`` catches the ``OverflowError`` of ``--fp16`` (skip the step, lower the scale) and then
runs ``grad_norm = torch.tensor(0.0).cuda()``, which raises on cpu and npu the first time a step is skipped.
fairseq.trainer gets ``TorchForTrainer`` as its ``torch``: the same module, except that ``torch.tensor``
(called nowhere else in that file) returns a tensor whose ``.cuda()`` goes to the selected backend's device.
"""

import types

import torch
from fairseq.logging import metrics

from fairseq_npu import device


class _BackendTensor(torch.Tensor):
    """A plain tensor whose ``.cuda()`` means "to the selected device"; operations return plain tensors."""

    __torch_function__ = torch._C._disabled_torch_function_impl

    def cuda(self, *args, **kwargs):
        plain = self.as_subclass(torch.Tensor)
        backend = device.get()
        if backend.type == "cuda":
            return plain.cuda(*args, **kwargs)
        return plain.to(backend.device())


class TorchForTrainer(types.ModuleType):
    """Stands in for ``torch`` inside fairseq.trainer (see the module docstring)."""

    def __init__(self, torch_module):
        super().__init__("torch")
        self._torch = torch_module

    def __getattr__(self, name):
        return getattr(self._torch, name)

    def tensor(self, *args, **kwargs):
        return self._torch.tensor(*args, **kwargs).as_subclass(_BackendTensor)

    tensor.__fairseq_npu_original__ = torch.tensor  # marks the hook as installed (fairseq_npu.hooks.is_hooked)


def log_overflows(count: int) -> None:
    """The running number of steps skipped for overflow, shown beside loss_scale in the training log."""
    metrics.log_scalar("overflows", count, priority=710, round=0, weight=0)
