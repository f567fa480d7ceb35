"""Reading a flag's value from a raw argument list, as argparse would keep it (used before or around parsing)."""

from typing import Optional, Sequence


def flag_value(args: Sequence[str], flag: str) -> Optional[str]:
    """Last value of ``flag`` in ``args`` (``--flag v`` or ``--flag=v``); None when absent."""
    value = None
    for i, arg in enumerate(args):
        if arg == flag and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(flag + "="):
            value = arg[len(flag) + 1:]
    return value
