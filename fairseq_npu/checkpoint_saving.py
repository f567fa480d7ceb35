"""Every checkpoint file fairseq writes appears atomically, and a write that fails says so in one line.

fairseq writes the first file of a save atomically (``torch_persistent_save``: ``FILE.tmp``, then a rename), then
copies it to the other names of that save (``checkpoint_best.pt``, ``checkpoint_last.pt``) with
``PathManager.copy``, which is ``shutil.copyfile`` onto the destination itself. A process killed during such a copy
leaves a truncated ``checkpoint_last.pt``, and the next run tries to resume from it. Here the copy goes to
``DEST.tmp`` beside the destination (fairseq's own temporary name) and is renamed over it, so a reader sees the
old file or the new one, never a part. Paths that need an ioPath handler (remote storage) keep stock behaviour.

A write that fails (a full disk, a read-only folder) removes its ``.tmp`` and raises :class:`CheckpointSaveError`,
one line naming the file and the system's reason: the files of earlier saves are untouched, since only the
``.tmp`` was being written. Stock retried the write three times (5 s of sleeps), logged a traceback, and left the
partial ``.tmp`` behind. ``--save-dir`` itself is checked once at start-up (:func:`check_save_dir`).
"""

import os
import shutil

from fairseq_npu.errors import UsageError


class CheckpointSaveError(UsageError):
    """A checkpoint (or the save directory's probe file) could not be written; the message is one line."""


def _save_error(path: str, err: OSError) -> CheckpointSaveError:
    directory = os.path.dirname(os.path.abspath(path))
    return CheckpointSaveError(f"cannot write checkpoint {path}: {err.strerror or err}; no partial file is left, "
                               f"and the checkpoints already in {directory} are unchanged")


def write_atomically(path: str, write_to) -> None:
    """``write_to(PATH.tmp)``, renamed over ``path`` when complete; on failure the ``.tmp`` is removed."""
    tmp = path + ".tmp"
    try:
        write_to(tmp)
        os.replace(tmp, path)
    except OSError as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise _save_error(path, err) from None


def check_save_dir(save_dir: str) -> None:
    """Raise CheckpointSaveError unless files can be created in ``save_dir`` (created if missing), as fairseq's
    ``verify_checkpoint_directory`` probes it, but in one line instead of a warning and a traceback."""
    probe = os.path.join(save_dir, "dummy")  # fairseq's own probe name
    try:
        os.makedirs(save_dir, exist_ok=True)
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as err:
        raise CheckpointSaveError(f"--save-dir {save_dir}: cannot write checkpoints there "
                                  f"({err.strerror or err})") from None


class AtomicCopyPathManager:
    """fairseq's ``PathManager`` as ``fairseq.checkpoint_utils`` sees it: the same, except that ``copy`` of a local
    file is atomic."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def is_local(self, path: str) -> bool:
        return not self._path_manager.path_requires_pathmanager(path)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        pm = self._path_manager
        if not (self.is_local(src_path) and self.is_local(dst_path)):
            return pm.copy(src_path, dst_path, overwrite=overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False  # as ioPath answers
        write_atomically(dst_path, lambda tmp: shutil.copyfile(src_path, tmp))
        return True


def save_atomically(obj, filename: str) -> None:
    """fairseq's ``torch_persistent_save`` for a local file: one attempt, ``FILE.tmp`` then a rename."""
    import torch

    def save(tmp):
        with open(tmp, "wb") as f:  # a file object, as stock saves: the same bytes
            torch.save(obj, f)

    write_atomically(filename, save)
