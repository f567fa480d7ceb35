"""Hooks on fairseq's checkpoints: how they are unpickled (``torch.load`` with ``weights_only=True`` and an
allowlist, fairseq_npu/checkpoint_loading.py), what a run resumes from (fairseq_npu/checkpoint_restore.py) and
how the copies of a save are written (fairseq_npu/checkpoint_saving.py)."""

from fairseq_npu.checkpoint_loading import TorchWithSafeLoad
from fairseq_npu.checkpoint_restore import check_restore_paths
from fairseq_npu.checkpoint_saving import AtomicCopyPathManager

# fairseq.checkpoint_utils loads the files; fairseq.distributed.utils unpickles the state rank 0 broadcasts on resume
torch_module = TorchWithSafeLoad

# fairseq.checkpoint_utils.save_checkpoint copies the first file of a save to checkpoint_best.pt / checkpoint_last.pt
path_manager = AtomicCopyPathManager


def load_checkpoint(original):
    def load_checkpoint(cfg, trainer, **passthrough_args):
        check_restore_paths(cfg, trainer.checkpoint_suffix)
        return original(cfg, trainer, **passthrough_args)

    return load_checkpoint
