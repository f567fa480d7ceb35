"""Optimizer step time on a roberta_base-sized parameter set: stock fairseq ``adam`` vs ``fused_adamw``.

Both run in one process on the same parameters and gradients (fp32), after warm-up steps; the figure is the
median wall time of one ``optimizer.step()`` (device synchronised). Usage:

    python -m benchmarks.bench_optimizer [--device cpu|cuda|npu] [--steps 10] [--warmup 3] [--threads N]

Prints one line per optimizer and the speed-up of each fused_adamw kernel over stock adam.
"""

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf

import fairseq_npu  # noqa: F401  (registers fused_adamw)
from fairseq.optim.adam import FairseqAdam
from fairseq_npu import device
from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW


def roberta_base_shapes(vocab=50265, dim=768, ffn=3072, layers=12, positions=514, classes=2):
    """The trainable tensors of fairseq's roberta_base with a sentence classification head (~125M values)."""
    shapes = [(vocab, dim), (positions, dim), (dim,), (dim,)]  # embeddings + their LayerNorm
    for _ in range(layers):
        shapes += [(dim, dim), (dim,)] * 4  # q, k, v, out projections
        shapes += [(dim,), (dim,)]  # self-attention LayerNorm
        shapes += [(ffn, dim), (ffn,), (dim, ffn), (dim,), (dim,), (dim,)]  # fc1, fc2, final LayerNorm
    shapes += [(dim, dim), (dim,), (dim,), (dim,), (vocab,)]  # LM head (dense, LayerNorm, bias; weight is tied)
    shapes += [(dim, dim), (dim,), (classes, dim), (classes,)]  # classification head
    return shapes


def bench(name, build, shapes, on, steps, warmup, sync):
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, device=on) * 0.02) for s in shapes]
    grads = [torch.randn(s, device=on) * 1e-3 for s in shapes]
    opt = build(params)
    for p, g in zip(params, grads):
        p.grad = g
    times = []
    for i in range(warmup + steps):
        sync()
        start = time.perf_counter()
        opt.step()
        sync()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    label = name if not hasattr(opt, "impl") else f"{name} ({opt.impl})"
    del opt, params, grads
    return label, statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "npu"), default="auto")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    backend = device.set_backend(None if args.device == "auto" else args.device)
    on = backend.device()
    shapes = roberta_base_shapes()
    numel = sum(torch.Size(s).numel() for s in shapes)
    common = dict(adam_betas="(0.9, 0.98)", adam_eps=1e-6, weight_decay=0.1, lr=[1e-5])
    adam_cfg = OmegaConf.create(dict(common, use_old_adam=False, fp16_adam_stats=False, tpu=False))
    runs = [("adam (stock fairseq)", lambda p: FairseqAdam(adam_cfg, p))]
    impls = ["npu", "foreach", "forloop"] if backend.type == "npu" else ["fused", "foreach", "forloop"]
    for impl in impls:
        cfg = OmegaConf.create(dict(common, adamw_impl=impl))
        runs.append(("fused_adamw", lambda p, cfg=cfg: FairseqFusedAdamW(cfg, p)))
    print(f"device {backend.type}, torch {torch.__version__}, {torch.get_num_threads()} cpu threads, "
          f"{len(shapes)} tensors, {numel / 1e6:.1f}M parameters, fp32, median of {args.steps} steps")
    results = [bench(name, build, shapes, on, args.steps, args.warmup, backend.synchronize) for name, build in runs]
    stock = results[0][1]
    for label, seconds in results:
        print(f"{label:32s} {seconds * 1e3:9.1f} ms/step   x{stock / seconds:5.2f} vs stock adam")


if __name__ == "__main__":
    main()
