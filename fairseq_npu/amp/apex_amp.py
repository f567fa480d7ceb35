"""``--use-apex`` with apex installed: apex.amp drives mixed precision inside stock fairseq's Trainer.

The Ascend ModelZoo fork of fairseq called ``amp.initialize(model, optimizer, opt_level, loss_scale,
combine_grad=...)`` once the Trainer had its model and optimizer, and ran every backward pass as
``with amp.scale_loss(loss, optimizer) as scaled_loss: scaled_loss.backward()``. This module does the same from
outside, through hooks on these (listed in ``fairseq_npu.hooks.HOOKS``, wrappers in fairseq_npu/hooks/):

* ``Trainer._build_optimizer``: after the stock build, ``amp.initialize`` on the model and the torch optimizer
  inside fairseq's optimizer; the returned objects replace the ones fairseq holds. fairseq builds the optimizer
  again when it loads a checkpoint, and apex cannot initialize twice, so the apex-initialized optimizer is kept.
* ``FairseqOptimizer.backward``: the backward pass through ``amp.scale_loss`` (scaled on entry; on exit apex
  unscales into the gradients fairseq's optimizer steps on, and arms a skip of the next step on overflow).
* ``FairseqOptimizer.clip_grad_norm`` (the first thing the Trainer does with the gradients after they are
  reduced): a step apex is going to skip becomes fairseq's ``OverflowError``, so the Trainer drops the
  gradients, does not count an update, and logs ``overflows=`` beside ``loss_scale=``.
* ``FairseqOptimizer.state_dict`` / ``load_state_dict``: apex's loss scalers (``amp.state_dict()``) travel in the
  optimizer state of every checkpoint under ``STATE_KEY``, so a resumed run goes on with the scale it had
  reached instead of starting again from 2**16 and overflowing its way down.

The run itself stays fp32 as far as fairseq knows (no ``--fp16`` / ``--amp``): apex casts the model (O2) or
patches torch functions (O1). Everything steps aside unless ``fairseq_npu.amp.flags.translate`` decided, while
parsing the command line, that apex drives this run; the decision travels in ``$FAIRSEQ_NPU_APEX`` like the
other mixed-precision flags, so spawned workers agree.
"""

import gc
import importlib
import inspect
import logging
from dataclasses import dataclass, field
from typing import List, Optional, Union

from fairseq_npu import device
# who asked for apex is decided while parsing and lives with the rest of the FAIRSEQ_NPU_* contract (precision.py,
# fairseq-free, which optim/ reads too)
from fairseq_npu.precision import APEX_ENV, COMBINE_GRAD_LEVELS, ApexRequest  # noqa: F401
from fairseq_npu.precision import apex_requested as requested  # noqa: F401
from fairseq_npu.precision import request_apex as request  # noqa: F401

logger = logging.getLogger(__name__)

STATE_ATTR = "fairseq_npu_apex"  # on the fairseq optimizer apex was initialized with
STATE_KEY = "fairseq_npu_apex_amp"  # apex.amp.state_dict() inside the optimizer state of a checkpoint


@dataclass
class ApexState:
    """What the hooks keep on a fairseq optimizer that apex.amp drives."""

    amp: object  # the apex.amp module
    request: ApexRequest
    param_ids: List[int]  # the parameters apex was initialized with (the model's, and the criterion's)
    overflows: int = 0
    initialize_kwargs: dict = field(default_factory=dict)


def _amp_module():
    return importlib.import_module("apex.amp")


def loss_scale(amp) -> Optional[float]:
    """apex's current loss scale (loss scaler 0), where this build exposes it."""
    try:
        state = importlib.import_module(amp.__name__ + "._amp_state")._amp_state
        return float(state.loss_scalers[0].loss_scale())
    except Exception:
        return None


def skip_pending(optimizer) -> bool:
    """apex found inf/nan gradients in the last scale_loss and replaced optimizer.step by a one-shot skip."""
    return bool(getattr(getattr(optimizer, "_amp_stash", None), "already_patched", False))


def _drop_unaccepted(method, names):
    """``method`` (an apex-patched bound method), callable with the arguments fairseq passes.

    apex O2 replaces ``step`` and ``zero_grad`` by methods that take no arguments, while fairseq's optimizers
    call ``step(closure)`` and ``zero_grad(set_to_none=...)``; arguments the method does not take are dropped
    (a real closure is refused, as apex itself does).
    """
    try:
        parameters = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return method
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return method
    if all(name in parameters for name in names):
        return method

    def call(*args, **kwargs):
        given = dict(zip(names, args), **kwargs)
        if given.get("closure") is not None and "closure" not in parameters:
            raise RuntimeError("--use-apex: apex.amp does not support optimizer closures")
        return method(**{k: v for k, v in given.items() if k in parameters})

    call.__name__ = getattr(method, "__name__", "call")
    return call


def _combine_grad(amp, torch_optimizer, opt_level: str) -> bool:
    """Ascend apex's combine_grad=True, as the ModelZoo scripts passed it with apex's NPU fused optimizers: only
    where this apex build takes the argument, on an npu backend, at O1/O2 (apex raises for it at O0), with an
    optimizer apex combines itself (``is_npu_fused_optimizer``: fused_adamw's apex.optimizers.NpuFusedAdamW).
    With torch_npu's own fused optimizer apex and torch_npu would each re-point the gradients into their buffer."""
    try:
        accepts = "combine_grad" in inspect.signature(amp.initialize).parameters
    except (TypeError, ValueError):
        accepts = False
    return (accepts and device.get().type == "npu" and opt_level in COMBINE_GRAD_LEVELS
            and getattr(torch_optimizer, "is_npu_fused_optimizer", None) is True)


def _loss_scale_for(req: ApexRequest, torch_optimizer) -> Optional[Union[float, str]]:
    """amp.initialize's loss_scale: the one asked for, else apex's default for the level (None: not passed).

    At O0 apex's default is a static 1.0, for which scale_loss leaves the gradients alone. Any other O0 scale
    makes apex set every ``p.grad`` to None before each backward and hand out new gradient tensors after it,
    which an optimizer updating from a combined gradient buffer (torch_npu's fused ones) never reads."""
    if req.loss_scale is None:
        return None if req.opt_level == "O0" else "dynamic"
    combined = getattr(torch_optimizer, "is_fused_optimizer", None) is True
    if req.opt_level == "O0" and combined and req.loss_scale != 1.0:
        raise ValueError(f"--use-apex --opt-level O0 --loss-scale {req.loss_scale}: with "
                         f"{type(torch_optimizer).__name__} (gradients combined into one buffer) apex would re-create "
                         f"the gradients the optimizer reads; O0 is fp32, drop --loss-scale")
    return req.loss_scale


def trainable_param_ids(trainer) -> List[int]:
    params = list(trainer._model.parameters()) + list(trainer._criterion.parameters())
    return [id(p) for p in params if p.requires_grad]


def _refuse_unsupported(trainer) -> None:
    cfg = trainer.cfg
    unsupported = [
        (trainer.is_fsdp, "--ddp-backend fully_sharded"),
        (cfg.optimization.use_bmuf, "--use-bmuf"),
        (cfg.distributed_training.zero_sharding != "none", f"--zero-sharding {cfg.distributed_training.zero_sharding}"),
        (cfg.ema.store_ema, "--store-ema"),
    ]
    for bad, flag in unsupported:
        if bad:
            raise ValueError(f"--use-apex cannot be combined with {flag} (apex.amp owns the model and optimizer); "
                             f"drop --use-apex to run the same precision through torch.amp")


def initialize(trainer, req: ApexRequest) -> None:
    """amp.initialize on the trainer's model and the torch optimizer of its fairseq optimizer (built just now)."""
    _refuse_unsupported(trainer)
    amp = _amp_module()
    fairseq_optimizer = trainer._optimizer
    kwargs = dict(opt_level=req.opt_level)
    loss_scale = _loss_scale_for(req, fairseq_optimizer.optimizer)
    if loss_scale is not None:
        kwargs["loss_scale"] = loss_scale
    if _combine_grad(amp, fairseq_optimizer.optimizer, req.opt_level):
        kwargs["combine_grad"] = True
    model, optimizer = amp.initialize(trainer._model, fairseq_optimizer.optimizer, **kwargs)
    for name, names in (("step", ("closure",)), ("zero_grad", ("set_to_none",))):
        setattr(optimizer, name, _drop_unaccepted(getattr(optimizer, name), names))
    wrapped_before = trainer._wrapped_model is not None and trainer._wrapped_model is not trainer._model
    trainer._model = model
    fairseq_optimizer.optimizer = optimizer
    if trainer._wrapped_model is not None:
        # the model was wrapped (DDP) before the optimizer existed (a --restore-file load): apex wants the
        # wrapper built around the model it initialized (O2 casts the weights, which DDP's buckets depend on)
        trainer._wrapped_model = None
        if wrapped_before:
            gc.collect()  # the old wrapper's reducer unhooks the parameters when it is freed
    setattr(fairseq_optimizer, STATE_ATTR, ApexState(amp, req, trainable_param_ids(trainer), 0, kwargs))
    logger.info(f"fairseq_npu: apex.amp.initialize({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})")


def state_of(fairseq_optimizer) -> Optional[ApexState]:
    return getattr(fairseq_optimizer, STATE_ATTR, None)
