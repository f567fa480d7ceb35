"""``--update-mode stock|device|graph``: who runs an update of fairseq's Trainer.

* ``stock`` (the default of plain fairseq-train): fairseq's own ``Trainer.train_step``, unchanged.
* ``device``: ``DeviceUpdate`` (update/device_update.py), the whole update on the device with no host sync.
* ``graph``: the same update, captured once per batch shape in a CUDA graph and replayed
  (update/graphs.py); eager ``device`` updates where the device or the batch does not allow it.

The launch scripts' fast preset asks for ``graph`` on cuda and ``device`` elsewhere (fairseq_npu/launch/recipes.py).
Like ``--amp-dtype``, the choice travels in ``$FAIRSEQ_NPU_UPDATE_MODE`` (fairseq's configs drop flags they do not
know, and spawned workers parse nothing).
"""

import argparse
import logging
import os

logger = logging.getLogger(__name__)

ENV = "FAIRSEQ_NPU_UPDATE_MODE"
MODES = ("stock", "device", "graph")
_ATTR = "_fairseq_npu_update"  # on the Trainer: the update object, or the reason it has none


class _ModeAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        os.environ[ENV] = value


def add_args(parser) -> None:
    if any("--update-mode" in a.option_strings for a in parser._actions):
        return
    parser.add_argument(
        "--update-mode", choices=MODES, default=None, action=_ModeAction,
        help="fairseq_npu: stock (fairseq's train_step), device (one update on the device, no host sync; needs "
             "--optimizer fused_adamw) or graph (device, captured per batch shape in a CUDA graph on cuda)")


def requested() -> str:
    """The mode of this process; a bad ``$FAIRSEQ_NPU_UPDATE_MODE`` is a one-line error naming it."""
    value = os.environ.get(ENV, "stock") or "stock"
    if value not in MODES:
        from fairseq_npu.errors import UsageError

        raise UsageError(f"${ENV}={value!r}: expected one of {', '.join(MODES)}")
    return value


def for_trainer(trainer):
    """The update object of ``trainer`` (built on its first update), or None: fairseq's own train_step."""
    held = trainer.__dict__.get(_ATTR)
    if held is None:
        held = trainer.__dict__[_ATTR] = _build(trainer)
    return None if isinstance(held, str) else held


def existing(trainer):
    """The update object if one was built (a checkpoint written before the first update has none)."""
    held = trainer.__dict__.get(_ATTR)
    return None if held is None or isinstance(held, str) else held


def _build(trainer):
    mode = requested()
    if mode == "stock":
        return "stock"
    from fairseq_npu.update.device_update import DeviceUpdate, unsupported_reason

    why = unsupported_reason(trainer)
    if why is not None:
        logger.warning(f"update: --update-mode {mode} keeps fairseq's train_step for this run: {why}")
        return why
    update = DeviceUpdate(trainer)
    if mode == "device":
        return update
    from fairseq_npu.update.graphs import GraphedUpdate

    task_cfg = trainer.task.cfg
    static_batch = str(getattr(task_cfg, "static_batch", "off"))
    return GraphedUpdate(
        update, batch_size=trainer.cfg.dataset.batch_size if static_batch != "off" else None,
        buckets=getattr(trainer.task, "buckets", None),
        criterion_name=str(getattr(trainer.cfg.criterion, "_name", "")),
    )
