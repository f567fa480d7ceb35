"""``--fp16`` / ``--bf16`` (O2) and ``--memory-efficient-fp16/bf16`` resume exactly: the state that fairseq's
half-precision optimizers keep outside their checkpoint is added to it.

- ``FP16Optimizer`` steps fp32 master copies of the half-precision model, but a checkpoint holds only the model
  (the half weights, widened to fp32 when saved) and the fp32 optimizer's state. A resumed run rebuilds the
  masters from the half weights (``w.half().float()``), so every update after the resume differs from the
  uninterrupted run's.
- ``DynamicLossScaler`` saves its scale, not its counters (iteration, last overflow, last rescale): a resumed run
  would raise the scale at other updates than the uninterrupted one.

Both are saved under ``STATE_KEY`` in the optimizer state (``last_optimizer_state`` of the checkpoint) and restored
after the stock load. The masters are saved in model-parameter order and shape, so flat (``--fp16``) and per-tensor
(``--bf16``, ``--fp16-no-flatten-grads``) layouts load into each other. A checkpoint without them (stock, or
written before) loads as before: masters from the model weights, the scaler's counters from zero.
"""

import logging
from typing import List, Optional

import torch

logger = logging.getLogger(__name__)

STATE_KEY = "fairseq_npu_half_precision"
# fairseq's DynamicLossScaler counters; the last two are the device update's (fairseq_npu/update/), which keeps
# the scale on the device and copies it here before a checkpoint is written
_SCALER_COUNTERS = ("_iter", "_last_overflow_iter", "_last_rescale_iter", "_overflows_since_rescale",
                    "fairseq_npu_growth_tracker", "fairseq_npu_overflows")


def master_views(optimizer) -> Optional[List[torch.Tensor]]:
    """The fp32 masters of an FP16Optimizer as tensors shaped like its half-precision parameters, sharing the
    masters' memory (None for an optimizer without masters, or with one flat copy per pipeline device)."""
    fp32 = getattr(optimizer, "fp32_params", None)
    params = getattr(optimizer, "fp16_params", None)
    if fp32 is None or params is None:
        return None
    if isinstance(fp32, dict):
        fp32 = list(fp32.values())
        if len(fp32) != 1:
            return None
        fp32 = fp32[0]
    if torch.is_tensor(fp32):
        pieces = torch.split(fp32.data, [p.numel() for p in params])
        return [piece.view(p.shape) for piece, p in zip(pieces, params)]
    return [p32.data for p32 in fp32]


def extra_state(optimizer) -> dict:
    """What ``state_dict`` adds under STATE_KEY."""
    state = {}
    masters = master_views(optimizer)
    if masters is not None:
        state["fp32_params"] = masters
    scaler = getattr(optimizer, "scaler", None)
    if scaler is not None:
        state["loss_scaler"] = {name: getattr(scaler, name) for name in _SCALER_COUNTERS if hasattr(scaler, name)}
    return state


def restore(optimizer, state: Optional[dict]) -> None:
    """Put saved masters and scaler counters back, after the stock ``load_state_dict``."""
    masters = master_views(optimizer)
    if state is None:
        if masters is not None:
            logger.info("fairseq_npu: the checkpoint has no fp32 master weights (stock fairseq does not save them); "
                        "they are rebuilt from the half-precision model weights, so this resume is not exact")
        return
    saved = state.get("fp32_params")
    if masters is not None and saved is not None:
        if len(saved) != len(masters) or any(s.shape != m.shape for s, m in zip(saved, masters)):
            logger.warning("fairseq_npu: the checkpoint's fp32 master weights do not match this model's parameters; "
                           "they are rebuilt from the half-precision model weights")
        else:
            with torch.no_grad():
                for master, value in zip(masters, saved):
                    master.copy_(value)
    scaler = getattr(optimizer, "scaler", None)
    if scaler is not None:
        for name, value in state.get("loss_scaler", {}).items():
            if name in _SCALER_COUNTERS:
                setattr(scaler, name, value)
