"""Mixed-precision command-line flags: ``--amp-dtype`` and the Ascend ModelZoo / apex flags.

fairseq's dataclass configs drop flags they do not know, so these act while the command line is parsed
(exported through the environment, like ``--device-type``, so spawned workers agree; the variables are listed in
fairseq_npu.precision):

* ``--amp-dtype auto|float16|bfloat16`` picks the autocast dtype of ``--amp`` (O1). auto: float16 on cuda and
  npu (bfloat16 where the device has no float16), bfloat16 on cpu.
* ModelZoo's ``--use-apex --opt-level O0|O1|O2 --loss-scale N|dynamic``: with apex.amp importable (and no explicit
  --fp16/--bf16/--amp) apex drives the run (fairseq_npu.amp.apex_amp; the run stays fp32 for fairseq); otherwise
  they are rewritten into this plugin's flags before fairseq parses (see ``translate``), the same precision recipe
  run by torch.amp, with a one-line notice. ``--use-npu-adam`` is rewritten in both cases.
* ``--bf16`` no longer implies ``--tpu`` (stock sets it unconditionally, and the Trainer then looks for an XLA
  device); an explicit ``--tpu`` keeps the stock meaning.
"""

import argparse
import importlib
import logging
import os
import sys
from typing import List

import torch

from fairseq_npu import precision
from fairseq_npu.amp import apex_amp
from fairseq_npu.argv import flag_value, has_flag
from fairseq_npu.precision import AMP_DTYPE_ENV, DEFAULT_OPT_LEVEL, OPT_LEVELS

logger = logging.getLogger(__name__)

AMP_DTYPES = {name: getattr(torch, name) for name in precision.AMP_DTYPES}
PRECISION_FLAGS = precision.PRECISION_FLAGS
NEVER = 2 ** 30  # a scale window no run reaches: apex's static loss scale never grows


class _AmpDtypeAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        os.environ[AMP_DTYPE_ENV] = value


def _loss_scale(value: str) -> str:
    if value == "dynamic":
        return value
    try:
        scale = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--loss-scale must be a number or 'dynamic', got {value!r}") from None
    if scale <= 0 or scale != int(scale):
        raise argparse.ArgumentTypeError(f"--loss-scale must be a positive whole number or 'dynamic', got {value!r}")
    return value


def add_args(parser) -> None:
    """The flags above, in their own group of fairseq-train's parser (once)."""
    if any("--amp-dtype" in a.option_strings for a in parser._actions):
        return
    group = parser.add_argument_group("fairseq_npu mixed precision (also accepts the Ascend ModelZoo flags)")
    group.add_argument("--amp-dtype", choices=("auto", *AMP_DTYPES), default=None, action=_AmpDtypeAction,
                       help="fairseq_npu: autocast dtype for --amp (default auto: float16 on cuda/npu, "
                            "bfloat16 on cpu); bfloat16 runs without loss scaling")
    group.add_argument("--use-apex", action="store_true",
                       help="fairseq_npu: ModelZoo flag; apex.amp drives --opt-level when apex is installed, "
                            "else the same precision through torch.amp (O1 -> --amp --amp-dtype float16, "
                            "O2 -> --fp16)")
    group.add_argument("--opt-level", choices=OPT_LEVELS, default=DEFAULT_OPT_LEVEL,
                       help="fairseq_npu: apex opt level with --use-apex (O0 fp32, O1 autocast, O2 half weights "
                            "with fp32 master weights)")
    group.add_argument("--loss-scale", type=_loss_scale, default=None,
                       help="fairseq_npu: ModelZoo flag; with apex, amp.initialize's loss_scale (default dynamic); "
                            "without, a number N starts the loss scale at N and never raises it "
                            "(--fp16-init-scale N --fp16-scale-window 2**30; unlike apex, overflows still skip the "
                            "step and halve it), 'dynamic' keeps fairseq's dynamic scaling")
    group.add_argument("--use-npu-adam", action="store_true",
                       help="fairseq_npu: ModelZoo flag; --optimizer adam runs as --optimizer fused_adamw "
                            "(NpuFusedAdamW on npu)")


def apex_available() -> bool:
    try:
        importlib.import_module("apex.amp")
        return True
    except Exception:  # not installed, or an unrelated PyPI package called apex
        return False


def translate(argv: List[str]) -> List[str]:
    """Rewrite the ModelZoo flags into this plugin's; returns the new argv, logs one line per rewrite."""
    argv = list(argv)
    notes = []
    if has_flag(argv, "--use-npu-adam"):
        optimizer = flag_value(argv, "--optimizer")
        if optimizer == "adam":
            argv = [("--optimizer=fused_adamw" if a == "--optimizer=adam" else a) for a in argv]
            for i, arg in enumerate(argv[:-1]):
                if arg == "--optimizer" and argv[i + 1] == "adam":
                    argv[i + 1] = "fused_adamw"
            notes.append("--use-npu-adam: --optimizer adam runs as --optimizer fused_adamw")
        elif optimizer != "fused_adamw":
            raise ValueError(f"--use-npu-adam applies to --optimizer adam, got --optimizer {optimizer}")

    # stock's --amp reads its initial scale from --fp16-init-scale and --amp-init-scale is never used as one: a user
    # who names --amp-init-scale gets that scale (--fp16-init-scale, when given too, wins for --fp16 as in stock)
    amp_init_scale = flag_value(argv, "--amp-init-scale")
    if amp_init_scale is not None and not has_flag(argv, "--fp16-init-scale") and has_flag(argv, "--amp"):
        argv += ["--fp16-init-scale", amp_init_scale]
        notes.append(f"--amp-init-scale {amp_init_scale}: the --amp loss scale starts at {amp_init_scale}")

    loss_scale = flag_value(argv, "--loss-scale")
    # apex.amp runs the ModelZoo recipe itself when it is installed and no precision flag overrides it
    use_apex = has_flag(argv, "--use-apex") and not any(has_flag(argv, f) for f in PRECISION_FLAGS) and apex_available()
    apex_amp.request((flag_value(argv, "--opt-level") or DEFAULT_OPT_LEVEL) if use_apex else None, loss_scale)
    if use_apex:
        level = flag_value(argv, "--opt-level") or DEFAULT_OPT_LEVEL
        notes.append(f"--use-apex --opt-level {level}: apex.amp drives mixed precision "
                     f"(loss scale {loss_scale or ('1.0' if level == 'O0' else 'dynamic')})")
    elif loss_scale not in (None, "dynamic"):
        scale = str(int(float(loss_scale)))
        argv += ["--fp16-init-scale", scale]
        if not has_flag(argv, "--fp16-scale-window") and not has_flag(argv, "--amp-scale-window"):
            argv += ["--fp16-scale-window", str(NEVER)]
        notes.append(f"--loss-scale {loss_scale}: loss scale starts at {scale} and is never raised")

    if has_flag(argv, "--use-apex") and not use_apex:
        level = flag_value(argv, "--opt-level") or DEFAULT_OPT_LEVEL
        if level != "O0":
            mode = "--amp" if level == "O1" else "--fp16"
            explicit = [f for f in PRECISION_FLAGS if has_flag(argv, f)]
            if not explicit:
                argv.append(mode)
                if level == "O1" and not has_flag(argv, "--amp-dtype"):
                    argv += ["--amp-dtype", "float16"]  # apex O1 is fp16 autocast
            if explicit:  # apex or not, an explicit precision flag wins over the --opt-level mapping
                notes.append(f"{explicit[0]} given: --use-apex --opt-level {level} runs as {explicit[0]} "
                             f"with torch.amp")
            else:
                notes.append(f"apex is not installed: --use-apex --opt-level {level} runs as {mode} with torch.amp")
    for note in notes:
        print(f"fairseq_npu: {note}", file=sys.stderr)
    if has_flag(argv, "--amp-dtype") and not has_flag(argv, "--amp"):  # only --amp (torch.amp O1) reads it
        logger.warning(f"--amp-dtype {flag_value(argv, '--amp-dtype')} has no effect without --amp (ignored)")
    return argv


def unset_bf16_tpu(args, argv: List[str]):
    """Stock parse_args_and_arch sets tpu=True for every --bf16 run; keep tpu only when asked for."""
    if getattr(args, "bf16", False) and getattr(args, "tpu", False) and not has_flag(argv, "--tpu"):
        args.tpu = False
    return args
