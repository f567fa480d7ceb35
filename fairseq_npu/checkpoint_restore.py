"""What ``fairseq-train`` resumes from: an explicitly named checkpoint must exist.

Stock fairseq starts from scratch, with one INFO line, when the file it would restore is absent. That is right
for its default, ``--restore-file checkpoint_last.pt`` in ``--save-dir`` (absent on a first launch), and wrong for
a path the user typed: a typo in a pretrained model's path trained a model from scratch that reported success.
Checked before fairseq resolves the paths, with the same rules (checkpoint suffix, ``--finetune-from-model`` only
on a first launch, i.e. without a ``checkpoint_last.pt`` to resume).

One exception keeps a stock idiom working: a bare file name with no folder (``--restore-file x.pt``) that does not
exist is how fairseq's own tests force a fresh start in a save dir that already holds a ``checkpoint_last.pt``. That
case trains from scratch as stock does, with a WARNING line naming the file. A path with a folder in it, as a
pretrained model's always has (and as the launch scripts always pass, made absolute), must exist.
"""

import logging
import os
import re
from typing import Optional

from fairseq_npu.errors import UsageError

DEFAULT_RESTORE_FILE = "checkpoint_last.pt"  # fairseq's default, resolved inside --save-dir

logger = logging.getLogger(__name__)


def _relative_note(path: str) -> str:
    return "" if os.path.isabs(path) else f" (relative to the working directory {os.getcwd()})"


def check_restore_paths(cfg, suffix: str = "") -> None:
    """Raise UsageError if ``--restore-file`` (not the default) or a ``--finetune-from-model`` that would be loaded
    does not exist. ``cfg`` is fairseq's CheckpointConfig; ``suffix`` the trainer's checkpoint suffix."""
    from fairseq.file_io import PathManager

    resets = cfg.reset_optimizer or cfg.reset_lr_scheduler or cfg.reset_meters or cfg.reset_dataloader
    if cfg.finetune_from_model is not None and (resets or cfg.restore_file != DEFAULT_RESTORE_FILE):
        return  # stock refuses these combinations itself, with its own message (fairseq's tests check it)
    if cfg.restore_file != DEFAULT_RESTORE_FILE:
        path = cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file
        if not PathManager.isfile(path):
            named = path if path == cfg.restore_file else f"{cfg.restore_file} (as {path})"
            if not os.path.dirname(cfg.restore_file):
                logger.warning(f"--restore-file {named}: no such file{_relative_note(path)}; training starts from "
                               "scratch (a bare file name is stock's fresh-start idiom; a path with a folder must "
                               "exist)")
                return
            raise UsageError(f"--restore-file {named}: no such checkpoint file{_relative_note(path)}")
        return
    first_launch = not PathManager.exists(os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt"))
    if (first_launch and cfg.finetune_from_model is not None and getattr(cfg, "continue_once", None) is None
            and not PathManager.exists(cfg.finetune_from_model)):
        raise UsageError(f"--finetune-from-model {cfg.finetune_from_model}: no such checkpoint file"
                         f"{_relative_note(cfg.finetune_from_model)}")


def restored_path(cfg, suffix: str = "") -> str:
    """The file ``checkpoint_utils.load_checkpoint`` reads, resolved as fairseq resolves it."""
    from fairseq.file_io import PathManager

    if cfg.restore_file == DEFAULT_RESTORE_FILE:
        path = os.path.join(cfg.save_dir, f"checkpoint_last{suffix}.pt")
        if cfg.finetune_from_model is not None and not PathManager.exists(path):
            return cfg.finetune_from_model
        return path
    return cfg.restore_file.replace(".pt", suffix + ".pt") if suffix else cfg.restore_file


_SIZE_MISMATCH = re.compile(r"size mismatch for (\S+): copying a param with shape torch\.Size\((\[[^\]]*\])\) from "
                            r"checkpoint, the shape in current model is torch\.Size\((\[[^\]]*\])\)")
_KEYS = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: \"([^\"]+)\"")
_OPTIMIZER_MISMATCH = re.compile(r"(Optimizer|Criterion) does not match; please reset the optimizer "
                                 r"\(--reset-optimizer\)\. (\S+) vs (\S+)")


def _state_dict_difference(message: str) -> str:
    sizes = _SIZE_MISMATCH.findall(message)
    if sizes:
        name, saved, here = sizes[0]
        more = f" (and {len(sizes) - 1} more tensors)" if len(sizes) > 1 else ""
        return f"{name} is {saved} in the checkpoint and {here} in this run's model{more}"
    keys = _KEYS.search(message)
    if keys:
        where = "this run's model lacks" if keys.group(1) == "Unexpected" else "the checkpoint lacks"
        return f"{where} {keys.group(2)}"
    return message.splitlines()[0].rstrip(".") if message else "its tensors do not match"


def explain_load_failure(err: BaseException, path: str) -> Optional[UsageError]:
    """The one-line UsageError for fairseq's refusals of a checkpoint that does not fit this run, or None.

    fairseq raises a bare Exception ("please ensure that the architectures match", the real reason chained in
    the traceback) for a model of another shape, and an AssertionError for another optimizer or criterion (a
    different precision flag builds another optimizer wrapper)."""
    message = str(err)
    if message.startswith("Cannot load model parameters from checkpoint"):
        cause = err.__cause__ or err.__context__
        return UsageError(f"checkpoint {path} does not fit the model this run builds: "
                          f"{_state_dict_difference(str(cause) if cause is not None else '')}; resume with the "
                          "architecture flags it was trained with (--arch, --encoder-embed-dim, ...), or train into "
                          "another --save-dir")
    found = _OPTIMIZER_MISMATCH.search(message)
    if isinstance(err, AssertionError) and found:
        kind, saved, here = found.groups()
        flags = ("another --optimizer, or another precision flag: --fp16, --bf16, --amp, --memory-efficient-fp16"
                 if kind == "Optimizer" else "another --criterion")
        return UsageError(f"checkpoint {path} holds the state of {kind.lower()} {saved}, this run builds {here} "
                          f"({flags}); resume with the flags it was trained with, or pass --reset-optimizer "
                          "to start a new optimizer state")
    return None
