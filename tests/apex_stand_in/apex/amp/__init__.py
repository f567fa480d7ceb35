"""Stand-in for apex.amp (see ../../README.md): initialize and scale_loss, recording every call.

Rules and their sources (NVIDIA/apex ``apex/amp/*.py``, and Ascend/apex ``patch/npu.patch`` for the Ascend build):

* ``initialize`` refuses an optimizer already initialized (_process_optimizer.py); NVIDIA's build (the default
  here) has no ``combine_grad`` parameter; after ``use_ascend_build()`` it has one (Ascend's signature), and
  ``combine_grad=True`` outside O1/O2 raises (frontend.py, ``warn_or_err``), and so does an NPU fused optimizer
  (``is_npu_fused_optimizer``, apex.optimizers.NpuFused*) outside O1/O2 (_process_optimizer.py). Any other
  optimizer gets ``is_npu_fused_optimizer = False`` and ``accelerate = combine_grad``.
* Combined gradients (``accelerate`` or an NPU fused optimizer; _process_optimizer.py ``combined_init_*``): at the
  end of the first backward the gradients of the optimizer's parameters are combined into one buffer (each
  ``p.grad`` becomes a view of it), and with an NPU fused optimizer the parameters too. From then on a backward
  accumulates into that buffer, which is unscaled in place, and the patched ``zero_grad()`` (no arguments) zeroes
  it in place.
* Otherwise every ``scale_loss`` sets ``p.grad = None`` before the backward and afterwards gives each parameter a
  new gradient tensor (unscaled, plus the one accumulated before), as ``prepare_backward_*`` /
  ``post_backward_*`` do.
* O2 (master weights) replaces ``step`` by ``step(closure=None)`` that raises for a closure and, without combined
  gradients, sets the master gradients to None after the step; ``zero_grad`` takes no arguments. Here the
  weights stay fp32 (cpu) and are their own masters, so "master gradients" are the optimizer's ``p.grad``.
* ``scale_loss`` at a static scale of 1.0 without master weights just yields the loss (handle.py); a dynamic
  scale halves on inf/nan and arms a one-shot skip of ``optimizer.step`` (``_amp_stash.already_patched``).
"""

import contextlib
import types

import torch

from ._amp_state import _amp_state

CALLS = []  # ("initialize", kwargs) and ("scale_loss", loss scale) in call order
MASTER_WEIGHT_LEVELS = ("O2", "O3")
COMBINE_LEVELS = ("O1", "O2")


class LossScaler:
    def __init__(self, loss_scale):
        self.dynamic = loss_scale == "dynamic"
        self._loss_scale = 2.0 ** 16 if self.dynamic else float(loss_scale)

    def loss_scale(self):
        return self._loss_scale


def reset():
    CALLS.clear()
    globals()["initialize"] = _nvidia_initialize
    _amp_state.loss_scalers.clear()


def _params(optimizer):
    return [p for group in optimizer.param_groups for p in group["params"]]


def _combines(optimizer) -> bool:
    return bool(optimizer.accelerate or optimizer.is_npu_fused_optimizer)


@torch.no_grad()
def _combine(tensors):
    """One buffer holding ``tensors`` back to back, each re-pointed into it (apex.contrib.combine_tensors)."""
    if not tensors:
        return None
    combined = torch.zeros(sum(t.numel() for t in tensors), dtype=tensors[0].dtype)
    offset = 0
    for t in tensors:
        piece = combined[offset:offset + t.numel()].view(t.shape)
        piece.copy_(t)
        t.data = piece
        offset += t.numel()
    return combined


def combined_init(optimizer):
    """The first backward's end: combine the gradients (and, for an NPU fused optimizer, the parameters)."""
    stash = optimizer._amp_stash
    if stash.already_combined or not _combines(optimizer):
        return
    with_grad = [p for p in _params(optimizer) if p.grad is not None and p.requires_grad]
    stash.combined_params_list = with_grad
    stash.grad_combine = _combine([p.grad for p in with_grad])
    if optimizer.is_npu_fused_optimizer:
        stash.param_combine = _combine(with_grad)
    stash.already_combined = True


def initialize(models, optimizers=None, enabled=True, opt_level="O1", loss_scale=None, **kwargs):
    """NVIDIA apex's signature (no combine_grad); ``use_ascend_build()`` replaces it by Ascend's."""
    if "combine_grad" in kwargs:
        raise TypeError("initialize() got an unexpected keyword argument 'combine_grad'")
    return _initialize(models, optimizers, opt_level, loss_scale, None, kwargs)


def ascend_initialize(models, optimizers=None, enabled=True, opt_level="O1", loss_scale=None, combine_grad=None,
                      **kwargs):
    return _initialize(models, optimizers, opt_level, loss_scale, combine_grad,
                       dict(kwargs, **({} if combine_grad is None else {"combine_grad": combine_grad})))


def use_ascend_build():
    """From now on ``apex.amp.initialize`` is Ascend's (takes combine_grad); undone by ``reset()``."""
    globals()["initialize"] = ascend_initialize


def _initialize(models, optimizers, opt_level, loss_scale, combine_grad, kwargs):
    if combine_grad and opt_level not in COMBINE_LEVELS:
        raise RuntimeError("Currently, combine_grad=True or check_combined_tensors=True should only be set by "
                           "selecting opt_level='O1' or opt_level='O2'.")
    if hasattr(optimizers, "_amp_stash"):
        raise RuntimeError("A given optimizer should only be passed through amp.initialize once.")
    if getattr(optimizers, "is_npu_fused_optimizer", None) is not True:
        optimizers.is_npu_fused_optimizer = False
    if optimizers.is_npu_fused_optimizer and opt_level not in COMBINE_LEVELS:
        raise RuntimeError("Currently, npu fused optimizer can only be used when opt_level='O1' or opt_level='O2'")
    optimizers.accelerate = combine_grad
    CALLS.append(("initialize", dict(models=models, optimizers=optimizers, opt_level=opt_level,
                                     loss_scale=loss_scale, **kwargs)))
    default = "dynamic" if opt_level in ("O1", "O2") else 1.0
    _amp_state.loss_scalers[:] = [LossScaler(default if loss_scale is None else loss_scale)]
    _amp_state.master_weights = opt_level in MASTER_WEIGHT_LEVELS
    optimizers._amp_stash = types.SimpleNamespace(already_patched=False, already_combined=False,
                                                  grad_combine=None, param_combine=None, combined_params_list=[])
    plain_zero_grad = optimizers.zero_grad

    def zero_grad(self):  # apex's patched zero_grad takes no set_to_none
        stash = self._amp_stash
        if _combines(self):
            if stash.already_combined:
                stash.grad_combine.zero_()
            elif not _amp_state.master_weights:
                plain_zero_grad()
            else:
                for p in _params(self):
                    if p.grad is not None:
                        p.grad.detach_()
                        p.grad.zero_()
            return
        for p in _params(self):  # O2: model grads zeroed, master grads dropped (here the same tensors)
            p.grad = None

    if _amp_state.master_weights:
        plain_step = optimizers.step

        def step(self, closure=None):
            if closure is not None:
                raise RuntimeError("Currently, Amp does not support closure use with optimizers.")
            result = plain_step()
            if _combines(self):
                if self._amp_stash.grad_combine is not None:
                    self._amp_stash.grad_combine.zero_()
            else:
                for p in _params(self):
                    p.grad = None  # "Clear the master grads that wouldn't be zeroed by model.zero_grad()"
            return result

        optimizers.step = types.MethodType(step, optimizers)
    if _amp_state.master_weights or _combines(optimizers):
        optimizers.zero_grad = types.MethodType(zero_grad, optimizers)
    if _combines(optimizers):  # Ascend apex: the combined master gradients, once combined

        def get_optimizer_combined_grads(self):
            return [self._amp_stash.grad_combine] if self._amp_stash.already_combined else []

        optimizers.get_optimizer_combined_grads = types.MethodType(get_optimizer_combined_grads, optimizers)
    return models, optimizers


@contextlib.contextmanager
def scale_loss(loss, optimizers, loss_id=0, model=None, delay_unscale=False, delay_overflow_check=False):
    if not _amp_state.loss_scalers:
        raise RuntimeError("Invoked 'with amp.scale_loss`, but internal Amp state has not been initialized.")
    scaler = _amp_state.loss_scalers[loss_id]
    scale = scaler.loss_scale()
    CALLS.append(("scale_loss", scale))
    if not _amp_state.master_weights and not scaler.dynamic and scale == 1.0:
        yield loss.float()
        return
    stash = optimizers._amp_stash
    params = _params(optimizers)
    combined = _combines(optimizers) and stash.already_combined
    if combined:  # keep what accumulated so far aside, let the backward write into the zeroed buffer
        stashed_buffer = stash.grad_combine.clone()
        stash.grad_combine.zero_()
    else:
        stashed = [p.grad for p in params]
        for p in params:
            p.grad = None
    yield loss.float() * scale
    with torch.no_grad():
        if combined:
            stash.grad_combine.div_(scale).add_(stashed_buffer)
            overflow = not bool(torch.isfinite(stash.grad_combine).all())
        else:
            overflow = False
            for p, old in zip(params, stashed):
                if p.grad is not None:  # the backward's fresh tensor, unscaled in place, plus what was there
                    p.grad.div_(scale)
                    overflow = overflow or not bool(torch.isfinite(p.grad).all())
                    if old is not None:
                        p.grad.add_(old)
                elif old is not None:
                    p.grad = old
            combined_init(optimizers)
    if overflow and scaler.dynamic:
        scaler._loss_scale /= 2.0
        if not stash.already_patched:
            real_step = optimizers.step

            def skip_step(closure=None):
                CALLS.append(("skip_step", scaler.loss_scale()))
                optimizers.step = real_step
                stash.already_patched = False

            optimizers.step = skip_step
            stash.already_patched = True


def state_dict():
    return {f"loss_scaler{i}": {"loss_scale": s.loss_scale(), "unskipped": 0}
            for i, s in enumerate(_amp_state.loss_scalers)}


def load_state_dict(state):
    # apex: one entry per loss scaler, restored in order; a count mismatch is an error there too
    if len(state) != len(_amp_state.loss_scalers):
        raise RuntimeError(f"Warning:  state_dict contains {len(state)} entries, while "
                           f"{len(_amp_state.loss_scalers)} loss_scalers are used")
    CALLS.append(("load_state_dict", dict(state)))
    for scaler, (_, saved) in zip(_amp_state.loss_scalers, sorted(state.items())):
        scaler._loss_scale = saved["loss_scale"]


_nvidia_initialize = initialize
