"""The plugin's error for input a user must fix (a flag, a file, a checkpoint), and how commands report it.

A leaf module (standard library only). ``fairseq-train`` (and every fairseq command run through
``fairseq.distributed.utils.call_main``) reports a ``UsageError`` as ``PROG: error: <message>`` on stderr with exit
code 2, the way argparse reports a bad flag, instead of a traceback; fairseq-npu-evaluate and fairseq-npu-predict
do the same. Messages name the flag or the file.
"""

import os
import sys


class UsageError(ValueError):
    """Bad input: a flag, a file or a checkpoint the user must fix. The message is one line."""


class TrainingDiverged(UsageError):
    """Training stopped because every update was being skipped (non-finite gradients or loss): the recipe (learning
    rate, precision) must change. Reported like a UsageError: one line, exit code 2."""


# skipped updates in a row (non-finite gradients) after which a run has diverged: every later one would be skipped
# too. The device update (fairseq_npu/update/) and the --amp optimizer of stock's update both stop there.
MAX_CONSECUTIVE_SKIPS = 100


def _prog() -> str:
    """The command's name as argparse prints it; ``python -m fairseq_cli.train`` reads as fairseq-train."""
    path = sys.argv[0] if sys.argv and sys.argv[0] else "fairseq"
    name = os.path.basename(path)
    if name.endswith(".py") and os.path.basename(os.path.dirname(path)) == "fairseq_cli":
        return "fairseq-" + name[:-3].replace("_", "-")
    return name


def exit_on_usage_error(main, *args, **kwargs):
    """Run ``main(*args, **kwargs)``; a UsageError ends the process with its one-line message and exit code 2."""
    try:
        return main(*args, **kwargs)
    except UsageError as err:
        sys.stdout.flush()  # fairseq logs to stdout: the error line comes after them
        print(f"{_prog()}: error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
