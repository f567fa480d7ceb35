"""Hooks on how fairseq unpickles checkpoints: ``torch.load`` with ``weights_only=True`` and an allowlist
(fairseq_npu/checkpoint_loading.py), in the two fairseq modules that load checkpoint state."""

from fairseq_npu.checkpoint_loading import TorchWithSafeLoad

# fairseq.checkpoint_utils loads the files; fairseq.distributed.utils unpickles the state rank 0 broadcasts on resume
torch_module = TorchWithSafeLoad
