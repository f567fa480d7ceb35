"""Stand-in for apex.amp (see ../../README.md): initialize and scale_loss, recording every call."""

import contextlib
import types

import torch

from ._amp_state import _amp_state

CALLS = []  # ("initialize", kwargs) and ("scale_loss", loss scale) in call order
ACCEPTS_COMBINE_GRAD = False  # True: behave as Ascend's build (takes combine_grad)
MASTER_WEIGHT_LEVELS = ("O2", "O3")


class LossScaler:
    def __init__(self, loss_scale):
        self.dynamic = loss_scale == "dynamic"
        self._loss_scale = 2.0 ** 16 if self.dynamic else float(loss_scale)

    def loss_scale(self):
        return self._loss_scale


def reset():
    CALLS.clear()
    _amp_state.loss_scalers.clear()


def initialize(models, optimizers=None, enabled=True, opt_level="O1", loss_scale=None, **kwargs):
    if "combine_grad" in kwargs and not ACCEPTS_COMBINE_GRAD:
        raise TypeError("initialize() got an unexpected keyword argument 'combine_grad'")
    if hasattr(optimizers, "_amp_stash"):
        raise RuntimeError("A given optimizer should only be passed through amp.initialize once.")
    CALLS.append(("initialize", dict(models=models, optimizers=optimizers, opt_level=opt_level,
                                     loss_scale=loss_scale, **kwargs)))
    default = "dynamic" if opt_level in ("O1", "O2") else 1.0
    _amp_state.loss_scalers[:] = [LossScaler(default if loss_scale is None else loss_scale)]
    optimizers._amp_stash = types.SimpleNamespace(already_patched=False)
    if opt_level in MASTER_WEIGHT_LEVELS:
        plain_step = optimizers.step

        def step(self):  # apex O2: no closure argument
            return plain_step()

        def zero_grad(self):  # apex O2: zeroes the model grads in place, takes no set_to_none
            for group in self.param_groups:
                for p in group["params"]:
                    if p.grad is not None:
                        p.grad.detach_()
                        p.grad.zero_()

        optimizers.step = types.MethodType(step, optimizers)
        optimizers.zero_grad = types.MethodType(zero_grad, optimizers)
    return models, optimizers


@contextlib.contextmanager
def scale_loss(loss, optimizers, loss_id=0, model=None, delay_unscale=False, delay_overflow_check=False):
    if not _amp_state.loss_scalers:
        raise RuntimeError("Invoked 'with amp.scale_loss`, but internal Amp state has not been initialized.")
    scaler = _amp_state.loss_scalers[loss_id]
    scale = scaler.loss_scale()
    CALLS.append(("scale_loss", scale))
    # gradients already accumulated (update_freq > 1) are unscaled: keep them aside while this pass adds its own
    params = [p for group in optimizers.param_groups for p in group["params"]]
    stashed = [p.grad for p in params]
    for p in params:
        p.grad = None
    yield loss.float() * scale
    overflow = False
    for p, old in zip(params, stashed):
        if p.grad is not None:
            p.grad.div_(scale)
            overflow = overflow or not bool(torch.isfinite(p.grad).all())
            if old is not None:
                p.grad.add_(old)
        elif old is not None:
            p.grad = old
    if overflow and scaler.dynamic:
        scaler._loss_scale /= 2.0
        if not optimizers._amp_stash.already_patched:
            real_step = optimizers.step

            def skip_step(closure=None):
                CALLS.append(("skip_step", scaler.loss_scale()))
                optimizers.step = real_step
                optimizers._amp_stash.already_patched = False

            optimizers.step = skip_step
            optimizers._amp_stash.already_patched = True


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
