"""Hooks on ``fairseq.distributed.utils`` and fairseq's DDP wrapper: device, process-group backend, launchers
(torchrun, Slurm, spawn on one host) and buffers for npu and cpu. On cuda each steps aside for stock code.
``call_main`` also runs ``main`` through fairseq_npu.errors.exit_on_usage_error on every device."""

import functools
import logging
import os

import torch

from fairseq_npu import device, errors, slurm

logger = logging.getLogger(__name__)

TORCHRUN_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def resolve_distributed_backend(cfg) -> None:
    """Turn ``--distributed-backend auto`` (the plugin's default) into hccl / nccl / gloo for the selected device.

    nccl or hccl off their device are replaced too; any other explicit choice (gloo on an accelerator, mpi) is kept.
    Runs in the parent before workers are spawned and again in ``distributed_init``.
    """
    backend = device.get()
    wanted = "gloo" if getattr(cfg, "common", None) is not None and cfg.common.cpu else backend.dist_backend
    configured = cfg.distributed_training.distributed_backend
    if configured == "auto" or (configured in ("nccl", "hccl") and configured != wanted):
        logger.info(f"fairseq_npu: distributed backend {configured} -> {wanted} for device {backend.type}")
        cfg.distributed_training.distributed_backend = wanted


def distributed_main(original):
    def distributed_main(i, main, cfg, kwargs):
        backend = device.get()
        if backend.type == "npu" and not cfg.common.cpu:
            backend.set_device(i)
        return original(i, main, cfg, kwargs)

    return distributed_main


def distributed_init(original):
    def distributed_init(cfg):
        resolve_distributed_backend(cfg)
        return original(cfg)

    return distributed_init


def infer_init_method(original):
    def infer_init_method(cfg, force_distributed=False):
        backend = device.get()
        if backend.type == "cuda" or cfg.distributed_init_method is not None or cfg.pipeline_model_parallel:
            return original(cfg, force_distributed)
        if all(k in os.environ for k in TORCHRUN_KEYS):
            if int(os.environ["WORLD_SIZE"]) == 1:
                return original(cfg, force_distributed)
            # torchrun on npu/cpu: stock divides by torch.cuda.device_count() and calls torch.cuda.set_device;
            # the world size comes from torchrun (stock's default of 1 would make every process train alone).
            # Copied from fairseq 0.12.3 distributed/utils.py _infer_torch_distributed_launch_init, with device_id
            # from LOCAL_RANK (else the backend's device count) instead of torch.cuda.device_count()
            cfg.distributed_init_method = "env://"
            cfg.distributed_world_size = int(os.environ["WORLD_SIZE"])
            cfg.distributed_rank = int(os.environ["RANK"])
            cfg.device_id = int(os.environ.get("LOCAL_RANK", cfg.distributed_rank % backend.device_count()))
            cfg.distributed_no_spawn = True
        elif cfg.distributed_world_size > 1:
            # Slurm, read for this backend; elsewhere nothing is set and call_main spawns on this host
            # (stock would assert on torch.cuda.device_count())
            slurm.infer_slurm_init(cfg, backend)

    return infer_init_method


def spawned_worker(i, main, cfg, kwargs):
    """Entry point of each worker the plugin spawns.

    A spawned worker starts as a fresh interpreter: fairseq's ``distributed_main`` pickled by name would run there
    unhooked (no npu set_device, no backend resolution) until ``main`` imports the user dir. Unpickling this
    function imports ``fairseq_npu`` (this module's package) first, which installs every hook.
    """
    from fairseq.distributed import utils as dist_utils

    dist_utils.distributed_main(i, main, cfg, kwargs)


def call_main(original):
    from fairseq.distributed import utils as dist_utils

    def call_main(cfg, main, **kwargs):
        main = functools.partial(errors.exit_on_usage_error, main)  # picklable, for spawned workers too
        backend = device.get()
        dt = cfg.distributed_training
        resolve_distributed_backend(cfg)  # stock's own spawn (cuda) starts workers without the plugin
        if backend.type == "cuda" or dt.distributed_init_method is not None or dt.distributed_world_size <= 1:
            return original(cfg, main, **kwargs)
        dist_utils.infer_init_method(dt)  # torchrun or Slurm, read for this backend (hooked above)
        if dt.distributed_no_spawn:
            return original(cfg, main, **kwargs)  # one process per launcher task: runs distributed_main here
        if dt.distributed_init_method is None:
            # one host, no launcher: every rank is spawned here
            nprocs = dt.distributed_world_size
            if backend.type == "npu" and not cfg.common.cpu and backend.device_count() < nprocs:
                raise RuntimeError(f"--distributed-world-size {nprocs} but only {backend.device_count()} NPU "
                                   "device(s) are visible")
            port = dt.distributed_port if dt.distributed_port > 0 else 10000 + os.getpid() % 20000
            dt.distributed_init_method = f"tcp://localhost:{port}"
            start_rank = dt.distributed_rank or 0
        else:
            # Slurm with one task per node: this node's processes (stock counts CUDA devices for them)
            nprocs, start_rank = dt.distributed_num_procs, dt.distributed_rank
        kwargs["start_rank"] = start_rank
        dt.distributed_rank = None
        try:
            torch.multiprocessing.spawn(fn=spawned_worker, args=(main, cfg, kwargs), nprocs=nprocs, join=True)
        except torch.multiprocessing.ProcessExitedException as err:
            if err.exit_code == 2:  # a worker printed its UsageError as one line (exit_on_usage_error)
                raise SystemExit(2) from None
            raise

    return call_main


def all_gather_list(original):
    from fairseq.distributed import utils as dist_utils

    def all_gather_list(data, group=None, max_size=16384):
        backend = device.get()
        if backend.type != "cuda":
            # stock allocates torch.cuda.ByteTensor + pinned memory: place them where the backend can reach
            world = dist_utils.get_world_size(group if group is not None else dist_utils.get_global_group())
            size = max_size * world
            holder = dist_utils.all_gather_list  # stock reads its buffers from the module-level name
            if not hasattr(holder, "_buffer") or holder._buffer.numel() < size:
                gloo = dist_utils.torch.distributed.get_backend() == "gloo"
                on = torch.device("cpu") if gloo else backend.device()
                holder._buffer = torch.zeros(size, dtype=torch.uint8, device=on)
                holder._cpu_buffer = torch.zeros(max_size, dtype=torch.uint8)
        return original(data, group=group, max_size=max_size)

    return all_gather_list


def DistributedDataParallel(original):  # noqa: N802 (named after what it wraps)
    def DistributedDataParallel(module, *args, device_ids=None, output_device=None, **kwargs):  # noqa: N802
        first = next(module.parameters(), None)
        if first is not None and first.device.type == "cpu":
            device_ids, output_device = None, None  # torch refuses device ids for cpu modules
        return original(module, *args, device_ids=device_ids, output_device=output_device, **kwargs)

    return DistributedDataParallel
