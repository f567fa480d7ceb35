"""Put a finished output folder in place of an older one so that a reader always finds one of the two, complete.

A run builds ``DEST/.TASK-bin.tmp-HOST-PID-XXXX`` and, when it is complete, swaps it with ``DEST/TASK-bin``:

* on Linux with one ``renameat2(RENAME_EXCHANGE)`` call: the two paths trade places atomically, so ``TASK-bin`` is
  at every instant either the old folder or the new one; the old one, now under the temporary name, is removed;
* elsewhere (or on a file system without that call) with two renames, ``TASK-bin`` -> ``.TASK-bin.old-HOST-PID``,
  then the new folder -> ``TASK-bin``. Between the two, ``TASK-bin`` is missing for a moment.

Every run starts with :func:`recover`: a run killed between the two renames left its ``.old-`` folder and no
``TASK-bin``; that folder is renamed back. Hidden ``.tmp-`` / ``.old-`` folders of runs that are no longer alive
(their process id is gone from this host) are removed. Folders of live runs, and of other hosts sharing the file
system, are left alone.
"""

import ctypes
import errno
import logging
import os
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Optional

logger = logging.getLogger("fairseq_npu.preprocess")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_KINDS = ("tmp", "old")


def _host() -> str:
    return socket.gethostname().replace("-", "_") or "host"  # no dashes: the name is split at them


def _tag() -> str:
    return f"{_host()}-{os.getpid()}"


def make_temp_dir(final: Path) -> Path:
    """An empty hidden folder beside ``final`` to build the new output in (usual permissions, not mkdtemp's 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-{_tag()}-", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths atomically; False where the system or the file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (AttributeError, OSError):
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def swap_into_place(tmp: Path, final: Path) -> None:
    """Make the finished ``tmp`` the folder at ``final``; the previous ``final`` is removed once replaced."""
    if not (final.exists() or final.is_symlink()):
        os.replace(tmp, final)
        return
    if _exchange(tmp, final):
        _remove(tmp)  # holds the previous output now
        return
    old = final.parent / f".{final.name}.old-{_tag()}"
    os.replace(final, old)  # a kill here leaves `old` and no `final`: the next run's recover() renames it back
    os.replace(tmp, final)
    _remove(old)


def _remove(path: Path) -> None:
    """Delete a previous output: a folder, or a symlink that stood at TASK-bin (not what it points to)."""
    if path.is_symlink():
        path.unlink()
    else:
        shutil.rmtree(path, ignore_errors=True)


def _owner(name: str, final: Path) -> Optional[tuple]:
    """(kind, host, pid) of a hidden folder of ours, from its name; pid None if it cannot be read (older names)."""
    prefix = f".{final.name}."
    if not name.startswith(prefix):
        return None
    kind, _, rest = name[len(prefix):].partition("-")
    if kind not in _KINDS or not rest:
        return None
    parts = rest.split("-")
    if len(parts) >= 2 and parts[1].isdigit():
        return kind, parts[0], int(parts[1])
    return kind, None, None  # written before names carried the owner: no run of this version is using it


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


def recover(final: Path) -> None:
    """Restore ``final`` from a killed run's ``.old-`` folder if it is missing; remove dead runs' hidden folders."""
    if not final.parent.is_dir():
        return
    host = _host()
    stale = []
    for path in sorted(final.parent.iterdir()):
        owner = _owner(path.name, final)
        if owner is None or not (path.is_dir() or path.is_symlink()):
            continue
        kind, owner_host, pid = owner
        if owner_host is not None and (owner_host != host or pid == os.getpid() or _alive(pid)):
            continue  # a live run here, or a run on another host: not ours to judge
        stale.append((kind, path))
    stale.sort(key=lambda item: item[1].lstat().st_mtime, reverse=True)  # the newest old output wins
    for kind, path in stale:
        if kind == "old" and not (final.exists() or final.is_symlink()):
            legacy = path / final.name  # older versions moved TASK-bin into a .old- folder
            os.replace(legacy if legacy.is_dir() else path, final)
            logger.warning("%s: restored from %s, left by an interrupted run", final, path.name)
            if path.exists() or path.is_symlink():
                _remove(path)
        else:
            _remove(path)
            logger.info("%s: removed %s, left by an interrupted run", final.parent, path.name)
