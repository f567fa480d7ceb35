"""Every change fairseq_npu makes to stock fairseq, in one table.

Stock fairseq knows cuda and cpu only, assumes NCCL and CUDA device counts in its distributed utilities, and
cannot load its own checkpoints on torch >= 2.6. Instead of a fork, the plugin replaces a handful of attributes
of fairseq modules and classes when it is imported. Each row of ``HOOKS`` is one replaced attribute: the object
that owns it, its name, the function that builds the replacement from the original (``fairseq_npu.patching.wrap``),
what changes and why. ``install()`` applies them all and is idempotent (fairseq imports the user dir again in every
spawned worker). On cuda most hooks step aside and stock behaviour runs unchanged. The wrappers are grouped by what
they touch: ``flags`` (fairseq.options), ``trainer``, ``distributed``, ``checkpoints``, ``tasks``, ``amp``,
``apex`` (every ``--use-apex`` wrapper), ``data_thread`` (fairseq's batch-reading thread), ``compat``.

``python -m fairseq_npu.hooks [--json | --markdown]`` lists them.
"""

import types
from dataclasses import dataclass
from typing import Callable, List, Optional

from fairseq import checkpoint_utils, optim, options, trainer as fairseq_trainer, utils
from fairseq.data import language_pair_dataset, token_block_dataset
from fairseq.data.iterators import BackgroundConsumer
from fairseq.distributed import utils as dist_utils
from fairseq.models import distributed_fairseq_model
from fairseq.optim.dynamic_loss_scaler import DynamicLossScaler
from fairseq.optim.fairseq_optimizer import FairseqOptimizer
from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin, _MemoryEfficientFP16OptimizerMixin
from fairseq.tasks.fairseq_task import FairseqTask
from fairseq.tasks.sentence_prediction import SentencePredictionTask
from fairseq.trainer import Trainer

from fairseq_npu.hooks import amp, apex, checkpoints, compat, data_thread, distributed, flags, tasks, trainer
from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW
from fairseq_npu.patching import is_hooked, wrap


@dataclass(frozen=True)
class Hook:
    owner: object  # the module or class whose attribute is replaced
    name: str  # the attribute
    make: Callable  # original -> replacement
    change: str  # what the replacement does
    why: str  # what breaks without it
    applies: Optional[Callable[[], bool]] = None  # None: always

    @property
    def target(self) -> str:
        """``module.qualname`` of the replaced attribute, e.g. ``fairseq.trainer.Trainer.__init__``."""
        if isinstance(self.owner, types.ModuleType):
            return f"{self.owner.__name__}.{self.name}"
        return f"{self.owner.__module__}.{self.owner.__qualname__}.{self.name}"

    def wanted(self) -> bool:
        return self.applies is None or self.applies()

    def install(self) -> bool:
        """Replace the attribute unless it is replaced already (or the hook does not apply); True if this call did."""
        return self.wanted() and wrap(self.owner, self.name, self.make)

    def installed(self) -> bool:
        return is_hooked(self.owner, self.name)



HOOKS: List[Hook] = [
    # ---- command line (fairseq_npu/hooks/flags.py)
    Hook(options, "add_distributed_training_args", flags.add_distributed_training_args,
         "adds --device-type {auto,npu,cuda,cpu}",
         "the device must be choosable on the command line, and spawned workers must inherit it"),
    Hook(options, "add_optimization_args", flags.add_optimization_args,
         "adds --amp-dtype, --update-mode and ModelZoo's --use-apex, --opt-level, --loss-scale, --use-npu-adam",
         "ModelZoo launch lines pass them; stock cannot choose the --amp dtype"),
    Hook(options, "parse_args_and_arch", flags.parse_args_and_arch,
         "rewrites the ModelZoo flags into fairseq's; --bf16 stops implying --tpu",
         "stock makes every --bf16 run a TPU run, and the Trainer then needs torch_xla"),
    # ---- the Trainer (fairseq_npu/hooks/trainer.py)
    Hook(Trainer, "__init__", trainer.init,
         "puts model and criterion on the selected device (npu included); on cpu, makes glibc keep freed memory "
         "when a gradient exceeds 32 MiB (fairseq_npu/cpu_allocator.py)",
         "stock picks cuda if available else cpu; it has no npu branch and ignores FAIRSEQ_NPU_DEVICE=cpu; on cpu "
         "every update page-faults its large gradient buffers in again"),
    Hook(Trainer, "_prepare_sample", trainer.prepare_sample, "moves each batch to the trainer's device on npu",
         "stock moves batches only when self.cuda is true"),
    Hook(Trainer, "train_step", trainer.train_step,
         "--update-mode device/graph: the update object runs the update (fairseq_npu/update/); otherwise stock's, "
         "the npu cache emptied after the first update, and a diverged run (NaN gradients in fp32, the loss scale "
         "at its minimum) ends with one line naming the parameters (exit 2)",
         "stock syncs the host several times per update and cannot be captured in a graph; it calls "
         "torch.cuda.empty_cache only; a diverged run ends in its NanDetector's traceback (StopIteration on torch "
         ">= 2)"),
    Hook(Trainer, "state_dict", trainer.state_dict,
         "--update-mode device/graph: the device loss scale and skip count are read into the optimizer's state "
         "before a checkpoint is written", "the checkpoint would save the loss scale of the last log step"),
    Hook(Trainer, "clip_grad_norm", trainer.clip_grad_norm,
         "the fsdp norm aggregation moves the norm to the trainer's device", "stock calls .cuda() on it"),
    Hook(fairseq_trainer, "torch", trainer.torch_module,
         "the module's torch, except that torch.tensor(0.0).cuda() in the overflow handler lands on the backend",
         "stock crashes on npu and cpu the first time an --fp16 step overflows"),
    # ---- distributed training (fairseq_npu/hooks/distributed.py, fairseq_npu/slurm.py)
    Hook(dist_utils, "distributed_main", distributed.distributed_main, "torch.npu.set_device(rank's device) on npu",
         "stock calls torch.cuda.set_device only"),
    Hook(dist_utils, "distributed_init", distributed.distributed_init,
         "--distributed-backend auto (the plugin's default) becomes hccl / nccl / gloo by device; nccl or hccl off "
         "their device too",
         "stock defaults to nccl with cuda else gloo, so npu runs got gloo, and nccl fails off cuda"),
    Hook(dist_utils, "infer_init_method", distributed.infer_init_method,
         "under torchrun on npu/cpu: env:// and device id = LOCAL_RANK; under Slurm: ranks and per-node processes "
         "from the backend's devices (fairseq_npu/slurm.py)",
         "stock computes rank % torch.cuda.device_count() (ZeroDivisionError), calls torch.cuda.set_device, and "
         "makes a Slurm job's world size nodes x 0"),
    Hook(dist_utils, "call_main", distributed.call_main,
         "spawns one worker per npu device / cpu process (per node under Slurm); on every device, a "
         "fairseq_npu.errors.UsageError from main (a bad flag, file or checkpoint) becomes one line on stderr and "
         "exit code 2",
         "stock sizes the spawn by torch.cuda.device_count(), which is 0 on npu and cpu; the plugin's input errors "
         "would end fairseq-train in a traceback"),
    Hook(dist_utils, "all_gather_list", distributed.all_gather_list, "allocates its buffers on the backend's device",
         "stock allocates torch.cuda.ByteTensor and pinned memory, which fail without cuda"),
    Hook(distributed_fairseq_model, "DistributedDataParallel", distributed.DistributedDataParallel,
         "drops device_ids for cpu modules",
         "torch's DDP refuses device_ids=[i] for a cpu module, so --ddp-backend c10d fails on gloo"),
    # ---- checkpoint loading (fairseq_npu/hooks/checkpoints.py, fairseq_npu/checkpoint_loading.py)
    Hook(checkpoint_utils, "torch", checkpoints.torch_module,
         "the module's torch, except that load first checks the file (zip CRCs; a damaged or non-checkpoint file "
         "is one line naming it) and is weights_only=True with an allowlist of fairseq checkpoint types",
         "torch >= 2.6 refuses argparse.Namespace etc. in checkpoint_last.pt and roberta model.pt; switching "
         "weights_only off would execute arbitrary pickles; torch never checks the CRCs, so a byte flipped in a "
         "tensor was trained on"),
    Hook(dist_utils, "torch", checkpoints.torch_module,
         "the same safe load for _broadcast_object_slow, which unpickles the checkpoint state rank 0 broadcasts",
         "a resumed distributed run fails on torch >= 2.6 as above"),
    Hook(checkpoint_utils, "load_checkpoint", checkpoints.load_checkpoint,
         "an explicit --restore-file, or a --finetune-from-model to be loaded, that does not exist is an error "
         "naming it (fairseq_npu/checkpoint_restore.py); the default checkpoint_last.pt and a missing bare file name "
         "(stock's fresh-start idiom, with a warning) keep their meaning; a checkpoint of another model shape, "
         "optimizer or precision, or an optimizer state that does not fit the parameters, is one line naming the "
         "file and the first difference (fairseq_npu/optimizer_state.py)",
         "stock trains from scratch and exits 0 when the named file is absent, so a typo in a pretrained model's "
         "path gives a from-scratch model that reports success; another shape ends in a chained traceback, and a "
         "moment of another size in a step error (adam) or a segmentation fault (fused_adamw)"),
    Hook(checkpoint_utils, "PathManager", checkpoints.path_manager,
         "the module's PathManager, except that copy() of a local file writes DEST.tmp and renames it over DEST "
         "(fairseq_npu/checkpoint_saving.py)",
         "save_checkpoint copies checkpoint_best.pt / checkpoint_last.pt in place with shutil.copyfile: a run killed "
         "during the copy leaves a truncated checkpoint_last.pt that the next run resumes from"),
    Hook(checkpoint_utils, "torch_persistent_save", checkpoints.torch_persistent_save,
         "a local file is written once to FILE.tmp and renamed; a failed write (full disk, read-only folder) "
         "removes the .tmp and is one line naming the file (fairseq_npu/checkpoint_saving.py), exit code 2",
         "stock retries three times with 5 s of sleeps, logs a traceback and leaves the partial .tmp behind"),
    Hook(checkpoint_utils, "verify_checkpoint_directory", checkpoints.verify_checkpoint_directory,
         "a --save-dir where no file can be created is one line naming it, exit code 2",
         "stock logs a warning and ends in an OSError traceback"),
    # ---- tasks (fairseq_npu/hooks/tasks.py)
    Hook(SentencePredictionTask, "__init__", tasks.sentence_prediction_init,
         "--num-classes must equal the number of labels in the label dictionary (error naming both; also for "
         "sentence_prediction_npu, a subclass)",
         "stock trains a 3-way head on SST-2's 2 labels without a word (F1 then disappears from the metrics), and "
         "a head smaller than the label set fails only at the first batch"),
    Hook(SentencePredictionTask, "load_dictionary", tasks.sentence_prediction_load_dictionary,
         "a missing input0/ or label/ dict.txt, or one that is not UTF-8 '<token> <count>' lines, is a UsageError "
         "naming the file (and line)",
         "stock fails with a FileNotFoundError traceback for a wrong data folder, and with a bare Exception naming "
         "no line for a binary dict.txt"),
    Hook(SentencePredictionTask, "load_dataset", tasks.sentence_prediction_load_dataset,
         "the split's binarized files are checked first (fairseq_npu/data_checks/binarized.py): a missing split, an "
         "empty, garbage or truncated .idx, a .bin of another size than its .idx describes, keys with different "
         "numbers of sentences, an id beyond its dict.txt, class labels for a regression model or the reverse: a "
         "UsageError naming the file",
         "stock fails in numpy, in assertions about --dataset-impl or dataset lengths, with a KeyError 'target', or "
         "only at the first forward (an id beyond the embedding), each a traceback"),
    Hook(FairseqTask, "filter_indices_by_size", tasks.filter_indices_by_size,
         "a sentence longer than the model's max positions in a split that may not skip it (validation, "
         "evaluation) is a UsageError naming the split, the sentence and how many are too long",
         "stock raises a bare Exception: a traceback"),
    # ---- mixed precision and the optimizer (fairseq_npu/hooks/amp.py, fairseq_npu/amp/)
    Hook(optim, "AMPOptimizer", amp.amp_optimizer,
         "--amp builds DeviceAMPOptimizer: the device's GradScaler, fairseq's loss-scale flags, scaler state saved "
         "in checkpoints",
         "stock builds torch.cuda.amp.GradScaler (disabled off cuda), takes its growth interval from "
         "--amp-init-scale and never saves the scaler"),
    Hook(FairseqTask, "train_step", amp.task_train_step, "autocasts the forward on the selected device, in --amp-dtype",
         "stock wraps it in torch.cuda.amp.autocast, which does nothing on npu and cpu"),
    Hook(_FP16OptimizerMixin, "build_fp32_params", amp.build_fp32_params,
         "builds the flat fp32 master copy on the parameters' device",
         "stock calls torch.cuda.current_device(), so --fp16 fails on npu and cpu"),
    Hook(_FP16OptimizerMixin, "_sync_fp16_grads_to_fp32", amp.sync_fp16_grads_to_fp32,
         "with --optimizer fused_adamw and flat master params: one multi-tensor copy of the fp16 grads into the "
         "flat fp32 grad", "stock copies tensor by tensor: about 2,400 host operators per update for roberta_base "
         "(bit-identical result)"),
    Hook(_FP16OptimizerMixin, "_sync_fp32_params_to_fp16", amp.sync_fp32_params_to_fp16,
         "with --optimizer fused_adamw and flat master params: one multi-tensor copy of the updated fp32 params "
         "back to the fp16 params", "as above, after the step"),
    Hook(_FP16OptimizerMixin, "state_dict", amp.half_precision_state_dict,
         "--fp16 / --bf16 (O2): the fp32 master weights and the loss scaler's counters are saved with the "
         "optimizer state (fairseq_npu/amp/master_weights_state.py)",
         "stock saves only the half-precision model: a resumed run rebuilds the masters as w.half().float() and "
         "every later update differs from the uninterrupted run"),
    Hook(_FP16OptimizerMixin, "load_state_dict", amp.half_precision_load_state_dict,
         "restores them after the stock load (a checkpoint without them loads as before)", "as above"),
    Hook(_MemoryEfficientFP16OptimizerMixin, "state_dict", amp.half_precision_state_dict,
         "--memory-efficient-fp16/bf16: the loss scaler's counters are saved with the optimizer state",
         "stock saves the loss scale only: a resumed run raises the scale at other updates"),
    Hook(_MemoryEfficientFP16OptimizerMixin, "load_state_dict", amp.half_precision_load_state_dict,
         "restores them after the stock load", "as above"),
    Hook(DynamicLossScaler, "check_overflow", amp.check_overflow, "counts skipped steps, logged as 'overflows'",
         "stock logs one line per overflow but no count"),
    # ---- --use-apex: apex.amp drives the run (fairseq_npu/hooks/apex.py, fairseq_npu/amp/apex_amp.py)
    Hook(Trainer, "_build_optimizer", apex.build_optimizer,
         "--use-apex: apex.amp.initialize(model, optimizer, opt_level, loss_scale[, combine_grad]) after the stock "
         "build; a rebuild keeps apex's optimizer",
         "the ModelZoo recipe ran apex.amp from a forked Trainer; stock has no apex"),
    Hook(FairseqOptimizer, "backward", apex.backward,
         "--use-apex: the backward pass through amp.scale_loss(loss, optimizer)", "stock calls loss.backward(), "
         "unscaled"),
    Hook(FairseqOptimizer, "clip_grad_norm", apex.clip_grad_norm,
         "--use-apex: a step apex skips for overflow raises fairseq's OverflowError (no update, 'overflows' "
         "logged); logs apex's loss_scale",
         "otherwise fairseq counts the skipped step as an update, or stops on the inf grad norm"),
    Hook(FairseqFusedAdamW, "clip_grad_norm", apex.clip_grad_norm,
         "the same for fused_adamw, which computes the norm itself (multi-tensor) instead of inheriting it",
         "as above, with --optimizer fused_adamw"),
    Hook(FairseqOptimizer, "state_dict", apex.state_dict,
         "--use-apex: adds apex.amp.state_dict() (the loss scalers) to the optimizer state that checkpoints save",
         "apex keeps its loss scale in module globals: a resumed run would restart from 2**16 and overflow down"),
    Hook(FairseqOptimizer, "load_state_dict", apex.load_state_dict,
         "--use-apex: restores apex.amp's loss scalers from that state", "as above"),
    # ---- the batch-reading thread (fairseq_npu/hooks/data_thread.py)
    Hook(BackgroundConsumer, "run", data_thread.run,
         "reads no further batch once the process exits; an atexit handler lets the thread end before finalization",
         "the daemon thread keeps reading after training stops at --max-update; if Python finalizes while it is "
         "inside torch, the process aborts (exit 134, 'terminate called without an active exception') after "
         "'done training'"),
    # ---- library versions and other cuda-only code (fairseq_npu/hooks/compat.py)
    Hook(utils.set_torch_seed, "__init__", compat.set_torch_seed_init,
         "also seeds the npu generator; on a cpu run seeds the cpu generator only",
         "stock seeds cpu and cuda only, so npu dropout would not be reproducible; on a cpu run torch.manual_seed "
         "queues seeds for uninitialized accelerators, 1.3 ms per update under cProfile"),
    Hook(token_block_dataset, "np", compat.NumpyWithCompat,
         "the module's numpy, plus compat.long (= int64), under numpy 2",
         "numpy 2 removed np.compat, so masked_lm --sample-break-mode eos fails", compat.numpy_lacks_compat),
    Hook(language_pair_dataset, "np", compat.NumpyWithCompat,
         "the module's numpy, plus compat.long (= int64), under numpy 2",
         "numpy 2 removed np.compat, so translation datasets fail to batch", compat.numpy_lacks_compat),
]


def install() -> List[str]:
    """Apply every hook; safe to call again. Returns the targets this call replaced (none on a second call)."""
    return [hook.target for hook in HOOKS if hook.install()]


def installed() -> List[str]:
    """The targets replaced in this process (``python -m fairseq_npu.hooks --json``)."""
    return [hook.target for hook in HOOKS if hook.installed()]


def describe() -> str:
    """One line per hook, for ``python -m fairseq_npu.hooks``."""
    return "\n".join(f"- {h.target}: {h.change} (why: {h.why})" for h in HOOKS)


def markdown_table() -> str:
    """The table of docs/hooks.md (``python -m fairseq_npu.hooks --markdown``; a test keeps the file in step)."""
    rows = ["| replaced | change | why | wrapper |", "|---|---|---|---|"]
    for h in HOOKS:
        where = f"{h.make.__module__}.{h.make.__qualname__}".replace("fairseq_npu.", "", 1)
        rows.append(f"| `{h.target}` | {h.change} | {h.why} | `{where}` |")
    return "\n".join(rows)
