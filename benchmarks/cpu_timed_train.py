"""``fairseq-train`` with each update's process CPU time logged as ``cpu_ms`` in the ``train_inner`` records, and
the part of it spent in the optimizer step as ``opt_cpu_ms`` (where the remaining time per update goes).

On a shared machine wall-clock rates swing with other jobs' load; the CPU time a single-threaded
(``OMP_NUM_THREADS=1``) trainer spends inside ``Trainer.train_step`` barely does, so samples per CPU-second
compare stock and plugin runs fairly even when they could not run on an idle machine. Everything else is
stock ``fairseq-train``: same command-line flags (pass them after the script name).

``BENCH_COMPILE_MODEL=1`` in the environment compiles the model the task builds (``nn.Module.compile()``, torch's
defaults: inductor, shapes made dynamic at the first recompile), to measure what ``torch.compile`` would bring.
"""

import os
import sys
import time

from fairseq_cli.train import cli_main  # first: it sets fairseq-train's log format (read by the benchmarks)

from fairseq import trainer  # noqa: E402
from fairseq.tasks import fairseq_task  # noqa: E402

from benchmarks.step_timer import timed  # noqa: E402

# inside fairseq's "train_inner" aggregation: each record carries the mean over its interval
trainer.Trainer.train_step = timed(trainer.Trainer.train_step, "cpu_ms", time.process_time)
fairseq_task.FairseqTask.optimizer_step = timed(fairseq_task.FairseqTask.optimizer_step, "opt_cpu_ms",
                                                time.process_time)

if os.environ.get("BENCH_COMPILE_MODEL") == "1":
    from fairseq.tasks.sentence_prediction import SentencePredictionTask  # noqa: E402 (sentence_prediction_npu's too)

    _build_model = SentencePredictionTask.build_model

    def _compiled_build_model(self, cfg, from_checkpoint=False):
        model = _build_model(self, cfg, from_checkpoint)
        model.compile()  # in place: parameter names, and so checkpoints, stay as they are
        return model

    SentencePredictionTask.build_model = _compiled_build_model

if __name__ == "__main__":
    sys.argv[0] = "fairseq-train"
    sys.exit(cli_main())
