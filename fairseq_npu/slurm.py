"""Distributed init inside a Slurm job on npu or cpu.

Stock fairseq reads the Slurm environment in ``_infer_slurm_init`` but sizes everything by
``torch.cuda.device_count()``: with one task per node on npu or cpu that is 0, so the world size becomes 0. This
module reads the same variables for the selected backend, with two stricter rules:

- one task per node: that task spawns ``--distributed-world-size / SLURM_NNODES`` processes (the user's world
  size is kept; on npu it must fit the node's devices), ranks ``node_id * per_node + i``;
- several tasks per node: each task is one process (rank ``SLURM_PROCID``, device ``SLURM_LOCALID``), and
  ``--distributed-world-size`` must equal the job's task count.

Every rule that does not hold is an error that names the flag or the variable, before any process group exists.
"""

import logging
import os
import random
import re
import subprocess
from typing import Optional

logger = logging.getLogger(__name__)

NODE_LIST_VARS = ("SLURM_STEP_NODELIST", "SLURM_JOB_NODELIST")


def node_list() -> Optional[str]:
    for var in NODE_LIST_VARS:
        if os.environ.get(var):
            return os.environ[var]
    return None


def _int_var(name: str) -> int:
    value = os.environ.get(name)
    if value is None:
        raise RuntimeError(f"Slurm job without ${name}: cannot place this process (set it, or launch with torchrun)")
    # Slurm writes repeated counts as "8(x2)": the per-node count is the leading number
    match = re.match(r"\s*(\d+)", value)
    if match is None:
        raise RuntimeError(f"${name}={value!r} is not a number")
    return int(match.group(1))


def _port(cfg, nnodes: int) -> int:
    if cfg.distributed_port > 0:
        return cfg.distributed_port
    if nnodes > 1:
        raise RuntimeError(
            f"Slurm job on {nnodes} nodes: pass --distributed-port (the same free port on every node)"
        )
    # one node: a port every task of this job derives alike, as stock does from the job id
    job = os.environ.get("SLURM_JOB_ID", "") + os.environ.get("SLURM_ARRAY_TASK_ID", "")
    return random.Random(int(job) if job.isdigit() else None).randint(10000, 60000)


def infer_slurm_init(cfg, backend) -> bool:
    """Fill ``cfg`` (a DistributedTrainingConfig) from the Slurm environment; False outside a Slurm job."""
    nodes = node_list()
    if nodes is None:
        return False
    try:
        hostnames = subprocess.check_output(["scontrol", "show", "hostnames", nodes]).split()
    except FileNotFoundError:
        return False  # Slurm variables without Slurm's tools (e.g. a shell copied from a job): not a Slurm job
    if not hostnames:
        raise RuntimeError(f"`scontrol show hostnames {nodes}` printed no host")
    nnodes = _int_var("SLURM_NNODES")
    if "SLURM_NTASKS_PER_NODE" in os.environ:
        tasks_per_node = _int_var("SLURM_NTASKS_PER_NODE")
    else:
        tasks = _int_var("SLURM_NTASKS")
        if tasks % nnodes:
            raise RuntimeError(f"$SLURM_NTASKS={tasks} is not a multiple of $SLURM_NNODES={nnodes}")
        tasks_per_node = tasks // nnodes
    world = cfg.distributed_world_size
    devices = backend.device_count() if backend.is_accelerator else None

    if tasks_per_node == 1:
        if world % nnodes:
            raise RuntimeError(f"--distributed-world-size {world} is not a multiple of the job's {nnodes} nodes")
        per_node = world // nnodes
        if devices is not None and per_node > devices:
            raise RuntimeError(
                f"--distributed-world-size {world} on {nnodes} node(s) needs {per_node} {backend.type} devices "
                f"per node, {devices} visible"
            )
        cfg.distributed_rank = _int_var("SLURM_NODEID") * per_node
        cfg.distributed_num_procs = per_node
        cfg.distributed_no_spawn = False
    else:
        if world != tasks_per_node * nnodes:
            raise RuntimeError(
                f"--distributed-world-size {world} but the Slurm job runs {tasks_per_node} task(s) on each of "
                f"{nnodes} node(s): one process per task means a world size of {tasks_per_node * nnodes}"
            )
        local = _int_var("SLURM_LOCALID")
        if devices is not None and local >= devices:
            raise RuntimeError(f"$SLURM_LOCALID={local} but only {devices} {backend.type} devices are visible")
        cfg.distributed_rank = _int_var("SLURM_PROCID")
        cfg.device_id = local
        cfg.distributed_num_procs = 1
        cfg.distributed_no_spawn = True
    host = hostnames[0].decode() if nnodes > 1 else "localhost"
    cfg.distributed_init_method = f"tcp://{host}:{_port(cfg, nnodes)}"
    logger.info(f"Slurm: {nnodes} node(s) x {tasks_per_node} task(s), rank {cfg.distributed_rank}, "
                f"init {cfg.distributed_init_method}")
    return True
