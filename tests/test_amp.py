"""Mixed precision through fairseq's own Trainer on cpu: overflow handling (O1 and O2), bf16 autocast, resume."""

import os
from pathlib import Path

import pytest
import torch

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq import checkpoint_utils, options, tasks
from fairseq.dataclass.utils import convert_namespace_to_omegaconf
from fairseq.logging import metrics
from fairseq.trainer import Trainer
from fairseq_npu import device, precision
from fairseq_npu.amp import flags, smoke
from fairseq_npu.amp.amp_optimizer import SCALER_KEY, DeviceAMPOptimizer
from benchmarks.op_counter import OpCounter

USER_DIR = os.path.dirname(fairseq_npu.__file__)


def write_tiny_glue(dest: Path, n_train=32, vocab=40, seed=0):
    """A separable two-class sentence_prediction dataset (the NPU smoke script's own data)."""
    return smoke.write_data(dest, n=n_train, vocab=vocab, seed=seed)


@pytest.fixture(scope="module")
def tiny_glue(tmp_path_factory):
    return write_tiny_glue(tmp_path_factory.mktemp("tiny_glue"))


@pytest.fixture(autouse=True)
def cpu_backend(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    monkeypatch.setenv(flags.AMP_DTYPE_ENV, "auto")  # --amp-dtype exports itself; undone after each test
    device.reset()
    yield
    device.reset()


def make_cfg(data, *extra):
    argv = [str(data), "--user-dir", USER_DIR, "--cpu", "--task", "sentence_prediction",
            "--criterion", "sentence_prediction", "--arch", "roberta", "--encoder-layers", "1",
            "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "2",
            "--max-positions", "32", "--num-classes", "2", "--batch-size", "16", "--init-token", "0",
            "--optimizer", "fused_adamw", "--adam-betas", "(0.9, 0.98)", "--adam-eps", "1e-6",
            "--weight-decay", "0.1", "--lr", "1e-3", "--clip-norm", "1.0", "--lr-scheduler", "fixed",
            "--seed", "1", "--num-workers", "0", "--log-format", "simple", "--no-progress-bar", *extra]
    return convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))


def make_trainer(cfg):
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    trainer = Trainer(cfg, task, model, task.build_criterion(cfg.criterion))
    task.load_dataset("train")
    dataset = task.dataset("train")
    batch = dataset.collater([dataset[i] for i in range(16)])
    return trainer, batch


def one_shot_inf(param):
    """Makes the next gradient of ``param`` inf, once."""
    handle = None

    def hook(grad):
        handle.remove()
        return torch.full_like(grad, float("inf"))

    handle = param.register_hook(hook)


def snapshot(trainer):
    return [p.detach().float().clone() for p in trainer.model.parameters()]


def test_o2_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_glue):
    cfg = make_cfg(tiny_glue, "--fp16", "--fp16-init-scale", "64", "--fp16-scale-window", "100")
    trainer, batch = make_trainer(cfg)
    metrics.reset()
    assert trainer.train_step([batch]) is not None
    before, masters = snapshot(trainer), trainer.optimizer.fp32_params[None].detach().clone()
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None  # skipped: the stock handler ran (its .cuda() is hooked)
    assert trainer.get_num_updates() == 1
    assert trainer.optimizer.scaler.loss_scale == 32
    assert trainer.optimizer.scaler.fairseq_npu_overflows == 1
    assert torch.equal(trainer.optimizer.fp32_params[None], masters)
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(trainer)))
    assert trainer.train_step([batch]) is not None  # and training goes on, finite
    assert trainer.get_num_updates() == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert metrics.get_smoothed_values("train")["overflows"] == 1


def test_o1_fp16_overflow_skips_the_step_and_halves_the_scale(tiny_glue):
    cfg = make_cfg(tiny_glue, "--amp", "--amp-dtype", "float16", "--fp16-init-scale", "64",
                   "--fp16-scale-window", "100", "--amp-batch-retries", "0")
    trainer, batch = make_trainer(cfg)
    assert isinstance(trainer.optimizer, DeviceAMPOptimizer)
    assert trainer.optimizer.scaler.get_scale() == 64.0
    assert trainer.optimizer.scaler.get_growth_interval() == 100  # stock took --amp-init-scale (128) here
    metrics.reset()
    assert trainer.train_step([batch]) is not None
    before = snapshot(trainer)
    adam_steps = trainer.optimizer.optimizer.param_groups[0]["fairseq_step"]
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None
    assert trainer.get_num_updates() == 1
    assert trainer.optimizer.scaler.get_scale() == 32.0
    assert trainer.optimizer.overflows == 1
    assert trainer.optimizer.optimizer.param_groups[0]["fairseq_step"] == adam_steps  # optimizer not stepped
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(trainer)))
    assert trainer.train_step([batch]) is not None
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())


def test_o1_threshold_loss_scale_is_a_floor(tiny_glue):
    cfg = make_cfg(tiny_glue, "--amp", "--amp-dtype", "float16", "--fp16-init-scale", "4",
                   "--threshold-loss-scale", "4", "--amp-batch-retries", "0")
    trainer, batch = make_trainer(cfg)
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None
    assert trainer.optimizer.scaler.get_scale() == 4.0


def test_o1_bf16_autocast_trains_a_tiny_model_on_cpu(tiny_glue):
    cfg = make_cfg(tiny_glue, "--amp", "--lr", "1e-2", "--dropout", "0")  # --amp-dtype auto: bfloat16 on cpu
    trainer, batch = make_trainer(cfg)
    assert trainer.optimizer.autocast().fast_dtype == torch.bfloat16
    assert not trainer.optimizer.scaler.is_enabled()  # bf16 needs no loss scaling
    seen = []
    fc = trainer.model.encoder.sentence_encoder.layers[0].fc1
    fc.register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    assert all(p.dtype == torch.float32 for p in trainer.model.parameters())  # O1: fp32 weights
    losses = [trainer.train_step([batch])["loss"] for _ in range(12)]
    assert set(seen) == {torch.bfloat16}
    assert losses[-1] < 0.2 * losses[0], losses  # fits the separable batch


def test_resume_restores_optimizer_and_scaler_state(tiny_glue, tmp_path, monkeypatch):
    """fairseq-train's own main(): --amp fp16 + fused_adamw + --update-freq 2, then resume from checkpoint_last.pt."""
    from fairseq_cli import train

    # the torch_npu stand-in (used by earlier tests in this process) renames torch's PrivateUse1 backend for good;
    # torch's DataLoader then believes an accelerator exists and fails to pin fairseq's batches for it
    monkeypatch.setattr(torch.accelerator, "is_available", lambda: False)
    extra = ["--amp", "--amp-dtype", "float16", "--fp16-init-scale", "4", "--fp16-scale-window", "2",
             "--update-freq", "2", "--save-dir", str(tmp_path), "--no-epoch-checkpoints", "--disable-validation"]
    train.main(make_cfg(tiny_glue, *extra, "--max-update", "4"))
    saved = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "checkpoint_last.pt"))
    optimizer_state = saved["last_optimizer_state"]
    assert optimizer_state[SCALER_KEY]["scale"] == 16.0  # 4, doubled after updates 2 and 4
    assert optimizer_state["param_groups"][0]["fairseq_step"] == 4

    trainer, batch = make_trainer(make_cfg(tiny_glue, *extra, "--max-update", "6"))
    trainer.load_checkpoint(str(tmp_path / "checkpoint_last.pt"))
    assert trainer.get_num_updates() == 4
    assert trainer.optimizer.scaler.get_scale() == 16.0
    restored = trainer.optimizer.optimizer
    assert restored.param_groups[0]["fairseq_step"] == 4
    assert len(optimizer_state["state"]) > 10  # (the LM head gets no gradient, so no state: not all params)
    for index, saved_state in optimizer_state["state"].items():
        param = restored.param_groups[0]["params"][index]
        assert torch.equal(restored.state[param]["exp_avg_sq"], saved_state["exp_avg_sq"])
    trainer.train_step([batch])
    assert trainer.optimizer.scaler.get_scale() == 16.0 and trainer.optimizer.scaler._growth_tracker.item() == 1


def test_modelzoo_flags_without_apex_map_to_torch_amp(capsys):
    assert not flags.apex_available()
    argv = flags.translate(["data", "--optimizer", "adam", "--use-npu-adam", "--use-apex", "--opt-level", "O2",
                            "--loss-scale", "32"])
    assert argv[:3] == ["data", "--optimizer", "fused_adamw"]
    assert argv[-5:] == ["--fp16-init-scale", "32", "--fp16-scale-window", str(flags.NEVER), "--fp16"]
    assert "apex is not installed: --use-apex --opt-level O2 runs as --fp16 with torch.amp" in capsys.readouterr().err
    assert flags.translate(["d", "--use-apex"])[-3:] == ["--amp", "--amp-dtype", "float16"]  # O1 by default
    with pytest.raises(ValueError, match="--use-npu-adam applies to --optimizer adam, got --optimizer sgd"):
        flags.translate(["d", "--optimizer", "sgd", "--use-npu-adam"])


def test_bf16_no_longer_means_tpu(tiny_glue):
    cfg = make_cfg(tiny_glue, "--bf16")
    assert cfg.common.bf16 and not cfg.common.tpu


def test_npu_uses_torch_npu_grad_scaler_and_fp16_autocast(npu_stand_in, monkeypatch):
    from fairseq_npu.amp.grad_scaler import make_grad_scaler

    built = []

    class RecordingScaler(torch.amp.GradScaler):
        def __init__(self, **kwargs):
            built.append(kwargs)
            super().__init__("cpu", **kwargs)

    monkeypatch.setattr(npu_stand_in.npu.amp, "GradScaler", RecordingScaler)
    assert device.get().type == "npu"
    scaler = make_grad_scaler(init_scale=4, growth_interval=128)
    assert isinstance(scaler, RecordingScaler)
    assert built == [dict(init_scale=4.0, growth_interval=128, enabled=True)]
    assert precision.amp_dtype(device.get()) == "float16"
    npu_stand_in.STATE["bf16"] = False  # a 910A: no bf16
    monkeypatch.setenv(flags.AMP_DTYPE_ENV, "bfloat16")
    with pytest.raises(RuntimeError, match="--amp-dtype bfloat16: device npu does not support it"):
        precision.amp_dtype(device.get())


def test_o1_gradient_scaling_is_the_inner_optimizers(tiny_glue):
    """--amp scales the gradients (1 / sample size) with fused_adamw's multi-tensor op: no detach per gradient."""
    trainer, _ = make_trainer(make_cfg(tiny_glue, "--amp"))
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    for i, p in enumerate(params):
        p.grad = torch.full_like(p, float(i))
    with OpCounter() as ops:
        trainer.optimizer.multiply_grads(0.5)
    assert ops.names == {"_foreach_mul_": 1}, ops.names
    assert all(torch.equal(p.grad, torch.full_like(p, i * 0.5)) for i, p in enumerate(params))
