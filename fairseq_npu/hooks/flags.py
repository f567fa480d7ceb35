"""Hooks on fairseq's command line (``fairseq.options``): the device flag and the mixed-precision flags.

The flags themselves are defined by ``fairseq_npu.device`` and ``fairseq_npu.amp.flags``; these wrappers add them
to the parsers fairseq builds and rewrite the Ascend ModelZoo spellings before fairseq parses.
"""

import argparse
import contextlib
import sys

from fairseq_npu import device, environment, errors
from fairseq_npu.amp import flags
from fairseq_npu.argv import has_flag
from fairseq_npu.update import mode as update_mode


class _DeviceTypeAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        device.set_backend(value)  # exported through the environment, so spawned workers agree


def add_distributed_training_args(original):
    def add_distributed_training_args(parser, *args, **kwargs):
        group = original(parser, *args, **kwargs)
        if not any("--device-type" in a.option_strings for a in parser._actions):
            group.add_argument(
                "--device-type", choices=device.DEVICE_TYPES, default=None, action=_DeviceTypeAction,
                help=f"fairseq_npu: device to train on (default: ${device.ENV_VAR} or auto: npu > cuda > cpu)",
            )
            # stock defaults to nccl with cuda and gloo without, so an npu run would get gloo; "auto" is
            # resolved to the device's backend (hccl / nccl / gloo) when the process group is created
            parser.set_defaults(distributed_backend="auto")
        return group

    return add_distributed_training_args


def add_optimization_args(original):
    def add_optimization_args(parser, *args, **kwargs):
        group = original(parser, *args, **kwargs)
        flags.add_args(parser)
        update_mode.add_args(parser)
        return group

    return add_optimization_args


def parse_args_and_arch(original):
    def parse_args_and_arch(parser, input_args=None, *args, **kwargs):
        # a FAIRSEQ_NPU_* variable the plugin cannot take: one line and exit code 2, as a bad flag
        errors.exit_on_usage_error(environment.check_environment)
        argv = flags.translate(sys.argv[1:] if input_args is None else list(input_args))
        # fairseq's --cpu wins over --device-type and $FAIRSEQ_NPU_DEVICE, which are resolved while parsing
        with device.cpu_wins() if has_flag(argv, "--cpu") else contextlib.nullcontext():
            result = original(parser, argv, *args, **kwargs)
        flags.unset_bf16_tpu(result[0] if isinstance(result, tuple) else result, argv)
        return result

    return parse_args_and_arch
