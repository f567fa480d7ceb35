"""The host's time per replayed update of the launch's cuda run (``--update-mode graph``), measured on the CPU.

A replayed graph does the device's work in one launch; what is left for the host is fairseq's loop: the next batch
from the data loader, the copy into the graph's input buffers, the learning rate written into its tensor, the
metrics logged as device tensors, the progress and logging. When that takes longer than the graph runs on the
device, the GPU waits and the host sets the rate. No GPU is needed to measure it: this runs the launch script's
cuda command on the CPU with a graph backend whose capture runs the update once (eagerly, as the warm-up does) and
whose replay does nothing, so after the captures an update costs only the host's part.

    python -m benchmarks.graph_host_time [--models roberta,albert] [--updates 600] [--repeats 2]

The models are the base models' depth (12 layers, so the base models' parameter lists, layer calls and logging) at
width 64: the host's part does not depend on the width (the captures are eager, and cheap at that width). Batch 32 of
real SST-2, the launch's cuda flags (pad buckets 32,64,128,256, full batches, length grouping, one data worker);
the precision flag is ``--amp`` (the CPU has no fp16 arithmetic; the replayed update's host part is the same).
Reports, per model, the median ms per update over the logged intervals after all captures (wall clock, data loading
included) and the ms of it inside ``Trainer.train_step``; the rate the host allows: 32 / ms per update; and the ms
per batch of fairseq's training iterator alone, with the launch's one data worker and with none.
Writes benchmarks/results/graph_host_time_cpu.json.
"""

import argparse
import json
import statistics
import subprocess
import sys

from benchmarks import common, glue_data
from benchmarks.bench_host_overhead import NARROW_SIZES

SKIP_UPDATES = 100  # every pad bucket's warm-up and capture lie in the first updates; the rest replay
CHILD = r"""
import contextlib, sys, time
from fairseq_cli.train import cli_main
from fairseq import trainer
import fairseq_npu.update.graphs as graphs
from benchmarks.step_timer import timed


class Stream:
    def wait_stream(self, other):
        pass


class NullGraphs:  # the torch.cuda calls graphs.py makes; a capture runs the update once, a replay nothing
    Stream = Stream
    stream = staticmethod(lambda s: contextlib.nullcontext())
    current_stream = staticmethod(lambda: Stream())
    synchronize = staticmethod(lambda: None)
    graph = staticmethod(lambda g, pool=None: contextlib.nullcontext())
    graph_pool_handle = staticmethod(lambda: object())


class NullGraph:
    def replay(self):
        pass


graphs.graph_backend = lambda device_type: graphs.GraphBackend("cpu", NullGraphs, NullGraph, whole_update=True)
trainer.Trainer.train_step = timed(trainer.Trainer.train_step, "step_ms", time.perf_counter, round_to=3)
sys.argv = ["fairseq-train"] + sys.argv[1:]
sys.exit(cli_main())
"""


def cuda_launch_args(model: str, data, updates: int) -> list:
    """The launch script's cuda performance command (fast preset), moved to the CPU at the narrow sizes."""
    from fairseq_npu.launch.command import LaunchRequest, build
    from fairseq_npu.launch.recipes import FP16_ARGS

    cmd, _ = build(LaunchRequest(mode="performance", data=str(data), model=model, device="cuda", batch_size=32,
                                 max_update=updates, output_dir=str(common.WORK / "graph_host_time"),
                                 extra=tuple(common.model_flags(model, NARROW_SIZES)[2:])))
    args = list(cmd)
    flags = [f for f in FP16_ARGS if f.startswith("--")] + ["--bf16", "--amp"]
    for flag in flags:  # whichever half precision the launch chose off this machine, with its values
        while flag in args:
            i = args.index(flag)
            del args[i:i + (2 if i + 1 < len(args) and not args[i + 1].startswith("--") else 1)]
    i = args.index("--device-type")
    args[i + 1] = "cpu"
    return args + ["--cpu", "--amp"]


def run(args: list) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, cwd=common.REPO,
                          timeout=1800)
    text = done.stdout + done.stderr
    if done.returncode != 0:
        raise RuntimeError(f"run failed (exit code {done.returncode}): {text.strip().splitlines()[-3:]}")
    inner, report = [], None
    for line in text.splitlines():
        if "| train_inner |" in line:
            inner.append(json.loads(line.split("| train_inner |", 1)[1]))
        elif "update: graph report " in line:
            report = json.loads(line.split("update: graph report ", 1)[1])
    steady = [r for r in inner if int(r["num_updates"]) > SKIP_UPDATES]
    if not steady or report is None or not report["captured"]:
        raise RuntimeError(f"no replayed updates to measure: {report}")
    ms = statistics.median(1000.0 / float(r["ups"]) for r in steady)
    return dict(ms_per_update=round(ms, 3), step_ms=round(statistics.median(float(r["step_ms"]) for r in steady), 3),
                pad_ratio=float(inner[-1]["pad_ratio"]), graph_report=report)


def data_ms_per_batch(args: list, num_workers: int, batches: int = 1000) -> float:
    """ms per batch of fairseq's training iterator alone for these flags (the launch's grouping, pad buckets and
    full batches), with ``num_workers`` data worker processes: what the data side can deliver, with no update."""
    import time

    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    import fairseq_npu  # noqa: F401  (the task and its flags)

    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), args))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    iterator = task.get_batch_iterator(
        dataset=task.dataset("train"), max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
        max_positions=cfg.task.max_positions, required_batch_size_multiple=cfg.dataset.required_batch_size_multiple,
        seed=cfg.common.seed, num_workers=num_workers, epoch=1, data_buffer_size=cfg.dataset.data_buffer_size,
    ).next_epoch_itr(shuffle=True)
    start = None
    for n, _ in enumerate(iterator, 1):
        if n == 50:  # the workers started and the buffer filled
            start = time.perf_counter()
        if n == 50 + batches:
            break
    return round((time.perf_counter() - start) * 1000.0 / batches, 3)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="roberta,albert")
    p.add_argument("--updates", type=int, default=600)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data-dir", default=str(common.SHARED_DATA))
    a = p.parse_args(argv)
    result = dict(machine=common.machine(), sizes=NARROW_SIZES, batch_size=32, updates=a.updates,
                  skipped_updates=SKIP_UPDATES, models={})
    for model in a.models.split(","):
        args = cuda_launch_args(model, glue_data.build(model, "SST-2", a.data_dir), a.updates)
        runs = [run(args) for _ in range(a.repeats)]
        ms = statistics.median(r["ms_per_update"] for r in runs)
        data = {f"{w} worker{'s' if w != 1 else ''}": data_ms_per_batch(args, w) for w in (1, 0)}
        result["models"][model] = dict(fairseq_args=args, runs=runs, median_ms_per_update=ms,
                                       host_bound_samples_per_s=round(32000.0 / ms), data_ms_per_batch=data)
        print(f"{model}: {ms:.2f} ms per replayed update on the host ({runs[0]['step_ms']:.2f} ms in train_step), "
              f"at most {32000.0 / ms:.0f} samples/s from the host; graphs {runs[0]['graph_report']['graphs']}, "
              f"replayed {runs[0]['graph_report']['replay_share']:.0%}, padding {runs[0]['pad_ratio']:.0%}; "
              f"the data iterator alone: {data} ms per batch", flush=True)
    print(f"wrote {common.save_result('graph_host_time_cpu', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
