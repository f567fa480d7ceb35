"""``--optimizer fused_adamw``: fairseq's ``adam`` semantics on the fastest AdamW kernel of the device.

fairseq's ``adam`` is AdamW (decoupled weight decay applied to every parameter, no bias/LayerNorm exclusion),
but it runs either apex's CUDA FusedAdam or a per-parameter Python loop. This optimizer keeps the flags and the
maths of ``adam`` and hands the update to a fused kernel:

=========  ======================================================================================
impl       kernel
=========  ======================================================================================
npu        ``torch_npu.optim.NpuFusedAdamW`` (parameters, gradients and states combined into one
           contiguous buffer per dtype); when apex.amp drives the run at O1/O2 (``--use-apex``),
           Ascend apex's own ``apex.optimizers.NpuFusedAdamW``, the only kind apex combines itself
fused      ``torch.optim.AdamW(fused=True)`` (CUDA, and CPU on torch >= 2.4)
foreach    ``torch.optim.AdamW(foreach=True)`` (multi-tensor, one launch per op for all params)
forloop    ``torch.optim.AdamW(foreach=False, fused=False)`` (reference, always available)
=========  ======================================================================================

``auto`` picks npu on an NPU backend (then foreach), fused where torch has a fused kernel for the parameters'
device, else foreach; when the chosen kernel is missing (torch_npu without the fused optimizer, an old torch) it falls back
down that list and says so once in the log.

One difference of formula is removed: fairseq adds ``eps`` to ``sqrt(v)`` *before* the bias correction of the
second moment, torch (and torch_npu) after it. Feeding the kernel ``eps / sqrt(1 - beta2 ** step)`` at every
step makes the two identical, so a fairseq ``adam`` recipe (``--adam-eps 1e-6``) means the same thing here.

Weight decay is the kernel's own, inside its single pass over the weights: ``p * (1 - lr * wd)``, the decoupled
decay fairseq's ``adam`` applies as ``p - (lr * wd) * p``. The two round differently: the kernel rounds the factor
``1 - lr * wd`` to float32, in steps of 6e-8. Over the whole SST-2 recipe of the launch scripts (20,935 updates,
peak lr 1e-5, wd 0.1) that applies 0.5% more decay in all than exact arithmetic (fairseq's formula: 0.07% less);
a weight ends within 6e-4 of its exactly decayed value, relative (``tests/test_fused_adamw.py`` holds the
bound). A separate pass for fairseq's rounding cost 3 ms of a 72 ms CPU update (docs/benchmarks.md, finding 13).

The gradient norm fairseq computes (and logs as ``gnorm``) every update, and the scaling of the gradients by
1 / sample size, take multi-tensor ops too (``clip_grad_norm``, ``multiply_grads``,
fairseq_npu/optim/multi_tensor_grads.py): a handful of operators instead of about 600 for roberta_base, and no
device-to-host copies on an NPU.

The eps correction needs the step count; it is kept per parameter group (``fairseq_step``): every parameter of a group that is updated at all is updated at each step, as in fairseq
training where unused parameters (RoBERTa's LM head while fine-tuning) never receive a gradient.
"""

import ast
import importlib
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, List

import torch
from fairseq.dataclass import ChoiceEnum, FairseqDataclass
from fairseq.optim import FairseqOptimizer, register_optimizer
from omegaconf import II, OmegaConf

from fairseq_npu import device, precision
from fairseq_npu.errors import UsageError
from fairseq_npu.optim.multi_tensor_grads import clip_grad_norm_, multiply_grads_
from fairseq_npu.optimizer_state import check_state_shapes

logger = logging.getLogger(__name__)

IMPLS = ["auto", "npu", "fused", "foreach", "forloop"]


def parse_betas(value) -> tuple:
    """``--adam-betas`` as two floats. fairseq's string form ``'(0.9, 0.98)'`` is read with ast.literal_eval, which
    takes literals only: stock's ``eval`` ran whatever the flag held and answered a typo with a SyntaxError."""
    text = value
    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value)
    if isinstance(value, str):
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            value = None
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in value)):
        raise UsageError(f"--adam-betas {text!r}: expected two numbers in [0, 1), e.g. '(0.9, 0.98)'")
    return tuple(float(b) for b in value)


@dataclass
class FusedAdamWConfig(FairseqDataclass):
    adam_betas: Any = field(default=(0.9, 0.999), metadata={"help": "betas for Adam optimizer"})
    adam_eps: float = field(
        default=1e-8, metadata={"help": "epsilon for Adam optimizer, with fairseq adam's meaning (added to sqrt(v) "
                                        "before bias correction)"}
    )
    weight_decay: float = field(default=0.0, metadata={"help": "decoupled weight decay, applied to all parameters"})
    adamw_impl: ChoiceEnum(IMPLS) = field(
        default="auto",
        metadata={"help": "AdamW kernel: auto (npu on NPU, else torch fused, else foreach), npu (torch_npu / Ascend "
                          "apex NpuFusedAdamW), fused, foreach or forloop (torch.optim.AdamW variants)"},
    )
    lr: List[float] = II("optimization.lr")


def _npu_fused_adamw_module() -> str:
    """Where this run's NPU fused AdamW comes from.

    Under apex.amp at O1/O2: apex's own ``apex.optimizers.NpuFusedAdamW``. Ascend apex recognises only optimizers
    marked ``is_npu_fused_optimizer`` (its own NpuFused*, as the ModelZoo recipes use); given torch_npu's, apex
    and torch_npu would each re-point the gradients into a buffer of their own, or apex O2 would set the master
    gradients to None after each step, and the optimizer would update from stale gradients.
    Otherwise torch_npu's: apex's refuses to step outside amp.initialize, and apex refuses it at O0."""
    request = precision.apex_requested()
    if request is not None and request.opt_level in precision.COMBINE_GRAD_LEVELS:
        return "apex.optimizers"
    return "torch_npu.optim"


def _npu_fused_adamw_class():
    """The NPU fused AdamW for this run (see ``_npu_fused_adamw_module``); None when it is not importable."""
    try:
        return getattr(importlib.import_module(_npu_fused_adamw_module()), "NpuFusedAdamW")
    except (ImportError, AttributeError):
        return None


def grads_are_combined(optimizer) -> bool:
    """``optimizer`` updates from a buffer its gradients were combined into: torch_npu's fused optimizers
    (``is_fused_optimizer``, torch_npu/optim/npu_fused_optim_base.py), and any optimizer apex.amp combines
    (``is_npu_fused_optimizer`` or ``accelerate`` = combine_grad, Ascend apex). Its gradients must be zeroed in
    place, never set to None: a gradient tensor made by the next backward would not be in the buffer."""
    return any(getattr(optimizer, flag, None) is True
               for flag in ("is_fused_optimizer", "is_npu_fused_optimizer", "accelerate"))


def _fused_supported(params) -> bool:
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    devices = {p.device.type for p in params}
    return devices <= set(_get_fused_kernels_supported_devices()) and all(p.is_floating_point() for p in params)


def _flat_params(params) -> List[torch.Tensor]:
    out = []
    for item in params:
        out.extend(item["params"] if isinstance(item, dict) else [item])
    return out


def choose_impl(requested: str, params) -> str:
    """The kernel that will run: ``requested`` if it is available here, else the next one down, logged."""
    backend = device.get().type
    order = ["npu", "fused", "foreach", "forloop"]
    if requested == "auto":
        candidates = order if backend == "npu" else order[1:]
    else:
        candidates = order[order.index(requested):]
    flat = _flat_params(params)
    for impl in candidates:
        if impl == "npu" and _npu_fused_adamw_class() is None:
            why = f"{_npu_fused_adamw_module()}.NpuFusedAdamW is not importable"
        elif impl == "fused" and backend == "npu":
            why = "torch's fused AdamW is not relied on for npu tensors (torch_npu's NpuFusedAdamW is the fused one)"
        elif impl == "fused" and not _fused_supported(flat):
            why = f"torch {torch.__version__} has no fused AdamW for {sorted({p.device.type for p in flat})} tensors"
        else:
            return impl
        logger.warning(f"fused_adamw: --adamw-impl {impl} unavailable ({why}); falling back")
    return "forloop"


@register_optimizer("fused_adamw", dataclass=FusedAdamWConfig)
class FairseqFusedAdamW(FairseqOptimizer):
    """fairseq ``adam`` (AdamW semantics) running on a fused kernel; see the module docstring."""

    def __init__(self, cfg: FusedAdamWConfig, params):
        super().__init__(cfg)
        params = list(params)
        self.impl = choose_impl(str(cfg.adamw_impl), params)
        config = self.optimizer_config
        groups = params if params and isinstance(params[0], dict) else [{"params": params}]
        groups = [{**g, "fairseq_eps": g.get("fairseq_eps", config["fairseq_eps"]), "fairseq_step": 0}
                  for g in groups]
        kwargs = dict(lr=config["lr"], betas=config["betas"], eps=config["fairseq_eps"],
                      weight_decay=config["weight_decay"])
        if self.impl == "npu":
            self._optimizer = _npu_fused_adamw_class()(groups, **kwargs)
        else:
            flags = {"fused": dict(fused=True), "foreach": dict(foreach=True),
                     "forloop": dict(foreach=False, fused=False)}[self.impl]
            self._optimizer = torch.optim.AdamW(groups, **kwargs, **flags)
        logger.info(f"fused_adamw: using {self.impl} ({type(self._optimizer).__module__}."
                    f"{type(self._optimizer).__name__})")

    @property
    def optimizer_config(self):
        """Overrides applied to the param groups when a checkpoint is loaded (as fairseq adam's)."""
        return {
            "lr": self.cfg.lr[0] if isinstance(self.cfg.lr, Collection) else self.cfg.lr,
            "betas": parse_betas(self.cfg.adam_betas),
            "fairseq_eps": self.cfg.adam_eps,
            "weight_decay": self.cfg.weight_decay,
        }

    @property
    def supports_flat_params(self):
        return True  # pointwise update: one flat fp32 buffer (fairseq --fp16) is as good as many tensors

    @property
    def supports_memory_efficient_fp16(self):
        # torch's AdamW keeps its moments in the parameter dtype: fp16 moments are not what fairseq's
        # --memory-efficient-fp16 promises (fp32 state for fp16 weights), so that wrapper is refused.
        return False

    def _prepare_step(self):
        """fairseq's eps placement expressed as the kernel's eps, for this step."""
        for group in self.optimizer.param_groups:
            if any(p.grad is not None for p in group["params"]):
                self.advance_step(group)

    @staticmethod
    def advance_step(group) -> None:
        """Count a step of ``group`` and set the kernel's eps to fairseq's eps placement for it."""
        group["fairseq_step"] += 1
        beta2 = group["betas"][1]
        group["eps"] = group["fairseq_eps"] / math.sqrt(1.0 - beta2 ** group["fairseq_step"])

    def clip_grad_norm(self, max_norm, aggregate_norm_fn=None):
        """fairseq's norm and clipping in multi-tensor ops (fairseq_npu/optim/multi_tensor_grads.py)."""
        return clip_grad_norm_(self.params, max_norm, aggregate_norm_fn)

    def multiply_grads(self, c):
        """fairseq's gradient scaling, without a detach per gradient (fairseq_npu/optim/multi_tensor_grads.py)."""
        multiply_grads_(self.params, c)

    def step(self, closure=None, scale=1.0, groups=None):
        if scale != 1.0:
            self.multiply_grads(1.0 / scale)
        self._prepare_step()
        self.optimizer.step(closure)

    def zero_grad(self):
        if grads_are_combined(self.optimizer):
            # every .grad is a view of the combined buffer the optimizer reads: zero it in place; stock
            # fairseq's `p.grad = None` would detach the grads from what it updates
            self.optimizer.zero_grad(set_to_none=False)
        else:
            self.optimizer.zero_grad(set_to_none=True)

    def load_state_dict(self, state_dict, optimizer_overrides=None):
        super().load_state_dict(state_dict, optimizer_overrides)
        # the fused kernels trust the shapes: a moment of another size is a segmentation fault at the first step
        check_state_shapes(self.optimizer)
        # a checkpoint written by the other kind of kernel stores "step" as int (npu) or tensor (torch)
        for state in self.optimizer.state.values():
            if "step" in state:
                if self.impl == "npu" and torch.is_tensor(state["step"]):
                    state["step"] = int(state["step"].item())
                elif self.impl != "npu" and not torch.is_tensor(state["step"]):
                    state["step"] = torch.tensor(float(state["step"]), dtype=torch.float32)
        for group in self.optimizer.param_groups:
            group.setdefault("fairseq_eps", self.cfg.adam_eps)
            if "fairseq_weight_decay" in group:
                # written before the kernel decayed: the decay was kept beside a kernel weight_decay of 0
                group["weight_decay"] = group.pop("fairseq_weight_decay")
            group.setdefault("fairseq_step", self._max_state_step(group))

    def _max_state_step(self, group) -> int:
        steps = [self.optimizer.state[p].get("step", 0) for p in group["params"] if p in self.optimizer.state]
        return int(max((float(s) for s in steps), default=0))
