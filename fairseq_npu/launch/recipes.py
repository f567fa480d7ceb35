"""Published GLUE fine-tuning recipes, and the fairseq-train command line the launch scripts run.

RoBERTa: fairseq's GLUE table (examples/roberta/README.glue.md == examples/roberta/config/finetuning/*.yaml).
ALBERT: google-research/albert run_glue.sh (== ALBERT paper, appendix A.4).

A recipe gives an update count at one batch size. Runs with another global batch size (8 devices, --update-freq,
another --batch-size), another number of epochs or another amount of training data keep what the recipe means:
the same number of epochs and the same warm-up *fraction*, so the learning rate warms up for the first 6% of
training whatever the device count (the ModelZoo's 8p script kept the 1p update counts at 8x the batch size and
never finished warming up). At the published configuration the published numbers come out unchanged.

On top of the recipe, the ``fast`` preset (the default) adds the device's fastest settings (``fast_settings``; the
precision comes from ``fairseq_npu.precision.launch_default``); ``stock`` keeps fairseq's optimizer and precision.
The GLUE facts (train sizes, metrics, validation subsets) come from ``fairseq_npu.glue_tasks``. The fairseq names
(task, optimizer, best-checkpoint metric) are chosen here and nowhere else.
"""

import math
import os
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from fairseq_npu import glue_tasks, precision
from fairseq_npu.argv import flag_value  # noqa: F401  (re-exported: the launch helpers read it from here)
from fairseq_npu.glue_tasks import GlueTask

# ---------------------------------------------------------------------------------------------------------------
# the plugin's names (stock equivalents: task sentence_prediction, optimizer adam, metric accuracy)

TRAIN_TASK = "sentence_prediction_npu"  # logs the task's official GLUE metric as "glue"
CRITERION = "sentence_prediction"
OPTIMIZER = "fused_adamw"  # fairseq adam semantics, fused kernels
STOCK_OPTIMIZER = "adam"
LOGGED_METRIC = "glue"
ARCH = {"roberta": "roberta_base", "albert": "albert_base"}
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
        task = glue_tasks.glue_task(name)
    except ValueError:
        task = None
    if task is None or task.name not in ROBERTA_RECIPES:
        why = "unknown GLUE task" if task is None else "no published recipe for this GLUE task"
        raise ValueError(f"--task={name}: {why}; known: {', '.join(ROBERTA_RECIPES)}")
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
    if device_type != "npu":
        return grouping
    buckets = [b for b in NPU_PAD_BUCKETS if b < max_positions]
    return grouping + ["--pad-buckets", ",".join(map(str, buckets)), "--static-batch", "fill"]


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
    train_size = train_size or task.train_size
    published_epochs = recipe.total_updates * recipe.batch_size / task.train_size
    epochs = float(max_epoch) if max_epoch else published_epochs
    per_epoch = updates_per_epoch(train_size, batch_size, world_size, update_freq)
    published = (
        batch_size * world_size * update_freq == recipe.batch_size
        and train_size == task.train_size
        and not max_epoch
    )
    if published:
        total, warmup = recipe.total_updates, recipe.warmup_updates
    else:
        total = max(1, round(epochs * per_epoch))
        warmup = max(1, round(total * recipe.warmup_updates / recipe.total_updates))
    return Schedule(total, warmup, max_epoch or math.ceil(epochs - 1e-9), epochs, per_epoch, published)


# ---------------------------------------------------------------------------------------------------------------
# data


def dataset_size(index_path: str) -> Optional[int]:
    """Number of items in a fairseq binarized dataset (its ``.idx`` file), or None if it can't be read."""
    try:
        with open(index_path, "rb") as f:
            head = f.read(34)
    except OSError:
        return None
    if head[:9] == b"MMIDIDX\x00\x00":  # mmap: magic, version <Q, dtype <B, length <Q
        return struct.unpack("<Q", head[18:26])[0]
    if head[:8] == b"TNTIDX\x00\x00":  # cached/lazy: magic, version <Q, dtype code + element size <QQ, length <Q
        return struct.unpack("<Q", head[32:40])[0] if len(head) >= 40 else None
    return None


def check_data(data: str, task: GlueTask, mode: str) -> Optional[int]:
    """Raise ValueError naming what is missing from a preprocessed GLUE folder; returns the train size."""
    if not os.path.isdir(data):
        raise ValueError(f"--data_path={data}: no such directory (preprocess with glue_scripts/preprocess_GLUE_tasks.sh)")
    dictionary = os.path.join(data, "input0", "dict.txt")
    if not os.path.isfile(dictionary):
        raise ValueError(f"--data_path={data}: {dictionary} not found; expected the fairseq layout TASK-bin/input0,label")
    if mode != "eval":
        for name in ("train.idx", "train.bin"):
            if not os.path.isfile(os.path.join(data, "input0", name)):
                raise ValueError(f"--data_path={data}: input0/{name} not found (the train split is needed to train)")
    return dataset_size(os.path.join(data, "input0", "train.idx"))


# ---------------------------------------------------------------------------------------------------------------
# command line


def amp_mode(args: Sequence[str], device_type: str) -> Tuple[str, str]:
    """(AMP type as the published tables write it, dtype) for a fairseq command line on ``device_type``."""
    if "--use-apex" in args:
        level = flag_value(args, "--opt-level") or precision.DEFAULT_OPT_LEVEL
        return f"apex {level}", "bf16" if "--bf16" in args else "fp16"
    half = "bf16" if ("--bf16" in args or "--memory-efficient-bf16" in args) else "fp16"
    if "--amp" in args:
        # --amp-dtype auto (precision.amp_dtype): bfloat16 on cpu, float16 on the accelerators
        dtype = flag_value(args, "--amp-dtype") or ("bfloat16" if device_type == "cpu" else "float16")
        return "O1", {"bfloat16": "bf16", "float16": "fp16"}[dtype]
    if any(a in args for a in ("--fp16", "--bf16", "--memory-efficient-fp16", "--memory-efficient-bf16")):
        return "O2", half
    return "-", "fp32"


@dataclass
class LaunchRequest:
    """What a launch script was asked for (the flags of test/*.sh)."""

    mode: str
    data: str
    model: str = "roberta"
    task: str = "SST-2"
    device: str = "cpu"
    world_size: int = 1
    output_dir: str = "."
    batch_size: Optional[int] = None
    lr: Optional[float] = None
    max_epoch: Optional[int] = None
    max_update: Optional[int] = None  # performance runs: updates to time
    max_tokens: Optional[int] = None
    num_classes: Optional[int] = None
    restore_file: Optional[str] = None
    use_apex: bool = False
    opt_level: str = precision.DEFAULT_OPT_LEVEL
    precision: str = "auto"
    preset: str = "fast"
    extra: Tuple[str, ...] = ()  # passed to fairseq verbatim, after the recipe (so they override it)


def precision_args(req: LaunchRequest, bf16: bool = False) -> List[str]:
    """fairseq precision flags; ``bf16``: the device computes bfloat16 natively (precision.native_bf16)."""
    if req.use_apex:
        if req.mode == "eval":  # evaluation runs the torch.amp equivalent of the apex level (no optimizer to wrap)
            return {"O0": [], "O1": ["--amp"], "O2": ["--fp16"]}[req.opt_level]
        return ["--use-apex", "--opt-level", req.opt_level]
    chosen = precision.launch_default(req.device, req.preset, bf16) if req.precision == "auto" else req.precision
    if chosen not in PRECISIONS:
        raise ValueError(f"--precision={req.precision}: expected one of {', '.join(PRECISIONS)}")
    fp16 = ["--fp16"] if req.mode == "eval" else FP16_ARGS  # loss scaling means nothing without training
    return {"fp32": [], "fp16": fp16, "bf16": ["--bf16"], "amp": ["--amp"]}[chosen]


def build(req: LaunchRequest) -> Tuple[List[str], dict]:
    """The fairseq command line for a launch request, and the plan (recipe, schedule, batch) behind it."""
    if req.model not in MODELS:
        raise ValueError(f"--model={req.model}: expected one of {', '.join(MODELS)}")
    if req.mode not in MODES:
        raise ValueError(f"mode {req.mode}: expected one of {', '.join(MODES)}")
    from fairseq_npu import device  # the device names and their collective backends (imports torch, not fairseq)

    if req.device not in device.DIST_BACKENDS:
        raise ValueError(f"--device={req.device}: expected one of {', '.join(device.DIST_BACKENDS)}")
    if req.preset not in PRESETS:
        raise ValueError(f"--preset={req.preset}: expected one of {', '.join(PRESETS)}")
    task = glue_task(req.task)
    recipe = RECIPES[req.model][task.name]
    fast = req.preset == "fast"
    bf16 = fast and precision.native_bf16(req.device)  # asked of torch on this machine
    train_size = check_data(req.data, task, req.mode)
    extra = list(req.extra)
    batch_size = req.batch_size or recipe.batch_size
    update_freq = int(flag_value(extra, "--update-freq") or 1)
    num_classes = req.num_classes or task.num_classes
    metric = LOGGED_METRIC
    max_positions = int(flag_value(extra, "--max-positions") or 512)
    data_args = fast_settings(req.device, max_positions, batch_size, train_size) if fast and req.mode != "eval" else []
    max_tokens = req.max_tokens or 4400
    if "--static-batch" in data_args and not req.max_tokens:  # room for a full batch at the longest padded length
        max_tokens = max(max_tokens, batch_size * max_positions)
    device_args = ["--device-type", req.device] + (["--cpu"] if req.device == "cpu" else [])
    common = [
        req.data, "--user-dir", os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "--task", TRAIN_TASK,
        "--max-tokens", str(max_tokens), "--required-batch-size-multiple", "1", "--seed", "1",
    ] + device_args
    model_task = [
        "--criterion", CRITERION, "--arch", ARCH[req.model], "--num-classes", str(num_classes),
        "--glue-task", task.name,
    ] + (["--regression-target"] if task.regression else [])
    distributed = []
    if req.world_size > 1:
        distributed = ["--distributed-world-size", str(req.world_size),
                       "--distributed-backend", device.DIST_BACKENDS[req.device]]
        if req.mode != "eval":  # each rank reads --restore-file itself: no pickled broadcast of the whole state
            distributed.append("--load-checkpoint-on-all-dp-ranks")
    plan = {
        "model": req.model, "arch": flag_value(extra, "--arch") or ARCH[req.model], "task": task.name,
        "mode": req.mode, "device_type": req.device, "world_size": req.world_size, "metric": metric,
        # the leaderboard's headline metric, and all of them (their mean is what "glue" logs)
        "official_metric": task.metrics[0], "official_metrics": "/".join(task.metrics),
        "valid_subsets": task.valid_subsets, "num_classes": num_classes, "train_size": train_size,
        # what the preset added to the published recipe, and the capability it was chosen by
        "preset": req.preset, "native_bf16": bf16 if fast else None, "fast_settings": data_args,
    }

    if req.mode == "eval":
        path = req.restore_file or os.path.join(req.output_dir, "checkpoints", "checkpoint_best.pt")
        # fairseq-npu-evaluate's command line (fairseq_npu/cli/evaluate.py, the plugin's one inference loop): the
        # model and task settings come from the checkpoint; under torchrun each rank scores its shard
        args = [
            req.data, "--path", path, "--split", task.valid_subsets, "--glue-task", task.name,
            "--batch-size", str(batch_size), "--max-tokens", str(req.max_tokens or 4400),
        ] + device_args + precision_args(req, bf16) + extra + ["--json"]
        plan.update(checkpoint=path, per_device_batch_size=batch_size, update_freq=1,
                    global_batch_size=batch_size * req.world_size)
    else:
        sched = schedule(task, recipe, batch_size=batch_size, world_size=req.world_size, update_freq=update_freq,
                         train_size=train_size, max_epoch=req.max_epoch)
        lr = req.lr if req.lr is not None else recipe.lr
        args = common + model_task + list(MODEL_ARGS[req.model]) + [
            "--batch-size", str(batch_size), "--optimizer", OPTIMIZER if fast else STOCK_OPTIMIZER, "--lr", repr(lr),
            "--lr-scheduler", "polynomial_decay", "--total-num-update", str(sched.total_updates),
            "--warmup-updates", str(sched.warmup_updates), "--max-epoch", str(sched.max_epoch),
            "--find-unused-parameters",  # the LM head gets no gradient when fine-tuning
            "--log-interval", str(LOG_INTERVAL[req.mode]),
        ] + data_args + precision_args(req, bf16) + distributed
        if req.restore_file:
            args += ["--restore-file", req.restore_file, "--reset-optimizer", "--reset-dataloader", "--reset-meters"]
        if req.mode == "full":
            best = ["--best-checkpoint-metric", metric, "--maximize-best-checkpoint-metric"]
            args += ["--max-update", str(sched.total_updates), "--no-epoch-checkpoints",
                     "--valid-subset", task.valid_subsets] + best
        else:
            args += ["--max-update", str(req.max_update or PERFORMANCE_UPDATES), "--disable-validation", "--no-save"]
        # the scripts read the json log and own the checkpoint folder: these come last so they win
        args += extra + ["--log-format", "json", "--save-dir", os.path.join(req.output_dir, "checkpoints")]
        update_freq = int(flag_value(args, "--update-freq") or 1)
        plan.update(
            lr=float(flag_value(args, "--lr")), per_device_batch_size=batch_size, update_freq=update_freq,
            global_batch_size=batch_size * req.world_size * update_freq,
            total_num_update=int(flag_value(args, "--total-num-update")),
            warmup_updates=int(flag_value(args, "--warmup-updates")),
            max_update=int(flag_value(args, "--max-update")), max_epoch=int(flag_value(args, "--max-epoch")),
            schedule_epochs=round(sched.epochs, 3), published_schedule=sched.published,
            recipe={"lr": recipe.lr, "batch_size": recipe.batch_size, "total_updates": recipe.total_updates,
                    "warmup_updates": recipe.warmup_updates},
        )
    plan["amp_type"], plan["amp_dtype"] = amp_mode(args, req.device)
    plan["optimizer"] = flag_value(args, "--optimizer")
    plan["arch"] = flag_value(args, "--arch") or plan["arch"]
    return args, plan
