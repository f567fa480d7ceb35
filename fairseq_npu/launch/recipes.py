"""Published GLUE fine-tuning recipes, the presets the launch scripts add to them, and their schedules.

RoBERTa: fairseq's GLUE table (examples/roberta/README.glue.md == examples/roberta/config/finetuning/*.yaml).
ALBERT: google-research/albert run_glue.sh (== ALBERT paper, appendix A.4).

A recipe gives an update count at one batch size. Runs with another global batch size (8 devices, --update-freq,
another --batch-size), another number of epochs or another amount of training data keep what the recipe means:
the same number of epochs and the same warm-up *fraction*, so the learning rate warms up for the first 6% of
training whatever the device count (the ModelZoo's 8p script kept the 1p update counts at 8x the batch size and
never finished warming up). At the published configuration the published numbers come out unchanged.

On top of the recipe, the ``fast`` preset (the default) adds the device's fastest settings (``fast_settings``; the
precision comes from ``fairseq_npu.precision.launch_default``); ``stock`` keeps fairseq's optimizer and precision.
The GLUE facts (which tasks exist, train sizes, metrics, validation subsets) come from ``fairseq_npu.glue_tasks``;
the fairseq-train command line built from a recipe, and the plugin's fairseq names in it, from ``command.py``.
"""

import math
from dataclasses import dataclass
from typing import List, Optional

from fairseq_npu import glue_tasks
from fairseq_npu.glue_tasks import GlueTask

# ---------------------------------------------------------------------------------------------------------------
# what a launch can ask for

ARCH = {"roberta": "roberta_base", "albert": "albert_base"}  # the fairseq architecture each model's recipes are for
MODELS = tuple(ARCH)
MODES = ("full", "performance", "eval")

# ---------------------------------------------------------------------------------------------------------------
# recipes


@dataclass(frozen=True)
class Recipe:
    lr: float
    batch_size: int  # sentences per update of the published run
    total_updates: int
    warmup_updates: int


# examples/roberta/README.glue.md: 10 epochs, polynomial_decay (linear warm-up, linear decay to 0)
ROBERTA_RECIPES = {
    "MNLI": Recipe(1e-5, 32, 123873, 7432),
    "QNLI": Recipe(1e-5, 32, 33112, 1986),
    "QQP": Recipe(1e-5, 32, 113272, 28318),
    "RTE": Recipe(2e-5, 16, 2036, 122),
    "SST-2": Recipe(1e-5, 32, 20935, 1256),
    "MRPC": Recipe(1e-5, 16, 2296, 137),
    "CoLA": Recipe(1e-5, 16, 5336, 320),
    "STS-B": Recipe(2e-5, 16, 3598, 214),
}

# google-research/albert run_glue.sh
ALBERT_RECIPES = {
    "MNLI": Recipe(3e-5, 128, 10000, 1000),
    "QNLI": Recipe(1e-5, 32, 33112, 1986),
    "QQP": Recipe(5e-5, 128, 14000, 1000),
    "RTE": Recipe(3e-5, 32, 800, 200),
    "SST-2": Recipe(1e-5, 32, 20935, 1256),
    "MRPC": Recipe(2e-5, 32, 800, 200),
    "CoLA": Recipe(1e-5, 16, 5336, 320),
    "STS-B": Recipe(2e-5, 16, 3598, 214),
}

RECIPES = {"roberta": ROBERTA_RECIPES, "albert": ALBERT_RECIPES}


def glue_task(name: str) -> GlueTask:
    """``SST-2``, ``sst2``, ``sst_2``... -> a GLUE task with a published recipe; else ValueError naming the flag."""
    try:
        task = glue_tasks.glue_task(name)  # the known tasks are glue_tasks' (WNLI and AX too)
    except ValueError as err:
        raise ValueError(f"--task={name}: {err}") from None
    if task.name not in ROBERTA_RECIPES:
        raise ValueError(f"--task={name}: no published fine-tuning recipe for {task.name}; recipes exist for "
                         f"{', '.join(ROBERTA_RECIPES)}")
    return task

# the rest of each published command line
MODEL_ARGS = {
    # README.glue.md: dropout .1, adam (0.9, 0.98) eps 1e-6, weight decay .1 on all parameters, no clipping
    "roberta": [
        "--init-token", "0", "--separator-token", "2", "--max-positions", "512",
        "--dropout", "0.1", "--attention-dropout", "0.1",
        "--weight-decay", "0.1", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-06", "--clip-norm", "0.0",
    ],
    # ALBERT v2 fine-tuning: no dropout in the encoder, 0.1 before the classifier, AdamW (0.9, 0.999) eps 1e-6,
    # weight decay 0.01, gradients clipped at 1.0; pairs read [CLS] A [SEP] B [SEP] (see albert_vocab.py)
    "albert": [
        "--init-token", "0", "--max-positions", "512",
        "--dropout", "0.0", "--attention-dropout", "0.0", "--pooler-dropout", "0.1",
        "--weight-decay", "0.01", "--adam-betas", "(0.9, 0.999)", "--adam-eps", "1e-06", "--clip-norm", "1.0",
    ],
}

# fairseq's fp16 recipe (loss scale starts low: fine-tuning overflows early otherwise)
FP16_ARGS = ["--fp16", "--fp16-init-scale", "4", "--threshold-loss-scale", "1", "--fp16-scale-window", "128"]
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "amp")

# ---------------------------------------------------------------------------------------------------------------
# presets: what the launch scripts (and the demo) add to the published recipe. Plain fairseq-train is untouched;
# these are the flags that turn the same fast path on there (docs/launch.md, "Fast by default").

PRESETS = ("fast", "stock")  # stock: the published recipe with fairseq's own optimizer and precision
# npu: every training batch is padded to one of these lengths (longer ones to --max-positions) and holds exactly
# --batch-size sentences, so graphs compile for at most len(NPU_PAD_BUCKETS) + 1 shapes per epoch
NPU_PAD_BUCKETS = (32, 64, 128, 256)
# length grouping sorts shuffled windows of this many batches: sorting the whole split costs a from-scratch RoBERTa
# ~2 dev points after 300 updates, a window of 1024 sentences at batch 32 recovers most of it while batches stay
# 93% real tokens (docs/benchmarks.md, section 3e); a window is at most a quarter of the split, so that batches of
# every length still mix through an epoch
GROUP_WINDOW_BATCHES = 32


def group_window(batch_size: int, train_size: Optional[int]) -> int:
    window = GROUP_WINDOW_BATCHES * batch_size
    return max(batch_size, min(window, train_size // 4)) if train_size else window


def fast_settings(device_type: str, max_positions: int, batch_size: int, train_size: Optional[int]) -> List[str]:
    """The fast preset's data flags for a device (the optimizer and precision are chosen beside them)."""
    # batches of similar length: little padding (SST-2: 66% of the positions -> 7%)
    grouping = ["--group-by-length", "--group-window", str(group_window(batch_size, train_size))]
    # the whole update on the device, no host sync (fairseq_npu/update/); on cuda and npu captured once per pad
    # bucket (npu: where the start-up probe finds that this torch_npu/CANN captures dropout, else eager)
    update = ["--update-mode", "device" if device_type == "cpu" else "graph"]
    if device_type == "cpu":
        # batches collated in the training process: a data worker process takes CPU time from torch's threads,
        # which use every core (2-9% more time per update on 2 cores, docs/benchmarks.md finding 14)
        return grouping + ["--num-workers", "0"] + update
    buckets = [b for b in NPU_PAD_BUCKETS if b < max_positions]
    return grouping + ["--pad-buckets", ",".join(map(str, buckets)), "--static-batch", "fill"] + update


PERFORMANCE_UPDATES = 1000  # updates of a performance run unless --max-update says otherwise
LOG_INTERVAL = {"full": 50, "performance": 10}


# ---------------------------------------------------------------------------------------------------------------
# schedule


@dataclass(frozen=True)
class Schedule:
    total_updates: int
    warmup_updates: int
    max_epoch: int
    epochs: float  # epochs the schedule covers
    updates_per_epoch: int
    published: bool  # True when the published numbers were used unchanged


def updates_per_epoch(train_size: int, batch_size: int, world_size: int, update_freq: int) -> int:
    """Updates in one epoch as fairseq counts them: batches of ``batch_size``, sharded over ranks, accumulated."""
    batches = math.ceil(train_size / batch_size)
    return max(1, math.ceil(math.ceil(batches / world_size) / update_freq))


def schedule(task: GlueTask, recipe: Recipe, *, batch_size: int, world_size: int = 1, update_freq: int = 1,
             train_size: Optional[int] = None, max_epoch: Optional[int] = None) -> Schedule:
    """The recipe's schedule for this run: same epochs and warm-up fraction at any global batch size."""
    train_size = task.train_size if train_size is None else train_size
    published_epochs = recipe.total_updates * recipe.batch_size / task.train_size
    epochs = published_epochs if max_epoch is None else float(max_epoch)
    per_epoch = updates_per_epoch(train_size, batch_size, world_size, update_freq)
    published = (
        batch_size * world_size * update_freq == recipe.batch_size
        and train_size == task.train_size
        and max_epoch is None
    )
    if published:
        total, warmup = recipe.total_updates, recipe.warmup_updates
    else:
        total = max(1, round(epochs * per_epoch))
        warmup = max(1, round(total * recipe.warmup_updates / recipe.total_updates))
    last_epoch = math.ceil(epochs - 1e-9) if max_epoch is None else max_epoch
    return Schedule(total, warmup, last_epoch, epochs, per_epoch, published)
