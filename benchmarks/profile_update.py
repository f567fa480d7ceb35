"""Where an update's time goes on the CPU: ``torch.profiler`` over a window of updates of a training run, the
plugin's ``fairseq-train`` or the Hugging Face Trainer (``benchmarks.hf_trainer``), everything in the window
included (data loading, the framework's Python, the update).

Prints one JSON line: wall and process-CPU ms per update, the ms per update inside aten operators (self CPU time summed; the rest
of the wall time is Python: the framework, the model's modules, data loading), the share of the operator time by
group (matmul, attention, optimizer, norm, casts, ...) and the top operators by self CPU time.

    python -m benchmarks.profile_update fairseq -- DATA --user-dir fairseq_npu ... (fairseq-train's flags)
    python -m benchmarks.profile_update hf -- --model albert --data DATA ... (benchmarks.hf_trainer's flags)

``--skip`` updates run before the window opens (warm-up, first shapes), ``--window`` updates are profiled. The
profile slows the run a little (operator events are recorded), so time with ``benchmarks.compare``; compare
shares and operator counts here.
"""

import argparse
import json
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

# operator -> group; the first matching substring decides (aten names without the "aten::" prefix)
GROUPS = (
    ("optimizer", ("_fused_adam", "_foreach_", "fused_adam")),
    ("attention", ("scaled_dot_product", "_flash_attention", "softmax", "bmm", "baddbmm")),
    ("matmul", ("addmm", "::mm", "matmul", "linear")),
    ("embedding", ("embedding",)),
    ("norm", ("layer_norm",)),
    ("casts/copies", ("_to_copy", "copy_", "clone", "contiguous")),
    ("activation", ("gelu", "tanh", "relu")),
    ("dropout", ("dropout", "bernoulli", "native_dropout")),
    ("loss", ("nll_loss", "log_softmax", "cross_entropy")),
    ("elementwise", ("add", "mul", "div", "sub", "where", "masked_fill", "fill_", "zero_", "ne", "eq", "cumsum")),
)


def group_of(name: str) -> str:
    name = "::" + name.split("::")[-1]
    for group, keys in GROUPS:
        if any(k in name for k in keys):
            return group
    return "other"


class Window:
    """Opens the profiler at update ``skip`` and closes it ``window`` updates later; ``step()`` after each update."""

    def __init__(self, skip: int, window: int, label: str):
        self.skip, self.window, self.label = skip, window, label
        self.count, self.prof, self.t0 = 0, None, None

    def step(self):
        self.count += 1
        if self.count == self.skip:
            self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=False)
            self.prof.__enter__()
            self.t0, self.c0 = time.perf_counter(), time.process_time()
        elif self.count == self.skip + self.window:
            wall, cpu = time.perf_counter() - self.t0, time.process_time() - self.c0
            self.prof.__exit__(None, None, None)
            report(self.prof, wall, cpu, self.window, self.label)


def report(prof, wall_s: float, cpu_s: float, updates: int, label: str, top: int = 15):
    events = [e for e in prof.key_averages() if not e.key.startswith("ProfilerStep")]
    # self time of aten operators only: the Python-level record_function ranges (optimizer.step#..., the
    # Trainer's own) would count their children twice
    ops = [e for e in events if e.key.startswith("aten::")]
    op_us = sum(e.self_cpu_time_total for e in ops)
    groups = {}
    for e in ops:
        g = group_of(e.key)
        groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total
    ops.sort(key=lambda e: -e.self_cpu_time_total)
    out = dict(
        label=label, updates=updates, wall_ms_per_update=1000 * wall_s / updates,
        cpu_ms_per_update=1000 * cpu_s / updates,  # process time: what a busy machine's other jobs barely move
        op_ms_per_update=op_us / 1000 / updates, python_ms_per_update=(1e6 * wall_s - op_us) / 1000 / updates,
        op_calls_per_update=sum(e.count for e in ops) / updates,
        group_share={g: round(v / op_us, 4) for g, v in sorted(groups.items(), key=lambda kv: -kv[1])},
        top=[dict(op=e.key, ms_per_update=round(e.self_cpu_time_total / 1000 / updates, 3),
                  calls_per_update=e.count / updates, share=round(e.self_cpu_time_total / op_us, 4))
             for e in ops[:top]],
        threads=torch.get_num_threads(),
    )
    print("PROFILE " + json.dumps(out), flush=True)


def run_fairseq(argv, skip, window):
    from fairseq_cli.train import cli_main  # first: it sets fairseq-train's log format

    from fairseq import trainer

    # every update path (stock's train_step, the plugin's update object) ends by counting the update here
    win = Window(skip, window, "fairseq")
    set_num_updates = trainer.Trainer.set_num_updates

    def counted(self, num_updates):
        set_num_updates(self, num_updates)
        if num_updates > 0:
            win.step()

    trainer.Trainer.set_num_updates = counted
    sys.argv = ["fairseq-train", *argv]
    cli_main()


def run_hf(argv, skip, window):
    import transformers

    from benchmarks import hf_trainer

    win = Window(skip, window, "hf")

    class Step(transformers.TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            win.step()

    init = transformers.Trainer.__init__

    def with_window(self, *args, **kwargs):
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), Step()]
        init(self, *args, **kwargs)

    transformers.Trainer.__init__ = with_window
    hf_trainer.main(argv)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[:argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("which", choices=("fairseq", "hf"))
    p.add_argument("--skip", type=int, default=20)
    p.add_argument("--window", type=int, default=20)
    a = p.parse_args(ours)
    (run_fairseq if a.which == "fairseq" else run_hf)(rest, a.skip, a.window)


if __name__ == "__main__":
    main()
