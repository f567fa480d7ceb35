"""Every change fairseq_npu makes to stock fairseq, in one place.

Stock fairseq knows cuda and cpu only, assumes NCCL and CUDA device counts in its distributed utilities, and
cannot load its own checkpoints on torch >= 2.6. Instead of a fork, the plugin wraps a handful of fairseq
functions when it is imported. Each entry of ``HOOKS`` names the function it wraps, what the wrapper changes and
why; ``install()`` applies them all and is idempotent (fairseq imports the user dir again in every spawned
worker). On cuda most hooks step aside and stock behaviour runs unchanged.
"""

import argparse
import functools
import logging
import os
import types
from dataclasses import dataclass
from typing import Callable, List

import torch

from fairseq_npu import cpu_allocator, device

logger = logging.getLogger(__name__)

_ORIGINAL = "__fairseq_npu_original__"
_MAKE = "__fairseq_npu_make__"


@dataclass(frozen=True)
class Hook:
    target: str  # dotted path of what is wrapped
    change: str  # what the wrapper does
    why: str  # what breaks without it
    install: Callable[[], None]


def wrap(owner, name: str, make_wrapper: Callable) -> None:
    """Replace ``owner.name`` by ``make_wrapper(original)`` once; a second call is a no-op."""
    original = getattr(owner, name)
    if hasattr(original, _ORIGINAL):
        return
    wrapper = make_wrapper(original)
    if callable(original) and not isinstance(original, type):
        functools.update_wrapper(wrapper, original)
    setattr(wrapper, _ORIGINAL, original)
    setattr(wrapper, _MAKE, make_wrapper)  # lets tests build the same wrapper around a stand-in original
    setattr(owner, name, wrapper)


def original_of(obj):
    """The stock function behind a hook (tests, and wrappers that must call around the hook)."""
    return getattr(obj, _ORIGINAL, obj)


def is_hooked(owner, name: str) -> bool:
    return hasattr(getattr(owner, name), _ORIGINAL)


def rewrap(hooked, original):
    """The wrapper of an installed hook, built around ``original`` instead of the stock function (tests)."""
    return getattr(hooked, _MAKE)(original)


# --------------------------------------------------------------------------------------------------------------
# --device-type flag


class _DeviceTypeAction(argparse.Action):
    def __call__(self, parser, namespace, value, option_string=None):
        setattr(namespace, self.dest, value)
        device.set_backend(value)  # exported through the environment, so spawned workers agree


def _install_device_type_flag():
    from fairseq import options

    def make(original):
        def add_distributed_training_args(parser, *args, **kwargs):
            group = original(parser, *args, **kwargs)
            if not any("--device-type" in a.option_strings for a in parser._actions):
                group.add_argument(
                    "--device-type", choices=device.DEVICE_TYPES, default=None, action=_DeviceTypeAction,
                    help=f"fairseq_npu: device to train on (default: ${device.ENV_VAR} or auto: npu > cuda > cpu)",
                )
                # stock defaults to nccl with cuda and gloo without, so an npu run would get gloo; "auto" is
                # resolved to the device's backend (hccl / nccl / gloo) when the process group is created
                parser.set_defaults(distributed_backend="auto")
            return group

        return add_distributed_training_args

    wrap(options, "add_distributed_training_args", make)


# --------------------------------------------------------------------------------------------------------------
# Trainer


def _install_trainer_device():
    from fairseq.trainer import Trainer
    from omegaconf import open_dict

    def make(original):
        def __init__(self, cfg, task, model, criterion, *args, **kwargs):
            backend = device.get()
            if cfg.common.cpu:
                backend = device.set_backend(force_cpu=True)
            elif backend.type == "cpu" and torch.cuda.is_available():
                with open_dict(cfg):  # cpu chosen on a cuda machine: stock would still take cuda
                    cfg.common.cpu = True
            if backend.type == "cpu" or cfg.common.cpu:
                cpu_allocator.apply_for(model)  # before the first update allocates its gradients
            original(self, cfg, task, model, criterion, *args, **kwargs)
            if backend.type == "npu" and not cfg.common.cpu:
                if cfg.distributed_training.distributed_world_size <= 1:
                    backend.set_device(cfg.distributed_training.device_id)
                self.device = backend.device()
                if not self.use_distributed_wrapper:  # the DDP wrapper moves the model itself
                    self._criterion = self._criterion.to(device=self.device)
                    self._model = self._model.to(device=self.device)

        return __init__

    wrap(Trainer, "__init__", make)


def _install_trainer_prepare_sample():
    from fairseq import utils
    from fairseq.trainer import Trainer

    def make(original):
        def _prepare_sample(self, sample, is_dummy=False):
            sample, is_dummy_out = original(self, sample, is_dummy)
            if self.device.type not in ("cpu", "cuda") and sample:
                sample = utils.move_to_cuda(sample, device=self.device)  # a plain .to(device), any device
            return sample, is_dummy_out

        return _prepare_sample

    wrap(Trainer, "_prepare_sample", make)


def _install_trainer_empty_cache():
    from fairseq.trainer import Trainer

    def make(original):
        def train_step(self, samples, raise_oom=False):
            first = self.get_num_updates() == 0
            result = original(self, samples, raise_oom)
            if first and self.device.type == "npu":
                device.get().empty_cache()  # stock does this on cuda only, after the first update
            return result

        return train_step

    wrap(Trainer, "train_step", make)


def _install_seed():
    from fairseq import utils

    def make(original):
        def __init__(self, seed):
            original(self, seed)
            backend = device.get()
            if backend.type == "npu":
                backend.manual_seed(seed)

        return __init__

    wrap(utils.set_torch_seed, "__init__", make)


# --------------------------------------------------------------------------------------------------------------
# distributed utilities


def _install_distributed_main():
    from fairseq.distributed import utils as dist_utils

    def make(original):
        def distributed_main(i, main, cfg, kwargs):
            backend = device.get()
            if backend.type == "npu" and not cfg.common.cpu:
                backend.set_device(i)
            return original(i, main, cfg, kwargs)

        return distributed_main

    wrap(dist_utils, "distributed_main", make)


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


def _install_distributed_backend():
    from fairseq.distributed import utils as dist_utils

    def make(original):
        def distributed_init(cfg):
            resolve_distributed_backend(cfg)
            return original(cfg)

        return distributed_init

    wrap(dist_utils, "distributed_init", make)


TORCHRUN_KEYS = ("MASTER_ADDR", "MASTER_PORT", "WORLD_SIZE", "RANK")


def _install_launch_init():
    from fairseq.distributed import utils as dist_utils

    from fairseq_npu import slurm

    def make(original):
        def infer_init_method(cfg, force_distributed=False):
            backend = device.get()
            if backend.type == "cuda" or cfg.distributed_init_method is not None or cfg.pipeline_model_parallel:
                return original(cfg, force_distributed)
            if all(k in os.environ for k in TORCHRUN_KEYS):
                if int(os.environ["WORLD_SIZE"]) == 1:
                    return original(cfg, force_distributed)
                # torchrun on npu/cpu: stock divides by torch.cuda.device_count() and calls torch.cuda.set_device;
                # the world size comes from torchrun (stock's default of 1 would make every process train alone)
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

    wrap(dist_utils, "infer_init_method", make)


def spawned_worker(i, main, cfg, kwargs):
    """Entry point of each worker the plugin spawns.

    A spawned worker starts as a fresh interpreter: fairseq's ``distributed_main`` pickled by name would run there
    unhooked (no npu set_device, no backend resolution) until ``main`` imports the user dir. Unpickling this
    function imports fairseq_npu first, which installs every hook.
    """
    from fairseq.distributed import utils as dist_utils

    install()
    dist_utils.distributed_main(i, main, cfg, kwargs)


def _install_call_main():
    from fairseq.distributed import utils as dist_utils

    def make(original):
        def call_main(cfg, main, **kwargs):
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
            torch.multiprocessing.spawn(fn=spawned_worker, args=(main, cfg, kwargs), nprocs=nprocs, join=True)

        return call_main

    wrap(dist_utils, "call_main", make)


def _install_all_gather_list():
    from fairseq.distributed import utils as dist_utils

    def make(original):
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

    wrap(dist_utils, "all_gather_list", make)


def _install_ddp_device_ids():
    from fairseq.models import distributed_fairseq_model

    def make(original):
        def DistributedDataParallel(module, *args, device_ids=None, output_device=None, **kwargs):
            first = next(module.parameters(), None)
            if first is not None and first.device.type == "cpu":
                device_ids, output_device = None, None  # torch refuses device ids for cpu modules
            return original(module, *args, device_ids=device_ids, output_device=output_device, **kwargs)

        return DistributedDataParallel

    wrap(distributed_fairseq_model, "DistributedDataParallel", make)


# --------------------------------------------------------------------------------------------------------------
# checkpoints


def _install_safe_checkpoint_load():
    from fairseq import checkpoint_utils

    from fairseq_npu.checkpoint_loading import TorchWithSafeLoad

    from fairseq.distributed import utils as dist_utils

    # checkpoint_utils loads files; distributed utils unpickle the state rank 0 broadcasts when resuming
    for module in (checkpoint_utils, dist_utils):
        if not isinstance(module.torch, TorchWithSafeLoad):
            module.torch = TorchWithSafeLoad(module.torch)


# --------------------------------------------------------------------------------------------------------------
# numpy 2


class _NumpyWithCompat(types.ModuleType):
    """numpy as a fairseq data module sees it: everything forwarded, plus the ``np.compat.long`` numpy 2 removed."""

    def __init__(self, numpy_module):
        super().__init__("numpy")
        self._numpy = numpy_module
        self.compat = types.SimpleNamespace(long=numpy_module.int64)

    def __getattr__(self, name):
        return getattr(self._numpy, name)


def _install_numpy_compat():
    import numpy
    from fairseq.data import language_pair_dataset, token_block_dataset

    if hasattr(numpy, "compat"):
        return  # numpy 1.x still has it
    for module in (token_block_dataset, language_pair_dataset):
        if not isinstance(module.np, _NumpyWithCompat):
            module.np = _NumpyWithCompat(module.np)


# --------------------------------------------------------------------------------------------------------------
# mixed precision and the optimizer (logic in fairseq_npu/amp/fairseq_hooks.py)


def _amp(name: str) -> Callable[[], None]:
    """The install function ``name`` of fairseq_npu.amp.fairseq_hooks, imported when the hook is installed."""

    def install():
        from fairseq_npu.amp import fairseq_hooks

        getattr(fairseq_hooks, name)()

    install.__name__ = name
    return install


def _apex_amp(name: str) -> Callable[[], None]:
    """The install function ``name`` of fairseq_npu.amp.apex_amp, imported when the hook is installed."""

    def install():
        from fairseq_npu.amp import apex_amp

        getattr(apex_amp, name)()

    install.__name__ = name
    return install


HOOKS: List[Hook] = [
    Hook("fairseq.options.add_distributed_training_args", "adds --device-type {auto,npu,cuda,cpu}",
         "the device must be choosable on the command line, and spawned workers must inherit it",
         _install_device_type_flag),
    Hook("fairseq.trainer.Trainer.__init__", "puts model and criterion on the selected device (npu included); on cpu, "
         "makes glibc keep freed memory when a gradient exceeds 32 MiB (fairseq_npu/cpu_allocator.py)",
         "stock picks cuda if available else cpu; it has no npu branch and ignores FAIRSEQ_NPU_DEVICE=cpu; on cpu "
         "every update page-faults its large gradient buffers in again",
         _install_trainer_device),
    Hook("fairseq.trainer.Trainer._prepare_sample", "moves each batch to the trainer's device on npu",
         "stock moves batches only when self.cuda is true", _install_trainer_prepare_sample),
    Hook("fairseq.trainer.Trainer.train_step", "empties the npu cache after the first update",
         "stock calls torch.cuda.empty_cache only", _install_trainer_empty_cache),
    Hook("fairseq.utils.set_torch_seed.__init__", "also seeds the npu generator",
         "stock seeds cpu and cuda only, so npu dropout would not be reproducible", _install_seed),
    Hook("fairseq.distributed.utils.distributed_main", "torch.npu.set_device(rank's device) on npu",
         "stock calls torch.cuda.set_device only", _install_distributed_main),
    Hook("fairseq.distributed.utils.distributed_init", "--distributed-backend auto (the plugin's default) becomes "
         "hccl / nccl / gloo by device; nccl or hccl off their device too",
         "stock defaults to nccl with cuda else gloo, so npu runs got gloo, and nccl fails off cuda",
         _install_distributed_backend),
    Hook("fairseq.distributed.utils.infer_init_method", "under torchrun on npu/cpu: env:// and device id = LOCAL_RANK; "
         "under Slurm: ranks and per-node processes from the backend's devices (fairseq_npu/slurm.py)",
         "stock computes rank % torch.cuda.device_count() (ZeroDivisionError), calls torch.cuda.set_device, and "
         "makes a Slurm job's world size nodes x 0",
         _install_launch_init),
    Hook("fairseq.distributed.utils.call_main", "spawns one worker per npu device / cpu process (per node under Slurm)",
         "stock sizes the spawn by torch.cuda.device_count(), which is 0 on npu and cpu", _install_call_main),
    Hook("fairseq.distributed.utils.all_gather_list", "allocates its buffers on the backend's device",
         "stock allocates torch.cuda.ByteTensor and pinned memory, which fail without cuda", _install_all_gather_list),
    Hook("fairseq.models.distributed_fairseq_model.DistributedDataParallel", "drops device_ids for cpu modules",
         "torch's DDP refuses device_ids=[i] for a cpu module, so --ddp-backend c10d fails on gloo",
         _install_ddp_device_ids),
    Hook("fairseq.checkpoint_utils.torch.load", "weights_only=True with an allowlist of fairseq checkpoint types "
         "(also in fairseq.distributed.utils, whose _broadcast_object_slow unpickles rank 0's checkpoint)",
         "torch >= 2.6 refuses argparse.Namespace etc. in checkpoint_last.pt and roberta model.pt; switching "
         "weights_only off would execute arbitrary pickles", _install_safe_checkpoint_load),
    Hook("fairseq.data.token_block_dataset.np", "gives the module's numpy a compat.long (= int64); also in "
         "language_pair_dataset", "numpy 2 removed np.compat, so masked_lm --sample-break-mode eos fails",
         _install_numpy_compat),
    Hook("fairseq.options.add_optimization_args", "adds --amp-dtype and ModelZoo's --use-apex, --opt-level, "
         "--loss-scale, --use-npu-adam", "ModelZoo launch lines pass them; stock cannot choose the --amp dtype",
         _amp("install_flags")),
    Hook("fairseq.options.parse_args_and_arch", "rewrites the ModelZoo flags into fairseq's; --bf16 stops implying "
         "--tpu", "stock makes every --bf16 run a TPU run, and the Trainer then needs torch_xla",
         _amp("install_parse")),
    Hook("fairseq.optim.AMPOptimizer", "--amp builds DeviceAMPOptimizer: the device's GradScaler, fairseq's "
         "loss-scale flags, scaler state saved in checkpoints", "stock builds torch.cuda.amp.GradScaler (disabled "
         "off cuda), takes its growth interval from --amp-init-scale and never saves the scaler",
         _amp("install_amp_optimizer")),
    Hook("fairseq.tasks.fairseq_task.FairseqTask.train_step", "autocasts the forward on the selected device, in "
         "--amp-dtype", "stock wraps it in torch.cuda.amp.autocast, which does nothing on npu and cpu",
         _amp("install_task_autocast")),
    Hook("fairseq.optim.fp16_optimizer._FP16OptimizerMixin.build_fp32_params", "builds the flat fp32 master copy "
         "on the parameters' device", "stock calls torch.cuda.current_device(), so --fp16 fails on npu and cpu",
         _amp("install_fp32_master_params")),
    Hook("fairseq.optim.fp16_optimizer._FP16OptimizerMixin._sync_fp16_grads_to_fp32", "with --optimizer "
         "fused_adamw and flat master params: one multi-tensor copy of the fp16 grads into the flat fp32 grad "
         "(also _sync_fp32_params_to_fp16, back to the fp16 params after the step)", "stock copies tensor by "
         "tensor: about 2,400 host operators per update for roberta_base (bit-identical result)",
         _amp("install_multi_tensor_master_syncs")),
    Hook("fairseq.trainer.torch.tensor", "the overflow handler's torch.tensor(0.0).cuda() lands on the backend",
         "stock crashes on npu and cpu the first time an --fp16 step overflows", _amp("install_trainer_overflow")),
    Hook("fairseq.trainer.Trainer.clip_grad_norm", "the fsdp norm aggregation moves the norm to the trainer's device",
         "stock calls .cuda() on it", _amp("install_trainer_clip_grad_norm")),
    Hook("fairseq.optim.dynamic_loss_scaler.DynamicLossScaler.check_overflow", "counts skipped steps, logged as "
         "'overflows'", "stock logs one line per overflow but no count", _amp("install_overflow_count")),
    # --use-apex with apex installed (logic in fairseq_npu/amp/apex_amp.py; each steps aside unless apex drives the run)
    Hook("fairseq.trainer.Trainer._build_optimizer", "--use-apex: apex.amp.initialize(model, optimizer, opt_level, "
         "loss_scale[, combine_grad]) after the stock build; a rebuild keeps apex's optimizer",
         "the ModelZoo recipe ran apex.amp from a forked Trainer; stock has no apex",
         _apex_amp("install_build_optimizer")),
    Hook("fairseq.optim.fairseq_optimizer.FairseqOptimizer.backward", "--use-apex: the backward pass through "
         "amp.scale_loss(loss, optimizer)", "stock calls loss.backward(), unscaled", _apex_amp("install_backward")),
    Hook("fairseq.optim.fairseq_optimizer.FairseqOptimizer.clip_grad_norm", "--use-apex (here and in "
         "fused_adamw's override): a step apex skips for overflow raises fairseq's OverflowError (no update, "
         "'overflows' logged); logs apex's loss_scale",
         "otherwise fairseq counts the skipped step as an update, or stops on the inf grad norm",
         _apex_amp("install_overflow_skip")),
    Hook("fairseq.optim.fairseq_optimizer.FairseqOptimizer.state_dict", "--use-apex: adds apex.amp.state_dict() "
         "(the loss scalers) to the optimizer state that checkpoints save; load_state_dict restores it",
         "apex keeps its loss scale in module globals: a resumed run would restart from 2**16 and overflow down",
         _apex_amp("install_state_dict")),
]


def install() -> None:
    """Apply every hook; safe to call again (each wrapper is installed once)."""
    for hook in HOOKS:
        hook.install()


def describe() -> str:
    """One line per hook, for ``python -m fairseq_npu.hooks``."""
    return "\n".join(f"- {h.target}: {h.change} (why: {h.why})" for h in HOOKS)


def markdown_table() -> str:
    """The README's table of hooks (``python -m fairseq_npu.hooks --markdown``; a test keeps the README in step)."""
    rows = ["| wrapped | change | why |", "|---|---|---|"]
    rows += [f"| `{h.target}` | {h.change} | {h.why} |" for h in HOOKS]
    return "\n".join(rows)


if __name__ == "__main__":
    import sys

    print(markdown_table() if "--markdown" in sys.argv[1:] else describe())
