"""Mixed precision on every backend: autocast for the forward pass (O1) and the optimizer wrappers' glue."""

from fairseq_npu.amp.autocast import autocast_for  # noqa: F401
