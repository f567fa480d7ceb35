"""Bring-up check of every precision mode and optimizer pairing: a few updates of a tiny model each.

Run by ``bash test/npu_smoke.sh`` (``python -m fairseq_npu.amp.smoke``) as the first thing on a new machine. For
each pairing it builds stock fairseq's Trainer (with this plugin's hooks, on the selected device) for a tiny
RoBERTa on one fixed, separable batch, runs ``--updates`` updates and records per update the loss and the sum of
|gradient| that the optimizer's kernel reads: for a fused optimizer that is the buffer its gradients were
combined into (torch_npu's ``get_combined_grads()``, Ascend apex's ``get_optimizer_combined_grads()``), else
``p.grad``. A pairing passes when

* every update reached the optimizer with finite, non-zero gradients (a kernel reading a stale or zeroed buffer
  fails here);
* the first update's gradient sum is within ``TOLERANCE`` of the fp32 run's (same weights, same batch): gradients
  divided by the loss scale twice, or not at all, fail here;
* the last loss is below ``LOSS_DROP`` times the first.

The apex modes run last, O2 before O1: apex cannot be undone within a process, and O1 patches torch functions.
"""

import argparse
import json
import logging
import math
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import List, Optional

import torch

LOSS_DROP = 0.8
TOLERANCE = {torch.float32: 1e-3, torch.float16: 0.05, torch.bfloat16: 0.1}  # relative, first-update grad sum
OPTIMIZERS = ("adam", "fused_adamw")


@dataclass(frozen=True)
class Mode:
    name: str
    flags: tuple
    dtype: torch.dtype  # the half dtype it computes in (its tolerance), float32 for none
    apex: bool = False


MODES = [
    Mode("fp32", (), torch.float32),
    Mode("amp-fp16", ("--amp", "--amp-dtype", "float16"), torch.float16),
    Mode("amp-bf16", ("--amp", "--amp-dtype", "bfloat16"), torch.bfloat16),
    Mode("fp16", ("--fp16",), torch.float16),
    Mode("bf16", ("--bf16",), torch.bfloat16),
    Mode("apex-O2", ("--use-apex", "--opt-level", "O2"), torch.float16, apex=True),
    Mode("apex-O1", ("--use-apex", "--opt-level", "O1"), torch.float16, apex=True),
]


@dataclass
class Result:
    mode: str
    optimizer: str
    kernel: str = ""
    losses: List[float] = field(default_factory=list)
    grad_sums: List[float] = field(default_factory=list)  # what the optimizer's kernel read, per update
    grad_ratio: Optional[float] = None  # first update's grad sum / the fp32 run's
    status: str = "FAIL"  # PASS, FAIL or SKIP
    why: str = ""


def write_data(dest: Path, n=32, vocab=40, seed=0) -> Path:
    """A separable two-class sentence_prediction set in fairseq's binary layout (input0/, label/)."""
    from fairseq.data import Dictionary, indexed_dataset

    rng = random.Random(seed)
    words = [f"w{i}" for i in range(vocab)]
    data, labels = Dictionary(), Dictionary()
    for w in words:
        data.add_symbol(w, n=10)
    for label in ("0", "1"):
        labels.add_symbol(label)
    for sub, dictionary in (("input0", data), ("label", labels)):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        dictionary.save(str(dest / sub / "dict.txt"))
    for split in ("train", "valid"):
        tokens = indexed_dataset.make_builder(str(dest / "input0" / f"{split}.bin"), impl="mmap", vocab_size=len(data))
        targets = indexed_dataset.make_builder(str(dest / "label" / f"{split}.bin"), impl="mmap",
                                               vocab_size=len(labels))
        for _ in range(n):
            y = rng.randint(0, 1)
            half = words[: vocab // 2] if y else words[vocab // 2:]
            sentence = [data.index(rng.choice(half)) for _ in range(rng.randint(3, 10))]
            tokens.add_item(torch.IntTensor(sentence + [data.eos()]))
            targets.add_item(torch.IntTensor([labels.index(str(y)), labels.eos()]))
        tokens.finalize(str(dest / "input0" / f"{split}.idx"))
        targets.finalize(str(dest / "label" / f"{split}.idx"))
    return dest


def train_argv(data: Path, mode: Mode, optimizer: str, extra=()) -> List[str]:
    import fairseq_npu

    return [str(data), "--user-dir", os.path.dirname(fairseq_npu.__file__), "--task", "sentence_prediction",
            "--criterion", "sentence_prediction", "--arch", "roberta", "--encoder-layers", "1",
            "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--max-positions", "32", "--num-classes", "2", "--batch-size", "16", "--init-token", "0",
            "--dropout", "0", "--attention-dropout", "0", "--optimizer", optimizer, "--adam-betas", "(0.9, 0.98)",
            "--adam-eps", "1e-6", "--weight-decay", "0.01", "--lr", "1e-2", "--clip-norm", "0",
            "--lr-scheduler", "fixed", "--seed", "1", "--num-workers", "0", "--log-format", "simple",
            "--no-progress-bar", *mode.flags, *extra]


def build_trainer(argv: List[str]):
    """fairseq's own Trainer for ``argv`` (parsed by fairseq-train's parser), and one fixed batch of 16."""
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.trainer import Trainer

    from fairseq.logging import metrics

    metrics.reset()  # as fairseq-train starts: no meters of an earlier pairing's trainer
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    torch.manual_seed(cfg.common.seed)  # the same initial weights in every mode
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    task.load_dataset("train")
    dataset = task.dataset("train")
    return trainer, dataset.collater([dataset[i] for i in range(16)])


def _all_grads(optimizer):
    return [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]


def kernel_grads(optimizer) -> List[torch.Tensor]:
    """The gradients ``optimizer``'s kernel reads at its next step."""
    if getattr(optimizer, "is_params_grads_combined", False):  # torch_npu's fused optimizers, once combined
        return [g for g in optimizer.get_combined_grads() if g is not None]
    stash = getattr(optimizer, "_amp_stash", None)
    if getattr(stash, "already_combined", False) and hasattr(optimizer, "get_optimizer_combined_grads"):
        combined = [g for g in optimizer.get_optimizer_combined_grads() if g is not None]  # Ascend apex
        if combined:
            return combined
    return _all_grads(optimizer)


def record_kernel_grads(optimizer, sums: List[float]):
    """Appends to ``sums`` the |gradient| sum the kernel reads, at every step of ``optimizer``."""

    def before_step(opt, args, kwargs):
        sums.append(float(sum(g.detach().float().abs().sum() for g in kernel_grads(opt))))

    return optimizer.register_step_pre_hook(before_step)


def run(data: Path, mode: Mode, optimizer: str, updates: int, extra=()) -> Result:
    """``updates`` updates of one pairing; the numbers only (``judge`` says whether they pass)."""
    result = Result(mode.name, optimizer)
    trainer, batch = build_trainer(train_argv(data, mode, optimizer, extra))
    torch_optimizer = trainer.optimizer.optimizer  # built (and apex-initialized) on first access
    result.kernel = f"{type(torch_optimizer).__module__}.{type(torch_optimizer).__name__}"
    record_kernel_grads(torch_optimizer, result.grad_sums)
    for _ in range(updates):
        out = trainer.train_step([batch])
        result.losses.append(float("nan") if out is None else float(out["loss"]))
    return result


def judge(result: Result, mode: Mode, updates: int, reference: Optional[float]) -> Result:
    problems = []
    if len(result.grad_sums) != updates:
        problems.append(f"the optimizer stepped {len(result.grad_sums)} times in {updates} updates")
    if any(not math.isfinite(s) or s == 0.0 for s in result.grad_sums):
        problems.append(f"zero or non-finite gradients at update(s) "
                        f"{[i + 1 for i, s in enumerate(result.grad_sums) if not math.isfinite(s) or s == 0.0]}")
    if reference and result.grad_sums:
        result.grad_ratio = result.grad_sums[0] / reference
        if abs(result.grad_ratio - 1.0) > TOLERANCE[mode.dtype]:
            problems.append(f"first-update gradients {result.grad_ratio:.4g} x the fp32 run's")
    losses = result.losses
    if not losses or not all(math.isfinite(x) for x in losses):
        problems.append("non-finite loss")
    elif not losses[-1] < LOSS_DROP * losses[0]:
        problems.append(f"loss did not fall ({losses[0]:.4f} -> {losses[-1]:.4f})")
    result.status = "FAIL" if problems else "PASS"
    result.why = "; ".join(problems)
    return result


def unavailable(mode: Mode) -> Optional[str]:
    from fairseq_npu import device
    from fairseq_npu.amp import flags

    backend = device.get()
    if mode.dtype != torch.float32 and not backend.supports_dtype(mode.dtype):
        return f"{backend.type} has no {str(mode.dtype).replace('torch.', '')}"
    if mode.apex and not flags.apex_available():
        return "apex.amp is not importable"
    return None


def run_all(data: Path, updates: int, modes=MODES, optimizers=OPTIMIZERS) -> List[Result]:
    results, reference = [], None
    for mode in modes:
        for optimizer in optimizers:
            why = unavailable(mode)
            if why:
                results.append(Result(mode.name, optimizer, status="SKIP", why=why))
                continue
            try:
                result = run(data, mode, optimizer, updates)
            except Exception as err:  # a crash is a finding too: report it and go on
                results.append(Result(mode.name, optimizer, why=f"{type(err).__name__}: {err}"))
                continue
            if reference is None and mode.dtype == torch.float32 and result.grad_sums:
                reference = result.grad_sums[0]
            results.append(judge(result, mode, updates, reference))
    return results


def table(results: List[Result]) -> str:
    rows = [("mode", "optimizer", "kernel", "loss first -> last", "min grad sum", "grad/fp32", "result")]
    for r in results:
        loss = f"{r.losses[0]:.4f} -> {r.losses[-1]:.4f}" if r.losses else "-"
        rows.append((r.mode, r.optimizer, r.kernel.rsplit(".", 1)[-1] if r.kernel else "-", loss,
                     f"{min(r.grad_sums):.4g}" if r.grad_sums else "-",
                     f"{r.grad_ratio:.4f}" if r.grad_ratio is not None else "-",
                     r.status + (f" ({r.why})" if r.why else "")))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1] for row in rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="npu_smoke", description=__doc__.split("\n")[0])
    parser.add_argument("--updates", type=int, default=8, help="updates per pairing (default 8)")
    parser.add_argument("--modes", default=",".join(m.name for m in MODES),
                        help="comma-separated subset of: " + ", ".join(m.name for m in MODES))
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS),
                        help="comma-separated subset of: " + ", ".join(OPTIMIZERS))
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    known = {m.name: m for m in MODES}
    modes = [known.get(name) for name in args.modes.split(",")]
    optimizers = args.optimizers.split(",")
    if None in modes or not set(optimizers) <= set(OPTIMIZERS) or args.updates < 2:
        parser.error(f"--modes: pick from {sorted(known)}; --optimizers: from {list(OPTIMIZERS)}; --updates >= 2")
    if modes[0].dtype != torch.float32:
        modes = [known["fp32"]] + modes  # the reference for the gradient check

    import fairseq_npu  # noqa: F401  (installs the hooks)
    from fairseq_npu import device

    backend = device.get()
    print(f"npu_smoke: device {backend.type} ({backend.reason}), torch {torch.__version__}, {args.updates} updates "
          f"per pairing", flush=True)
    with tempfile.TemporaryDirectory(prefix="npu_smoke_") as tmp:
        results = run_all(write_data(Path(tmp)), args.updates, modes, optimizers)
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in results], indent=1))
    counts = {s: sum(r.status == s for r in results) for s in ("PASS", "FAIL", "SKIP")}
    print(f"npu_smoke: {counts['PASS']} passed, {counts['FAIL']} failed, {counts['SKIP']} skipped")
    return 1 if counts["FAIL"] or not counts["PASS"] else 0


if __name__ == "__main__":
    import fairseq_npu  # noqa: F401  (its import configures fairseq's logging first)

    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger().setLevel(logging.WARNING)  # fairseq's INFO lines for every build would bury the table
    sys.exit(main())
