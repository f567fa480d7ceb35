"""``fairseq-train`` with the host-side work of each update counted, per phase of ``Trainer.train_step``:
the aten operators dispatched (each one host work, and most a kernel launch on an accelerator) and the host
reads of tensor values (``aten::_local_scalar_dense``: every ``.item()``, ``bool(t)`` or ``float(t)`` of a
tensor the model or trainer computed, each a wait for the device to drain its queue when the tensor lives there;
reads of tensors made from Python values by ``torch.tensor`` are left out). Each update's counts go to a
``host_ops`` line on stdout as JSON.

Short GLUE batches leave an accelerator waiting on the host (REFERENCE.md: launch/host-bound), so the number of
operators per update bounds the update rate there whatever the device's speed. The counts do not depend on the
hidden size, nor (apart from a branch or two) on the device, so they are measured here on the CPU with a narrow
model of the real depth. Counting slows the run several times: time with ``cpu_timed_train.py``, count with this.
Everything else is stock ``fairseq-train``: same command-line flags (pass them after the script name).
"""

import collections
import json
import sys
import weakref

from fairseq_cli.train import cli_main  # first: it sets fairseq-train's log format

import torch  # noqa: E402
from fairseq import trainer  # noqa: E402
from fairseq.tasks import fairseq_task  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402

SYNC_OPS = {"_local_scalar_dense"}  # what .item() / bool() / float() of a tensor dispatch to


class _OpCounter(TorchDispatchMode):
    """Counts every aten operator dispatched under it, by the phase that is current when it runs."""

    def __init__(self):
        super().__init__()
        self.phases = ["trainer other"]
        self.ops = collections.Counter()
        self.syncs = collections.Counter()
        self.names = collections.defaultdict(collections.Counter)  # phase -> operator -> count
        # tensors made from Python values (torch.tensor(...)): reading them back is no device sync on a GPU
        self.host_made = weakref.WeakSet()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        phase = self.phases[-1]
        self.ops[phase] += 1
        name = func.overloadpacket.__name__
        self.names[phase][name] += 1
        if name in SYNC_OPS and not (args and args[0] in self.host_made):
            self.syncs[phase] += 1
        out = func(*args, **(kwargs or {}))
        if name == "lift_fresh":
            self.host_made.add(out)
        return out


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
    _counter = _OpCounter()
    with _counter:
        out = _train_step(self, samples, raise_oom)
    record = dict(update=self.get_num_updates(), ops=dict(_counter.ops), syncs=dict(_counter.syncs),
                  total_ops=sum(_counter.ops.values()), total_syncs=sum(_counter.syncs.values()),
                  top={phase: dict(names.most_common(8)) for phase, names in _counter.names.items()})
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
