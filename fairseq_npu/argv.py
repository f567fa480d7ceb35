"""Reading a flag from a raw argument list, as argparse would see it (used before or around parsing).

Elements that are not strings (fairseq's own tests pass ``None`` for an absent value) are skipped, as stock
``parse_args_and_arch`` accepts them too.
"""

from typing import Optional, Sequence


def has_flag(args: Sequence, flag: str) -> bool:
    """``flag`` is in ``args``, as ``--flag`` or ``--flag=v``."""
    return any(isinstance(a, str) and (a == flag or a.startswith(flag + "=")) for a in args)


def flag_value(args: Sequence, flag: str) -> Optional[str]:
    """Last value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``); None when absent."""
    value = None
    for i, arg in enumerate(args):
        if not isinstance(arg, str):
            continue
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value
