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
import os
from dataclasses import dataclass, field
from typing import List, Optional, Union

import torch

from fairseq_npu import device

logger = logging.getLogger(__name__)

APEX_ENV = "FAIRSEQ_NPU_APEX"  # "<opt level> <loss scale>", e.g. "O2 128.0" or "O1 dynamic"; unset: not driven
STATE_ATTR = "fairseq_npu_apex"  # on the fairseq optimizer apex was initialized with
STATE_KEY = "fairseq_npu_apex_amp"  # apex.amp.state_dict() inside the optimizer state of a checkpoint


@dataclass(frozen=True)
class ApexRequest:
    opt_level: str
    loss_scale: Union[float, str]  # a number (static scale) or "dynamic"


@dataclass
class ApexState:
    """What the hooks keep on a fairseq optimizer that apex.amp drives."""

    amp: object  # the apex.amp module
    request: ApexRequest
    param_ids: List[int]  # the parameters apex was initialized with (the model's, and the criterion's)
    overflows: int = 0
    initialize_kwargs: dict = field(default_factory=dict)


def request(opt_level: Optional[str], loss_scale: Optional[str] = None) -> None:
    """Record for this process (and its spawned workers) that apex drives the run; ``None`` clears it."""
    if opt_level is None:
        os.environ.pop(APEX_ENV, None)
        return
    try:
        scale = "dynamic" if loss_scale in (None, "dynamic") else str(float(loss_scale))
    except ValueError:
        scale = "dynamic"  # argparse rejects the value with its own message right after
    os.environ[APEX_ENV] = f"{opt_level} {scale}"


def requested() -> Optional[ApexRequest]:
    value = os.environ.get(APEX_ENV, "").split()
    if len(value) != 2:
        return None
    level, scale = value
    return ApexRequest(level, scale if scale == "dynamic" else float(scale))


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


def _combine_grad(amp, fairseq_optimizer) -> bool:
    """Ascend apex's combine_grad=True (as the ModelZoo scripts passed it with the NPU fused Adam): only where this
    apex build takes the argument, on an npu backend, with fused_adamw running its NPU kernel."""
    try:
        accepts = "combine_grad" in inspect.signature(amp.initialize).parameters
    except (TypeError, ValueError):
        accepts = False
    return accepts and device.get().type == "npu" and getattr(fairseq_optimizer, "impl", None) == "npu"


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
    kwargs = dict(opt_level=req.opt_level, loss_scale=req.loss_scale)
    if _combine_grad(amp, fairseq_optimizer):
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
