"""The plugin's one inference loop, shared by fairseq-npu-evaluate, fairseq-npu-predict and the launch scripts'
evaluation (test/train_eval_8p.sh): load a sentence-prediction checkpoint and run it over a split.

Under torchrun (``WORLD_SIZE`` > 1) each process takes one shard of the batches, on device ``LOCAL_RANK``, with the
device's collective backend (hccl, nccl, gloo); the callers gather what they need. The loop times itself: samples
after each process's first batch, with the device synchronised (the first batch pays for compilation).
"""

import argparse
import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Dict, Iterator, Optional, Tuple

import numpy as np
import torch

from fairseq_npu import glue_tasks
from fairseq_npu.cli.checkpoint_kind import check_checkpoint_kind

logger = logging.getLogger("fairseq_npu.cli")


def add_common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="binarized task directory (TASK-bin with input0/, input1/, label/)")
    parser.add_argument("--path", required=True, help="checkpoint to load (checkpoint_best.pt, ...)")
    parser.add_argument("--split", default=None, help="split to run on (evaluate: valid, predict: test)")
    parser.add_argument("--glue-task", default=None,
                        help=f"GLUE task ({', '.join(glue_tasks.GLUE_TASKS)}); "
                             "default: inferred from the data directory name")
    parser.add_argument("--batch-size", type=int, default=64, help="sentences per batch (default: 64)")
    parser.add_argument("--max-tokens", type=int, default=None, help="padded tokens per batch (default: no limit)")
    parser.add_argument("--device-type", choices=("auto", "npu", "cuda", "cpu"), default=None,
                        help="device to run on (default: $FAIRSEQ_NPU_DEVICE or auto: npu > cuda > cpu)")
    parser.add_argument("--cpu", action="store_true", help="run on cpu (same as --device-type cpu)")
    parser.add_argument("--amp", action="store_true",
                        help="autocast the forward pass to the device's half dtype (fp16, or bf16 on cpu)")
    parser.add_argument("--fp16", action="store_true", help="half (float16) weights, as fairseq-train --fp16")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 weights, as fairseq-train --bf16")


def quiet_logs() -> None:
    """Only warnings and errors on stderr: fairseq logs every dataset it loads at INFO."""
    import fairseq_npu  # noqa: F401  (imports fairseq, which configures the root logger)

    logging.basicConfig(format="%(asctime)s | %(levelname)s | %(name)s | %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)


@dataclass
class Batch:
    ids: np.ndarray  # dataset indices (= line numbers of the split)
    outputs: torch.Tensor  # classification head output, float32 on cpu: (bsz, num_classes)
    targets: Optional[torch.Tensor]  # class indices or regression targets on cpu, or None (unlabelled split)


@dataclass
class Timing:
    samples: int = 0  # every sentence this process ran
    timed_samples: int = 0  # those after its first batch
    seconds: float = 0.0  # from the end of the first batch to the end of the last, device synchronised


def init_distributed(backend) -> Tuple[int, int]:
    """(rank, world size): joins torchrun's process group when ``WORLD_SIZE`` > 1, else (0, 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    if not dist.is_initialized():
        backend.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend=backend.dist_backend)
    return dist.get_rank(), dist.get_world_size()


def gather(obj, world: int) -> list:
    """``obj`` of every process, in rank order (a list of one without torchrun)."""
    if world <= 1:
        return [obj]
    import torch.distributed as dist

    out = [None] * world
    dist.all_gather_object(out, obj)
    return out


class Predictor:
    """A checkpoint, its task (data, dictionaries) and the device, ready to run over a split."""

    def __init__(self, args: argparse.Namespace):
        import fairseq_npu  # noqa: F401  (registers tasks/models and installs the device hooks)
        from fairseq import checkpoint_utils

        from fairseq_npu import device, precision
        from fairseq_npu.environment import check_environment

        check_environment()
        if not os.path.isfile(args.path):
            raise FileNotFoundError(f"--path: no checkpoint at {args.path}")
        if not os.path.isdir(args.data):
            raise FileNotFoundError(f"data directory {args.data} does not exist")
        self.backend = device.set_backend(args.device_type, force_cpu=args.cpu)
        self.rank, self.world = init_distributed(self.backend)
        overrides = {"data": args.data}
        state = checkpoint_utils.load_checkpoint_to_cpu(args.path, arg_overrides=overrides)  # verified first
        glue_task = glue_tasks.glue_task(args.glue_task) if args.glue_task else glue_tasks.infer_glue_task(args.data)
        check_checkpoint_kind(args.path, state, args.data, glue_task)
        models, cfg, task = checkpoint_utils.load_model_ensemble_and_task(
            [args.path], arg_overrides=overrides, state=state
        )
        self.model = models[0]
        self.task = task
        self.cfg = cfg
        self.regression = bool(getattr(task.cfg, "regression_target", False))
        self.head = getattr(task.cfg, "classification_head_name", "sentence_classification_head")
        if not hasattr(self.model, "classification_heads") or self.head not in self.model.classification_heads:
            raise ValueError(f"--path {args.path}: the model has no classification head named {self.head!r}")
        self.glue_task = glue_task
        self.device = self.backend.device() if self.backend.type != "cpu" else torch.device("cpu")
        # weights and autocast as training's flags decide them (fairseq_npu.precision)
        self.precision = precision.policy(
            argparse.Namespace(amp=args.amp, fp16=getattr(args, "fp16", False), bf16=getattr(args, "bf16", False)),
            self.backend,
        )
        self.model.to(dtype=self.precision.weights_dtype()).to(self.device).eval()
        self.timing: Dict[str, Timing] = {}
        self.batch_size = args.batch_size
        self.max_tokens = args.max_tokens

    def num_sentences(self, split: str) -> int:
        return len(self.task.dataset(split))

    def batches(self, split: str) -> Iterator[Batch]:
        from fairseq import utils

        self.task.load_dataset(split)
        dataset = self.task.dataset(split)
        itr = self.task.get_batch_iterator(
            dataset=dataset,
            max_tokens=self.max_tokens,
            max_sentences=self.batch_size,
            max_positions=utils.resolve_max_positions(self.task.max_positions(), self.model.max_positions()),
            ignore_invalid_inputs=False,
            seed=1,
            num_shards=self.world,
            shard_id=self.rank,
            epoch=1,
            disable_iterator_cache=True,
        ).next_epoch_itr(shuffle=False)
        timing = self.timing[split] = Timing()
        first_done = None
        with torch.no_grad():
            for sample in itr:
                if not sample:  # the padding batch of a shorter shard
                    continue
                sample = utils.move_to_cuda(sample, device=self.device) if self.device.type != "cpu" else sample
                with self.precision.autocast():
                    logits, _ = self.model(**sample["net_input"], features_only=True, classification_head_name=self.head)
                target = sample.get("target")
                batch = Batch(
                    ids=sample["id"].cpu().numpy(),
                    outputs=logits.float().cpu(),  # a host copy: the device is done with this batch
                    targets=target.cpu() if target is not None else None,
                )
                timing.samples += len(batch.ids)
                if first_done is None:
                    first_done = time.perf_counter()
                else:
                    timing.timed_samples += len(batch.ids)
                    timing.seconds = time.perf_counter() - first_done
                yield batch
