"""What the captured-vs-eager update tests share (tests/test_whole_update_capture.py on the cpu, tests/test_cuda.py on
a GPU): the flags under which both updates must compute the same numbers, and the weights they compare.

- ``beta2 = 0``: a graph's AdamW kernel adds ``--adam-eps`` after the bias correction, the eager update adds
  fairseq's ``eps / sqrt(1 - beta2 ** step)``; with beta2 0 the two are the same number at every step, so what is
  compared is everything else of the update. eps 1e-3 keeps that Adam stable (with v = g * g, a tiny eps lets
  m / sqrt(v) blow the weights up within a few updates), and keeps gradients that are rounding noise (the attention's
  key bias: softmax ignores a constant added to every score) from being scaled up to full-size steps.
- learning rates exact in float32 (2**-7, warm-up over 4 updates, linear decay over 16): a graph reads its rate from
  a float32 tensor, the eager kernel takes the scheduler's float64; with these values they are the same number, and
  the rate still changes at every update, so a replay that kept the capture's rate would show.
"""

import torch

PARITY_FLAGS = ("--lr-scheduler", "polynomial_decay", "--lr", str(2 ** -7), "--warmup-updates", "4",
                "--total-num-update", "20", "--adam-betas", "(0.9, 0.0)", "--adam-eps", "1e-3")


def weights(model) -> torch.Tensor:
    """Every parameter of ``model`` in float32, flattened into one vector."""
    return torch.cat([p.detach().float().reshape(-1) for p in model.parameters()])


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()
