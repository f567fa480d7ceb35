"""Loss scaling and skip bookkeeping that live on the device: no update reads a value back to the host.

One object per run holds, as device tensors:

* ``scale`` and ``growth_tracker``: dynamic loss scaling for float16 compute (torch's rule, through the same kernel
  ``torch.amp.GradScaler`` uses, ``torch._amp_update_scale_``: back off on a non-finite gradient, grow after
  ``window`` finite updates in a row), floored at ``--threshold-loss-scale``;
* ``found_inf``: 1.0 when this update's gradients are not finite (the optimizer kernel then skips the step);
* ``overflows``: steps skipped so far; ``consecutive``: steps skipped in a row, for the divergence check.

Without loss scaling (fp32, bfloat16) ``scale`` stays 1 and the skip bookkeeping still runs: a non-finite
gradient skips the step in every precision. The host reads ``scale``, ``overflows`` and ``consecutive`` only when
fairseq logs (``read``), and when a checkpoint is written.
"""

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class LossScaleConfig:
    enabled: bool  # float16 compute: scale the loss
    init_scale: float = 2.0 ** 7
    window: int = 2000  # finite updates in a row before the scale doubles
    threshold: Optional[float] = None  # --threshold-loss-scale: the scale never goes below it
    min_scale: float = 1e-4  # --min-loss-scale: below it the run has diverged


@dataclass(frozen=True)
class Reading:
    """What the host learns at a log step."""

    scale: float
    overflows: int
    consecutive: int


class DeviceLossScale:
    GROWTH, BACKOFF = 2.0, 0.5  # fairseq's and torch's factors

    def __init__(self, config: LossScaleConfig, device, scale: Optional[torch.Tensor] = None,
                 growth_tracker: Optional[torch.Tensor] = None):
        """``scale`` / ``growth_tracker``: existing device tensors to update in place (a GradScaler's own, so its
        state_dict stays the truth); new ones otherwise."""
        self.config = config
        self.scale = scale if scale is not None else torch.full((), config.init_scale if config.enabled else 1.0,
                                                                dtype=torch.float32, device=device)
        self.growth_tracker = (growth_tracker if growth_tracker is not None
                               else torch.zeros((), dtype=torch.int32, device=device))
        self.found_inf = torch.zeros((), dtype=torch.float32, device=device)
        self.overflows = torch.zeros((), dtype=torch.float32, device=device)
        self.consecutive = torch.zeros((), dtype=torch.float32, device=device)

    def scaled(self, loss: torch.Tensor) -> torch.Tensor:
        return loss * self.scale if self.config.enabled else loss

    def gradient_factor(self, sample_size_factor: float) -> torch.Tensor:
        """What the gradients are multiplied by before the norm: 1 / (scale * sample size), a device tensor."""
        return self.scale.reciprocal() * sample_size_factor

    def check(self, grad_norm: torch.Tensor) -> None:
        """Record whether this update's gradients are finite (their norm is)."""
        self.found_inf.copy_(torch.logical_not(torch.isfinite(grad_norm)))

    def after_step(self) -> None:
        """Count a skipped step, and move the scale as torch's GradScaler does."""
        self.overflows.add_(self.found_inf)
        self.consecutive.add_(self.found_inf).mul_(self.found_inf)
        if self.config.enabled:
            torch._amp_update_scale_(self.scale, self.growth_tracker, self.found_inf, self.GROWTH, self.BACKOFF,
                                     int(self.config.window))
            if self.config.threshold is not None:
                self.scale.clamp_(min=float(self.config.threshold))

    def read(self) -> Reading:
        """The host copy: one transfer, made only when fairseq logs or saves."""
        values = torch.stack([self.scale, self.overflows, self.consecutive]).tolist()
        return Reading(scale=values[0], overflows=int(values[1]), consecutive=int(values[2]))
