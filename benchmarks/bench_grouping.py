"""Length grouping on real SST-2: padding ratio, dev accuracy and time, stock task vs sentence_prediction_npu.

Trains the same small RoBERTa from scratch twice with the same seed and flags, once with stock
``--task sentence_prediction`` and once with ``--task sentence_prediction_npu --group-by-length`` (plus any
``--npu-flags``), side by side (two processes), and reports per run: padding share of the token positions (computed from the batches each
task builds in an epoch, so the stock run is measured too), dev accuracy after each epoch, and training time.

    python -m benchmarks.bench_grouping [--layers 2] [--dim 128] [--epochs 1] [--out work_dirs/bench_grouping]

Data: GPT-2-BPE-binarized SST-2 from /work/shared/data, built and cached by benchmarks/glue_data.py.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import glue_data
from fairseq_npu.launch import training_log
from benchmarks.common import REPO as ROOT


def train_args(data: Path, task: str, a, save_dir: Path, extra=()):
    return [
        str(data), "--user-dir", str(ROOT / "fairseq_npu"), "--task", task, "--criterion", "sentence_prediction",
        "--arch", "roberta", "--encoder-layers", str(a.layers), "--encoder-embed-dim", str(a.dim),
        "--encoder-ffn-embed-dim", str(4 * a.dim), "--encoder-attention-heads", str(max(1, a.dim // 64)),
        "--max-positions", "512", "--num-classes", "2", "--init-token", "0", "--separator-token", "2",
        "--batch-size", "32", "--max-tokens", "4400", "--required-batch-size-multiple", "1",
        "--optimizer", "adam", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6", "--weight-decay", "0.01",
        "--lr-scheduler", "polynomial_decay", "--lr", str(a.lr), "--warmup-updates", "200",
        "--total-num-update", str(a.epochs * 2105), "--max-epoch", str(a.epochs), "--dropout", "0.1",
        "--attention-dropout", "0.1", "--seed", str(a.seed), "--cpu", "--num-workers", "0",
        "--log-format", "json", "--log-interval", "500", "--no-progress-bar",
        "--save-dir", str(save_dir), "--no-save", *extra,
    ]


def epoch_padding(data: Path, task: str, a, extra=()) -> float:
    """Padding share of the positions in one training epoch's batches, as the task builds them."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_npu  # noqa: F401

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(
        options.get_training_parser(), train_args(data, task, a, Path("/nonexistent"), extra)))
    t = tasks.setup_task(cfg.task)
    t.load_dataset("train")
    itr = t.get_batch_iterator(dataset=t.dataset("train"), max_tokens=4400, max_sentences=32,
                               max_positions=512, ignore_invalid_inputs=True, seed=a.seed, epoch=1)
    pad = positions = 0
    for sample in itr.next_epoch_itr(shuffle=True):
        tokens = sample["net_input"]["src_tokens"]
        positions += tokens.numel()
        pad += tokens.numel() - int(sample["ntokens"])
    return pad / positions


def start(data: Path, task: str, a, out: Path, extra=()):
    log = out / f"{task}.log"
    cmd = ["fairseq-train", *train_args(data, task, a, out / f"ckpt-{task}", extra)]
    env = dict(os.environ, OMP_NUM_THREADS="1")  # two runs side by side: one thread each, no oversubscription
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env=env)
    return proc, cmd, log, time.time()


def finish(task, extra, proc, cmd, log, started):
    if proc.wait() != 0:
        raise RuntimeError(f"{task} run failed, see {log}")
    wall = time.time() - started
    records = training_log.parse(log.read_text()).records
    valid, train = records.get("valid", []), records.get("train", [])
    return {
        "task": task, "flags": list(extra), "wall_s": round(wall, 1),
        "dev_accuracy_per_epoch": [float(v["valid_accuracy"]) for v in valid],
        "train_wall_s": float(train[-1]["train_wall"]) if train else None,
        "logged_pad_ratio": float(train[-1]["train_pad_ratio"]) if train and "train_pad_ratio" in train[-1] else None,
        "command": " ".join(cmd),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--epochs", type=int, default=1, help="epochs of 2,105 updates (SST-2 at batch size 32)")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--npu-flags", default="--group-by-length", help="flags of the sentence_prediction_npu run")
    p.add_argument("--padding-only", action="store_true", help="measure the padding ratios only, no training")
    p.add_argument("--out", type=Path, default=ROOT / "work_dirs" / "bench_grouping")
    a = p.parse_args(argv)

    data = glue_data.build("roberta", "SST-2")
    a.out.mkdir(parents=True, exist_ok=True)
    extra = a.npu_flags.split()
    result = {
        "data": str(data),
        "model": f"roberta {a.layers} layers x {a.dim}, from scratch, {a.epochs} epochs, bs 32, seed {a.seed}",
        "pad_ratio_stock": round(epoch_padding(data, "sentence_prediction", a), 4),
        "pad_ratio_npu": round(epoch_padding(data, "sentence_prediction_npu", a, extra), 4),
    }
    if a.padding_only:
        print(json.dumps(result, indent=1))
        return 0
    # both runs at once: accuracy and padding are the point here, not time (see bench_throughput.py for speed)
    stock = start(data, "sentence_prediction", a, a.out)
    ours = start(data, "sentence_prediction_npu", a, a.out, extra)
    result["runs"] = [finish("sentence_prediction", [], *stock), finish("sentence_prediction_npu", extra, *ours)]
    (a.out / "result.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
