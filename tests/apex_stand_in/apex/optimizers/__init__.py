"""Stand-in for apex.optimizers (Ascend's build): NpuFusedAdamW."""

from .npu_fused_adamw import NpuFusedAdamW  # noqa: F401
