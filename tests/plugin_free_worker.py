"""A worker ``main`` that never imports fairseq_npu, as fairseq_cli.train.main until it imports the user dir.

Used by tests/test_hooks.py to check that workers the plugin spawns have the hooks before fairseq's
distributed_main runs, without the test module itself (which imports the plugin) being unpickled in the worker.
"""

import json
import os

import torch


def record_worker_state(cfg, out_dir):
    from fairseq.distributed import utils as dist_utils

    rank = torch.distributed.get_rank()
    state = {
        "backend": torch.distributed.get_backend(),
        "configured": cfg.distributed_training.distributed_backend,
        "distributed_main_hooked": hasattr(dist_utils.distributed_main, "__fairseq_npu_original__"),
    }
    with open(os.path.join(out_dir, f"plugin_free_rank{rank}.json"), "w") as f:
        json.dump(state, f)
