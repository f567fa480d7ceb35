"""Run a command tied to its parent: when the parent dies, even by SIGKILL, the command gets SIGTERM.

    python fairseq_npu/launch/tied.py PROGRAM [ARGS...]

test/common.sh starts the trainer (or torchrun) through this, and torchrun starts each worker through it, so that
a launch script or a torchrun agent that is killed takes its trainer or its workers with it instead of leaving
them training as orphans. Linux's PR_SET_PDEATHSIG is set, then PROGRAM replaces this process (exec): the setting
survives the exec, and nothing of this module stays in memory. Run by path: it imports only the standard library.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def tie_to_parent(sig: int = signal.SIGTERM) -> bool:
    """Ask the kernel to send ``sig`` when the parent dies; False where that cannot be done (not Linux)."""
    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0


def main(argv) -> None:
    if not argv:
        print("usage: tied.py PROGRAM [ARGS...]", file=sys.stderr)
        raise SystemExit(2)
    parent = os.getppid()
    tie_to_parent()
    if os.getppid() != parent:  # the parent died before the tie was made: nobody is left to stop us
        raise SystemExit(128 + signal.SIGTERM)
    try:
        os.execvp(argv[0], argv)
    except OSError as err:
        print(f"tied.py: error: cannot run {argv[0]}: {err.strerror}", file=sys.stderr)
        raise SystemExit(127) from None


if __name__ == "__main__":
    main(sys.argv[1:])
