"""Hooks on fairseq's checkpoints: how they are verified and unpickled (CRCs, then ``torch.load`` with
``weights_only=True`` and an allowlist, fairseq_npu/checkpoint_loading.py), what a run resumes from
(fairseq_npu/checkpoint_restore.py) and how the files of a save are written (fairseq_npu/checkpoint_saving.py)."""

from fairseq_npu.checkpoint_loading import TorchWithSafeLoad
from fairseq_npu.checkpoint_restore import check_restore_paths, explain_load_failure, restored_path
from fairseq_npu.checkpoint_saving import AtomicCopyPathManager, check_save_dir, save_atomically
from fairseq_npu.errors import UsageError
from fairseq_npu.optimizer_state import OptimizerStateMismatch, check_state_shapes, parameter_names

# fairseq.checkpoint_utils loads the files; fairseq.distributed.utils unpickles the state rank 0 broadcasts on resume
torch_module = TorchWithSafeLoad

# fairseq.checkpoint_utils.save_checkpoint copies the first file of a save to checkpoint_best.pt / checkpoint_last.pt
path_manager = AtomicCopyPathManager


def load_checkpoint(original):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        check_restore_paths(cfg, trainer.checkpoint_suffix)
        try:
            with parameter_names(trainer.get_model(), trainer.get_criterion()):
                loaded = original(cfg, trainer, **passthrough_args)
                if trainer._optimizer is not None:  # built by the load (the property would build one)
                    check_state_shapes(trainer.optimizer.optimizer)
        except OptimizerStateMismatch as err:
            raise OptimizerStateMismatch(f"checkpoint {restored_path(cfg, trainer.checkpoint_suffix)}: {err}") from None
        except Exception as err:  # noqa: BLE001 - fairseq raises a bare Exception for a model that does not fit
            if isinstance(err, UsageError):
                raise
            explained = explain_load_failure(err, restored_path(cfg, trainer.checkpoint_suffix))
            if explained is None:
                raise
            raise explained from None
        return loaded

    return load_checkpoint


def torch_persistent_save(original):
    def torch_persistent_save(obj, filename, async_write: bool = False):
        from fairseq.file_io import PathManager

        if async_write or PathManager.path_requires_pathmanager(filename):
            return original(obj, filename, async_write)
        return save_atomically(obj, filename)

    return torch_persistent_save


def verify_checkpoint_directory(original):
    def verify_checkpoint_directory(save_dir: str) -> None:
        from fairseq.file_io import PathManager

        if PathManager.path_requires_pathmanager(save_dir):
            return original(save_dir)
        return check_save_dir(save_dir)

    return verify_checkpoint_directory
