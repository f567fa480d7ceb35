"""The fairseq command line of a launch: a request from test/*.sh, its recipe and the device -> fairseq-train (or
fairseq-npu-evaluate) arguments, and the plan (recipe, schedule, batch, precision) written beside them.

The recipes, presets and schedules come from ``recipes.py``, the GLUE facts from ``fairseq_npu.glue_tasks``, the
precision policy from ``fairseq_npu.precision``. The plugin's fairseq names (task, optimizer, best-checkpoint metric) are chosen
here and nowhere else. No fairseq import (test/common.sh runs this with the plugin off).
"""

import os
import struct
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from fairseq_npu import precision
from fairseq_npu.argv import flag_value
from fairseq_npu.glue_tasks import GlueTask

from .recipes import (ARCH, FP16_ARGS, LOG_INTERVAL, MODEL_ARGS, MODELS, MODES, PERFORMANCE_UPDATES, PRECISIONS,
                      PRESETS, RECIPES, fast_settings, glue_task, schedule)

# ---------------------------------------------------------------------------------------------------------------
# the plugin's names (stock equivalents: task sentence_prediction, optimizer adam, metric accuracy)

TRAIN_TASK = "sentence_prediction_npu"  # logs the task's official GLUE metric as "glue"
CRITERION = "sentence_prediction"
OPTIMIZER = "fused_adamw"  # fairseq adam semantics, fused kernels
STOCK_OPTIMIZER = "adam"
LOGGED_METRIC = "glue"

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
    short = {"bfloat16": "bf16", "float16": "fp16"}
    if "--amp" in args:
        # --amp-dtype auto (precision.amp_dtype): bfloat16 on cpu, float16 on the accelerators
        dtype = flag_value(args, "--amp-dtype") or ("bfloat16" if device_type == "cpu" else "float16")
        return "O1", short[dtype]
    weights = precision.half_weights_on_command_line(args)
    return ("O2", short[weights]) if weights else ("-", "fp32")


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
    # the recipe fills in only what the user left out: a value given (checked by test/common.sh) is used as given
    batch_size = req.batch_size if req.batch_size is not None else recipe.batch_size
    update_freq = int(flag_value(extra, "--update-freq") or 1)
    num_classes = req.num_classes if req.num_classes is not None else task.num_classes
    metric = LOGGED_METRIC
    max_positions = int(flag_value(extra, "--max-positions") or 512)
    data_args = fast_settings(req.device, max_positions, batch_size, train_size) if fast and req.mode != "eval" else []
    max_tokens = req.max_tokens if req.max_tokens is not None else 4400
    if "--static-batch" in data_args and req.max_tokens is None:  # room for a full batch at the longest padded length
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
            "--batch-size", str(batch_size), "--max-tokens", str(max_tokens),
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
            updates = PERFORMANCE_UPDATES if req.max_update is None else req.max_update
            args += ["--max-update", str(updates), "--disable-validation", "--no-save"]
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
