"""A loaded optimizer state must fit the parameters it is loaded onto, checked before the first step.

torch's ``Optimizer.load_state_dict`` pairs the saved state with the parameters by position and checks only their
number. A checkpoint of a model of another shape (a 2-class head resumed with ``--num-classes 3``: fairseq drops
the saved head and builds a new one) then hands a 2-row moment to a 3-row parameter. Stock ``adam`` fails at the
first step with a bare size RuntimeError; a fused kernel (``fused_adamw``) reads past the buffer and the process
dies of a segmentation fault. Here such a state is one UsageError naming the parameter.

Names: the optimizer sees only tensors. While fairseq loads a checkpoint, the hook on
``checkpoint_utils.load_checkpoint`` (fairseq_npu/hooks/checkpoints.py) makes the model's parameter names known
(:func:`parameter_names`); elsewhere a parameter is named by its position.
"""

import contextlib
import contextvars
from typing import Dict, Optional

import torch

from fairseq_npu.errors import UsageError

_NAMES: contextvars.ContextVar[Optional[Dict[int, str]]] = contextvars.ContextVar("fairseq_npu_param_names",
                                                                                  default=None)


class OptimizerStateMismatch(UsageError):
    """The saved optimizer state does not fit the parameters; the message is one line naming one of them."""


@contextlib.contextmanager
def parameter_names(*modules):
    """Within the block, parameters of ``modules`` are named in optimizer-state errors."""
    names = {id(p): name for module in modules if module is not None for name, p in module.named_parameters()}
    token = _NAMES.set(names)
    try:
        yield
    finally:
        _NAMES.reset(token)


def check_state_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Raise OptimizerStateMismatch if a per-parameter tensor of ``optimizer.state`` (a moment, ...) has another
    number of elements than its parameter. Scalars (a step count) are not per-parameter and are skipped."""
    names = _NAMES.get() or {}
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group["params"]):
            for key, value in optimizer.state.get(p, {}).items():
                if not torch.is_tensor(value) or value.dim() == 0 or value.numel() == p.numel():
                    continue
                name = names.get(id(p), f"#{i} of parameter group {g}")
                raise OptimizerStateMismatch(
                    f"its optimizer state does not fit the model: parameter {name} has shape "
                    f"{list(p.shape)}, its saved {key} {list(value.shape)} (the checkpoint was trained with another "
                    "model shape, e.g. --num-classes); resume with the flags it was trained with, or pass "
                    "--reset-optimizer to start a new optimizer state")
