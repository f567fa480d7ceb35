"""``fairseq-train`` with the host-side work of each update counted, per phase of ``Trainer.train_step``:
the aten operators dispatched (each one host work, and most a kernel launch on an accelerator) and the host
reads of tensor values (``aten::_local_scalar_dense``: every ``.item()``, ``bool(t)`` or ``float(t)`` of a
tensor the model or trainer computed, each a wait for the device to drain its queue when the tensor lives there;
reads of tensors made from Python values by ``torch.tensor`` are left out). Each update's counts go to a
``host_ops`` line on stdout as JSON.

Short GLUE batches leave an accelerator waiting on the host (they are launch/host-bound), so the number of
operators per update bounds the update rate there whatever the device's speed. The counts do not depend on the
hidden size, nor (apart from a branch or two) on the device, so they are measured here on the CPU with a narrow
model of the real depth. Counting slows the run several times: time with ``cpu_timed_train.py``, count with this.
Everything else is stock ``fairseq-train``: same command-line flags (pass them after the script name).
"""

import json
import sys

from fairseq_cli.train import cli_main  # first: it sets fairseq-train's log format

import torch  # noqa: E402
from fairseq import trainer  # noqa: E402
from fairseq.tasks import fairseq_task  # noqa: E402

from benchmarks.op_counter import OpCounter  # noqa: E402

_counter = None


def _in_phase(phase, fn):
    def wrapper(*args, **kwargs):
        if _counter is None:
            return fn(*args, **kwargs)
        _counter.phases.append(phase)
        try:
            return fn(*args, **kwargs)
        finally:
            _counter.phases.pop()

    return wrapper


_train_step = trainer.Trainer.train_step


def _counted_train_step(self, samples, raise_oom=False):
    global _counter
    _counter = OpCounter("trainer other")
    with _counter:
        out = _train_step(self, samples, raise_oom)
    phases = _counter.by_phase.items()
    record = dict(update=self.get_num_updates(), ops={phase: sum(n.values()) for phase, n in phases},
                  syncs=dict(_counter.syncs), total_ops=sum(_counter.names.values()),
                  total_syncs=sum(_counter.syncs.values()),
                  top={phase: dict(n.most_common(8)) for phase, n in phases})
    _counter = None
    print("host_ops " + json.dumps(record), flush=True)
    return out


if "--user-dir" in sys.argv:
    # the plugin's hooks replace some of the methods wrapped below: install them first, so that the phase
    # wrappers sit outside them (fairseq finds the module already imported when it reads --user-dir)
    import fairseq_npu  # noqa: E402,F401

trainer.Trainer.train_step = _counted_train_step
fairseq_task.FairseqTask.train_step = _in_phase("forward + backward", fairseq_task.FairseqTask.train_step)
trainer.Trainer.clip_grad_norm = _in_phase("grad norm", trainer.Trainer.clip_grad_norm)
fairseq_task.FairseqTask.optimizer_step = _in_phase("optimizer step", fairseq_task.FairseqTask.optimizer_step)

if __name__ == "__main__":
    torch.manual_seed(0)
    sys.argv[0] = "fairseq-train"
    sys.exit(cli_main())
