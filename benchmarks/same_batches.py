"""The plugin's update against a plain Hugging Face loop on the same batches, in one process (CPU): whether a gap
to the Trainer is the model or the update around it.

The launch script's own fairseq command for a cpu performance run (``fairseq_npu.launch.command.build``: the
defaults users get) builds fairseq's Trainer; its first ``--batches`` training batches go to ``Trainer.train_step``
(the update object, every hook) and the same token ids to the Hugging Face model of the same size
(``benchmarks.hf_trainer.build_model``) in the Trainer's inner loop written out: autocast in the precision the
Trainer's best row picks, ``loss.backward()``, torch's fused AdamW with the recipe's betas, eps and weight decay (off
biases and LayerNorms, as the Trainer does), ``zero_grad``. The HF Trainer's own overhead (its data loader,
callbacks, accelerate) is left out, so this loop is faster than the Trainer; ``benchmarks.compare`` times the
Trainer itself. The two alternate ``--repeats`` times, in both orders; then the forward and backward alone.

    python -m benchmarks.same_batches --model roberta --batches 40 --repeats 4

Prints ms per update (medians) and writes benchmarks/results/same_batches_<model>.json.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch

from benchmarks import common, glue_data
from benchmarks.hf_trainer import build_model, device_precision


def fairseq_trainer(model: str, data: Path):
    """fairseq's Trainer for the launch script's cpu command (4 x 256 models, batch 32), and its batch iterator."""
    from fairseq import options, tasks, utils
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    args = common.launch_cpu_args(model, data, 10**6, common.WORK / "same_batches")
    utils.import_user_module(argparse.Namespace(user_dir=str(common.REPO / "fairseq_npu")))
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), args))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train", combine=False, epoch=1)
    trainer = Trainer(cfg, task, task.build_model(cfg.model), task.build_criterion(cfg.criterion))
    batches = trainer.get_train_iterator(epoch=1, load_dataset=False).next_epoch_itr(shuffle=True)
    return trainer, task, batches, args


class HuggingFaceLoop:
    def __init__(self, model: str, vocab: int, precision: str):
        self.model = build_model(model, vocab, 2, common.SIZES)
        self.model.train()
        no_decay = [p for n, p in self.model.named_parameters() if "bias" in n or "LayerNorm" in n]
        decay = [p for n, p in self.model.named_parameters() if not ("bias" in n or "LayerNorm" in n)]
        self.optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                            {"params": no_decay, "weight_decay": 0.0}],
                                           lr=1e-5, betas=(0.9, 0.98), eps=1e-6, fused=True)
        self.dtype = torch.bfloat16 if precision == "bf16" else None

    def batch(self, sample):
        ids = sample["net_input"]["src_tokens"]
        return dict(input_ids=ids, attention_mask=ids.ne(1).long(), labels=sample["target"].view(-1))

    def forward_backward(self, batch):
        with torch.autocast("cpu", dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            loss = self.model(**batch).loss
        loss.backward()

    def update(self, batch):
        self.forward_backward(batch)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def forward_backward_only(self, batch):
        self.forward_backward(batch)
        self.model.zero_grad(set_to_none=True)


def alternate(runs: dict, repeats: int) -> dict:
    """ms per item of each run, alternating, the order reversed on every other repeat."""
    times = {name: [] for name in runs}
    order = list(runs.items())
    for rep in range(repeats):
        for name, (fn, items) in (order if rep % 2 == 0 else order[::-1]):
            start = time.perf_counter()
            for item in items:
                fn(item)
            times[name].append(1000 * (time.perf_counter() - start) / len(items))
    return times


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(common.SIZES), default="roberta")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--data-dir", type=Path, default=common.SHARED_DATA)
    a = p.parse_args(argv)
    from fairseq.logging import metrics

    data = glue_data.build(a.model, "SST-2", a.data_dir)
    trainer, task, batches, args = fairseq_trainer(a.model, data)
    samples = [next(batches) for _ in range(a.batches)]
    hf = HuggingFaceLoop(a.model, len(task.source_dictionary), device_precision("cpu"))
    hf_batches = [hf.batch(s) for s in samples]

    def ours(sample):
        with metrics.aggregate("train"):
            trainer.train_step([sample])

    def ours_forward_backward(sample):
        model = trainer.model
        with trainer.__dict__["_fairseq_npu_update"].precision.autocast():
            loss, _, _ = trainer.criterion(model, sample)
        loss.backward()
        model.zero_grad(set_to_none=True)

    for s, b in zip(samples[:a.warmup], hf_batches[:a.warmup]):
        ours(s)
        hf.update(b)
    update = alternate({"plugin": (ours, samples), "hf_loop": (hf.update, hf_batches)}, a.repeats)
    trainer.model.train()
    fwd_bwd = alternate({"plugin": (ours_forward_backward, samples),
                         "hf_loop": (hf.forward_backward_only, hf_batches)}, a.repeats)
    median = {k: {n: statistics.median(v) for n, v in t.items()} for k, t in (("update", update),
                                                                                ("forward_backward", fwd_bwd))}
    result = dict(model=a.model, batches=a.batches, repeats=a.repeats, machine=common.machine(),
                  real_tokens_per_batch=sum(int(s["net_input"]["src_tokens"].ne(1).sum()) for s in samples) / a.batches,
                  fairseq_args=args, hf_precision=hf.dtype and str(hf.dtype), ms=dict(update=update, forward_backward=fwd_bwd),
                  median_ms=median,
                  hf_loop_over_plugin={k: v["hf_loop"] / v["plugin"] for k, v in median.items()})
    for part, m in median.items():
        print(f"{a.model} {part:17s} plugin {m['plugin']:6.1f} ms  hf loop {m['hf_loop']:6.1f} ms  "
              f"(hf/plugin {m['hf_loop'] / m['plugin']:.3f})")
    print(f"wrote {common.save_result(f'same_batches_{a.model}', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
