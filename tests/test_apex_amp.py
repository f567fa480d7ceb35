"""--use-apex driving apex.amp (through the stand-in in tests/apex_stand_in) in fairseq's own Trainer, on cpu."""

import sys
from pathlib import Path

import pytest
import torch

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq.logging import metrics
from fairseq.optim.fp16_optimizer import FP16Optimizer
from fairseq_npu import device
from fairseq_npu.amp import apex_amp, flags
# test_amp's fixtures serve here too: tiny_glue (this module gets its own copy) and, autouse, cpu_backend
from test_amp import cpu_backend, make_cfg, make_trainer, one_shot_inf, snapshot, tiny_glue  # noqa: F401

STAND_IN = Path(__file__).resolve().parent / "apex_stand_in"
TINY = ("--dropout", "0", "--attention-dropout", "0", "--lr", "1e-2")


@pytest.fixture(autouse=True)
def apex_not_driven(monkeypatch):
    # set by the parser; "" (not driven) is recorded by monkeypatch, so it is removed again after each test
    monkeypatch.setenv(apex_amp.APEX_ENV, "")


@pytest.fixture
def apex_stand_in(monkeypatch):
    monkeypatch.syspath_prepend(str(STAND_IN))
    import apex.amp

    apex.amp.reset()
    yield apex.amp
    for name in [m for m in sys.modules if m == "apex" or m.startswith("apex.")]:
        sys.modules.pop(name)


def calls(amp, name):
    return [args for what, args in amp.CALLS if what == name]


def build(tiny_glue, *extra):
    torch.manual_seed(1)  # the same initial weights for every trainer built here
    return make_trainer(make_cfg(tiny_glue, *TINY, *extra))


def test_o2_static_scale_drives_apex_and_matches_fp32(tiny_glue, apex_stand_in, capsys):
    trainer, batch = build(tiny_glue, "--use-apex", "--opt-level", "O2", "--loss-scale", "128")
    assert "fairseq_npu: --use-apex --opt-level O2: apex.amp drives mixed precision (loss scale 128)" \
        in capsys.readouterr().err
    assert not (trainer.cfg.common.fp16 or trainer.cfg.common.amp or trainer.cfg.common.bf16)  # no torch.amp rewrite
    assert trainer.cfg.common.fp16_init_scale == 128  # fairseq's default: --loss-scale went to apex, not here
    optimizer = trainer.optimizer.optimizer
    (init,) = calls(apex_stand_in, "initialize")
    assert init["opt_level"] == "O2" and init["loss_scale"] == 128.0 and "combine_grad" not in init
    assert init["models"] is trainer.model and init["optimizers"] is optimizer

    reference, _ = build(tiny_glue)  # the same run in fp32, no apex
    assert apex_amp.state_of(reference.optimizer) is None
    metrics.reset()
    for _ in range(2):
        assert trainer.train_step([batch]) is not None
        reference.train_step([batch])
    # 128 is a power of two: scaling the loss and unscaling the gradients is exact, so the weights are too
    for ours, theirs in zip(snapshot(trainer), snapshot(reference)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert calls(apex_stand_in, "scale_loss") == [128.0, 128.0]
    assert metrics.get_smoothed_values("train")["loss_scale"] == 128.0

    losses = [trainer.train_step([batch, batch])["loss"] for _ in range(8)]  # --update-freq 2 style: 2 backwards
    assert calls(apex_stand_in, "scale_loss") == [128.0] * (2 + 16)
    assert losses[-1] < 0.3 * losses[0], losses
    assert len(calls(apex_stand_in, "initialize")) == 1

    # fairseq rebuilds the optimizer when it loads a checkpoint: apex's stays, initialize is not called again
    trainer._build_optimizer()
    assert trainer.optimizer.optimizer is optimizer and len(calls(apex_stand_in, "initialize")) == 1


def test_dynamic_scale_overflow_skips_the_update(tiny_glue, apex_stand_in):
    trainer, batch = build(tiny_glue, "--use-apex")  # --opt-level O1, no --loss-scale
    assert calls(apex_stand_in, "initialize") == []  # the Trainer builds its optimizer when first needed
    assert apex_amp.state_of(trainer.optimizer) is not None
    (init,) = calls(apex_stand_in, "initialize")
    assert init["opt_level"] == "O1" and init["loss_scale"] == "dynamic"
    metrics.reset()
    assert trainer.train_step([batch]) is not None
    before = snapshot(trainer)
    adam_steps = trainer.optimizer.optimizer.param_groups[0]["fairseq_step"]
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None  # fairseq's OverflowError path: no update
    assert trainer.get_num_updates() == 1
    assert calls(apex_stand_in, "skip_step") == [2.0 ** 15]  # apex halved its scale and skipped the step
    assert trainer.optimizer.optimizer.param_groups[0]["fairseq_step"] == adam_steps
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(trainer)))
    assert apex_amp.state_of(trainer.optimizer).overflows == 1
    assert trainer.train_step([batch]) is not None and trainer.get_num_updates() == 2
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters())
    assert metrics.get_smoothed_values("train")["overflows"] == 1
    assert calls(apex_stand_in, "scale_loss") == [2.0 ** 16, 2.0 ** 16, 2.0 ** 15]


def test_static_scale_overflow_skips_instead_of_stepping_on_inf(tiny_glue, apex_stand_in):
    trainer, batch = build(tiny_glue, "--use-apex", "--opt-level", "O2", "--loss-scale", "64")
    before = snapshot(trainer)
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None  # apex keeps a static scale and would step: fairseq skips
    assert trainer.get_num_updates() == 0 and calls(apex_stand_in, "skip_step") == []
    assert all(torch.equal(a, b) for a, b in zip(before, snapshot(trainer)))
    assert trainer.train_step([batch]) is not None


def test_combine_grad_only_with_an_optimizer_ascend_apex_combines(apex_stand_in, npu_stand_in):
    from apex.optimizers import NpuFusedAdamW as ApexNpuFusedAdamW
    from torch_npu.optim import NpuFusedAdamW as TorchNpuFusedAdamW

    params = [torch.nn.Parameter(torch.ones(2))]
    apex_fused = ApexNpuFusedAdamW(params)
    assert device.get().type == "npu"
    assert not apex_amp._combine_grad(apex_stand_in, apex_fused, "O2")  # NVIDIA's initialize has no combine_grad
    apex_stand_in.use_ascend_build()
    assert apex_amp._combine_grad(apex_stand_in, apex_fused, "O1")
    assert apex_amp._combine_grad(apex_stand_in, apex_fused, "O2")
    assert not apex_amp._combine_grad(apex_stand_in, apex_fused, "O0")  # apex raises for it at O0
    # torch_npu's fused optimizer: apex and torch_npu would each re-point the gradients into a buffer of their own
    assert not apex_amp._combine_grad(apex_stand_in, TorchNpuFusedAdamW(params), "O2")
    assert not apex_amp._combine_grad(apex_stand_in, torch.optim.AdamW(params), "O2")


def test_explicit_precision_flag_wins_over_apex(tiny_glue, apex_stand_in, capsys):
    cfg = make_cfg(tiny_glue, "--use-apex", "--opt-level", "O2", "--amp")
    assert "fairseq_npu: --amp given: --use-apex --opt-level O2 runs as --amp with torch.amp" in capsys.readouterr().err
    assert cfg.common.amp and apex_amp.requested() is None


def test_without_apex_the_torch_amp_fallback_runs(tiny_glue, capsys):
    assert not flags.apex_available()
    trainer, batch = build(tiny_glue, "--use-apex", "--opt-level", "O2", "--loss-scale", "128")
    err = capsys.readouterr().err
    assert "fairseq_npu: apex is not installed: --use-apex --opt-level O2 runs as --fp16 with torch.amp" in err
    assert apex_amp.requested() is None and trainer.cfg.common.fp16
    assert isinstance(trainer.optimizer, FP16Optimizer) and apex_amp.state_of(trainer.optimizer) is None
    assert trainer.optimizer.scaler.loss_scale == 128.0
    assert trainer.train_step([batch]) is not None


def test_loss_scale_survives_a_checkpoint_resume(tiny_glue, apex_stand_in, tmp_path):
    trainer, batch = build(tiny_glue, "--use-apex")  # dynamic scale from 2**16
    trainer.train_step([batch])
    one_shot_inf(next(trainer.model.parameters()))
    assert trainer.train_step([batch]) is None  # apex halves its scale
    trainer.train_step([batch])
    assert apex_amp.loss_scale(apex_stand_in) == 2.0 ** 15
    path = str(tmp_path / "checkpoint_last.pt")
    trainer.consolidate_optimizer()  # what checkpoint_utils.save_checkpoint calls first
    trainer.save_checkpoint(path, {"train_iterator": {"epoch": 1}})

    # a new process: apex starts from 2**16 again unless the checkpoint restores its state
    apex_stand_in.reset()
    resumed, _ = build(tiny_glue, "--use-apex")
    assert resumed.load_checkpoint(path) is not None
    assert apex_amp.loss_scale(apex_stand_in) == 2.0 ** 15
    assert calls(apex_stand_in, "load_state_dict") == [{"loss_scaler0": {"loss_scale": 2.0 ** 15, "unskipped": 0}}]
    assert resumed.get_num_updates() == 2
    resumed.train_step([batch])
    assert calls(apex_stand_in, "scale_loss") == [2.0 ** 15]
    # the torch optimizer state loaded as usual beside it (Adam moments of the two updates)
    state = resumed.optimizer.optimizer.state
    assert state and all("exp_avg" in s for s in state.values())


def test_apex_state_in_a_checkpoint_is_ignored_without_apex(tiny_glue, apex_stand_in, tmp_path, caplog):
    trainer, batch = build(tiny_glue, "--use-apex", "--opt-level", "O2", "--loss-scale", "128")
    trainer.train_step([batch])
    path = str(tmp_path / "checkpoint_last.pt")
    trainer.consolidate_optimizer()  # what checkpoint_utils.save_checkpoint calls first
    trainer.save_checkpoint(path, {"train_iterator": {"epoch": 1}})
    assert apex_amp.STATE_KEY in torch.load(path, weights_only=False)["last_optimizer_state"]
    apex_amp.request(None)  # the next run has no --use-apex
    plain, _ = build(tiny_glue)
    with caplog.at_level("INFO"):
        assert plain.load_checkpoint(path) is not None
    assert "holds apex.amp loss-scale state; this run does not use --use-apex" in caplog.text
    assert apex_amp.STATE_KEY not in plain.optimizer.state_dict()
    assert plain.train_step([batch]) is not None
