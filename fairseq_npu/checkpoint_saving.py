"""Every checkpoint file fairseq writes appears atomically.

fairseq writes the first file of a save atomically (``torch_persistent_save``: ``FILE.tmp``, then a rename), then
copies it to the other names of that save (``checkpoint_best.pt``, ``checkpoint_last.pt``) with
``PathManager.copy``, which is ``shutil.copyfile`` onto the destination itself. A process killed during such a copy
leaves a truncated ``checkpoint_last.pt``, and the next run tries to resume from it. Here the copy goes to
``DEST.tmp`` beside the destination (fairseq's own temporary name) and is renamed over it, so a reader sees the
old file or the new one, never a part. Paths that need an ioPath handler (remote storage) keep stock behaviour.
"""

import os
import shutil


class AtomicCopyPathManager:
    """fairseq's ``PathManager`` as ``fairseq.checkpoint_utils`` sees it: the same, except that ``copy`` of a local
    file is atomic."""

    def __init__(self, path_manager):
        self._path_manager = path_manager

    def __getattr__(self, name):
        return getattr(self._path_manager, name)

    def copy(self, src_path: str, dst_path: str, overwrite: bool = False) -> bool:
        pm = self._path_manager
        if pm.path_requires_pathmanager(src_path) or pm.path_requires_pathmanager(dst_path):
            return pm.copy(src_path, dst_path, overwrite=overwrite)
        if not overwrite and os.path.exists(dst_path):
            return False  # as ioPath answers
        tmp = dst_path + ".tmp"
        shutil.copyfile(src_path, tmp)
        os.replace(tmp, dst_path)
        return True
