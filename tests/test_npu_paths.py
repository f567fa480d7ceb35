"""Every NPU precision path trains for real under the strict stand-ins (tests/npu_stand_in, tests/apex_stand_in,
tensors kept in host memory), and sees the gradients the fp32 run sees: unscaled exactly once, non-zero at every
update, read from where the fused kernel reads them. Plus --amp's loss scaling on cpu, resume across devices and
precisions, the multi-tensor scaling overloads, and test/npu_smoke.sh."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq_npu import device
from fairseq_npu.amp import apex_amp, flags, smoke
from fairseq_npu.amp.amp_optimizer import SCALER_KEY
from fairseq_npu.optim import multi_tensor_grads

REPO = Path(__file__).resolve().parents[1]
STAND_INS = [REPO / "tests" / "npu_stand_in", REPO / "tests" / "apex_stand_in"]
MODES = {m.name: m for m in smoke.MODES}
UPDATES = 8


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return smoke.write_data(tmp_path_factory.mktemp("npu_paths"))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    monkeypatch.setenv(flags.AMP_DTYPE_ENV, "auto")
    monkeypatch.setenv(apex_amp.APEX_ENV, "")  # not driven; the parser sets it for --use-apex, undone after the test
    device.reset()
    yield
    device.reset()


@pytest.fixture
def ascend_apex(monkeypatch):
    monkeypatch.syspath_prepend(str(STAND_INS[1]))
    import apex.amp

    apex.amp.reset()
    apex.amp.use_ascend_build()
    yield apex.amp
    apex.amp.reset()
    for name in [m for m in sys.modules if m == "apex" or m.startswith("apex.")]:
        sys.modules.pop(name)


_REFERENCE = {}


def reference(data):
    """fp32 with stock adam: the gradient sums every other pairing must see, update by update."""
    if "fp32" not in _REFERENCE:
        _REFERENCE["fp32"] = smoke.run(data, MODES["fp32"], "adam", UPDATES)
    return _REFERENCE["fp32"]


def assert_trains_like_fp32(result, data, rel=1e-4, every_update=True):
    ref = reference(data)
    assert len(result.grad_sums) == UPDATES, result  # every update reached the optimizer
    assert all(s > 0 and s == s for s in result.grad_sums), result.grad_sums  # non-zero, finite
    assert result.losses[-1] < smoke.LOSS_DROP * result.losses[0], result.losses
    pairs = list(zip(result.grad_sums, ref.grad_sums))
    for seen, expected in pairs if every_update else pairs[:1]:
        assert seen == pytest.approx(expected, rel=rel), (result.grad_sums, ref.grad_sums)


# ------------------------------------------------------------------------------------------- defect 1 (--amp)


def test_amp_fp16_on_cpu_unscales_the_gradients_once(data):
    """Real fp16 autocast on cpu, init scale 64: the optimizer sees the fp32 run's gradients (stock and the
    previous version saw 1/64 of them)."""
    ref = smoke.run(data, MODES["fp32"], "fused_adamw", 1)
    amp = smoke.run(data, MODES["amp-fp16"], "fused_adamw", 1, extra=("--fp16-init-scale", "64"))
    assert amp.kernel == "torch.optim.adamw.AdamW"
    assert amp.grad_sums[0] == pytest.approx(ref.grad_sums[0], rel=2e-2)


@pytest.mark.parametrize("optimizer", ["adam", "fused_adamw"])
def test_amp_on_npu_sees_the_fp32_gradients_every_update(data, npu_host, optimizer):
    """fp16 --amp on npu: torch_npu's GradScaler and, with fused_adamw, NpuFusedAdamW reading its combined buffer
    (defect 1: unscaled twice; defect 2: p.grad = None left the buffer at zero after the first update)."""
    reference(data)
    result = smoke.run(data, MODES["amp-fp16"], optimizer, UPDATES, extra=("--fp16-init-scale", "64"))
    assert_trains_like_fp32(result, data)
    expected = "torch_npu.optim.NpuFusedAdamW" if optimizer == "fused_adamw" else "fairseq.optim.adam.Adam"
    assert result.kernel == expected


# fp32, --amp bf16, --fp16 and --bf16 on npu: every pairing of test/npu_smoke.sh, run at the end of this file


# ------------------------------------------------------------------------------------ defect 3 (--use-apex)


@pytest.mark.parametrize("level", ["O1", "O2"])
def test_apex_on_npu_pairs_with_apex_npu_fused_adamw(data, npu_host, ascend_apex, level):
    """Ascend apex combines the gradients of its own NpuFusedAdamW (combine_grad=True, as the ModelZoo recipes);
    with torch_npu's optimizer apex and torch_npu each re-pointed the gradients into a buffer of their own."""
    reference(data)
    result = smoke.run(data, MODES[f"apex-{level}"], "fused_adamw", UPDATES)
    assert_trains_like_fp32(result, data)  # before: from the 2nd update on, gradients 65536 x too large
    assert result.kernel == "apex.optimizers.npu_fused_adamw.NpuFusedAdamW"
    (init,) = [kwargs for what, kwargs in ascend_apex.CALLS if what == "initialize"]
    assert init["opt_level"] == level and init["combine_grad"] is True and init["loss_scale"] == "dynamic"


def test_apex_o0_on_npu_keeps_torch_npu_fused_adamw_without_combine_grad(data, npu_host, ascend_apex):
    """apex refuses combine_grad and its NpuFused* optimizers at O0; apex's own default scale (1.0) leaves the
    gradients where torch_npu's buffer has them."""
    reference(data)
    result = smoke.run(data, smoke.Mode("apex-O0", ("--use-apex", "--opt-level", "O0"), torch.float32, True),
                       "fused_adamw", UPDATES)
    assert result.kernel == "torch_npu.optim.NpuFusedAdamW"
    (init,) = [kwargs for what, kwargs in ascend_apex.CALLS if what == "initialize"]
    assert "combine_grad" not in init and init["loss_scale"] is None
    assert_trains_like_fp32(result, data)
    with pytest.raises(ValueError, match=r"--use-apex --opt-level O0 --loss-scale 128.0: with NpuFusedAdamW "
                                         r"\(gradients combined into one buffer\)"):
        smoke.run(data, smoke.Mode("apex-O0", ("--use-apex", "--opt-level", "O0", "--loss-scale", "128"),
                                   torch.float32, True), "fused_adamw", 1)


def test_apex_npu_fused_adamw_is_never_used_outside_amp(npu_host, ascend_apex):
    """fused_adamw used to fall back to apex's NpuFusedAdamW, whose step() refuses to run outside amp.initialize."""
    from fairseq_npu.optim.fused_adamw import _npu_fused_adamw_class

    assert _npu_fused_adamw_class() is npu_host.optim.NpuFusedAdamW  # apex installed, but not driving the run
    from apex.optimizers import NpuFusedAdamW

    with pytest.raises(RuntimeError, match="apex.optimizers.NpuFusedAdamW should be used with AMP."):
        NpuFusedAdamW([torch.nn.Parameter(torch.ones(2))]).step()


# --------------------------------------------------------------------------------------------------- resume


def _amp_trainer(data, *extra):
    return smoke.build_trainer(smoke.train_argv(data, MODES["amp-fp16"], "fused_adamw", extra))[0]


def test_amp_on_npu_resumes_a_scaler_state_saved_on_cpu(data, npu_stand_in, monkeypatch):
    """torch_npu's GradScaler.load_state_dict requires "dynamic", which torch's scaler does not save."""
    cpu = _amp_trainer(data, "--fp16-init-scale", "16", "--cpu")
    state = cpu.optimizer.state_dict()
    assert "dynamic" not in state[SCALER_KEY]
    npu_stand_in.keep_tensors_on_host()
    try:
        monkeypatch.delenv(device.ENV_VAR, raising=False)  # --cpu exported its choice
        device.reset()
        resumed = _amp_trainer(data)
        assert resumed.optimizer.scaler.stand_in  # torch_npu's scaler, which raised KeyError('dynamic') here
        resumed.optimizer.load_state_dict(state)
        assert resumed.optimizer.scaler.get_scale() == 16.0
        assert resumed.optimizer.scaler.state_dict()["dynamic"] is True
    finally:
        npu_stand_in.keep_tensors_on_host.undo()


def test_amp_resumes_the_loss_scale_of_an_fp16_checkpoint(data):
    """--amp loading an --fp16 optimizer state before its first update: the scale is taken over (it used to be
    scaler.update(new_scale=...), which asserts before any scale())."""
    fp16, batch = smoke.build_trainer(smoke.train_argv(data, MODES["fp16"], "fused_adamw", (
        "--cpu", "--fp16-no-flatten-grads", "--fp16-init-scale", "32")))
    fp16.train_step([batch])
    state = fp16.optimizer.state_dict()
    assert state["loss_scale"] == 32.0
    resumed = _amp_trainer(data, "--cpu", "--fp16-init-scale", "4")
    resumed.optimizer.load_state_dict(state)
    assert resumed.optimizer.scaler.get_scale() == 32.0
    assert resumed.train_step([batch]) is not None
    assert resumed.optimizer.scaler.get_scale() == 32.0


def test_amp_on_npu_checkpoint_round_trip_keeps_training(data, npu_host, tmp_path):
    trainer, batch = smoke.build_trainer(smoke.train_argv(data, MODES["amp-fp16"], "fused_adamw",
                                                          ("--fp16-scale-window", "2")))
    for _ in range(3):
        trainer.train_step([batch])
    path = str(tmp_path / "checkpoint_last.pt")
    trainer.consolidate_optimizer()  # what checkpoint_utils.save_checkpoint calls first
    trainer.save_checkpoint(path, {"train_iterator": {"epoch": 1}})
    resumed, _ = smoke.build_trainer(smoke.train_argv(data, MODES["amp-fp16"], "fused_adamw",
                                                      ("--fp16-scale-window", "2")))
    assert resumed.load_checkpoint(path) is not None
    assert resumed.optimizer.scaler.get_scale() == trainer.optimizer.scaler.get_scale() == 256.0
    sums = []
    smoke.record_kernel_grads(resumed.optimizer.optimizer, sums)
    losses = [resumed.train_step([batch])["loss"] for _ in range(3)]
    assert len(sums) == 3 and all(s > 0 for s in sums) and losses[-1] < losses[0]


# ------------------------------------------------------------------------------------- multi-tensor scaling


class _Overloads(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_tensor_factors_take_the_scalar_overload_where_npu_has_no_tensor_kernel(monkeypatch, dtype):
    torch.manual_seed(0)
    grads = [torch.randn(5, 3).to(dtype), torch.randn(7).to(dtype)]
    factor = torch.tensor(0.3721)
    expected = [g.clone() for g in grads]
    torch._foreach_mul_(expected, factor)
    monkeypatch.setattr(multi_tensor_grads, "NO_TENSOR_FOREACH_MUL", ("cpu",))  # these host tensors act as npu's
    with _Overloads() as ops:
        multi_tensor_grads._foreach_mul_(grads, factor)
    overload = "Scalar" if dtype == torch.float32 else "Tensor"  # half: the Scalar kernels round differently
    assert [op for op in ops.seen if op.startswith("aten._foreach_mul_")] == [f"aten._foreach_mul_.{overload}"]
    assert all(torch.equal(g, e) for g, e in zip(grads, expected))  # bit for bit


# ----------------------------------------------------------------------------------------------- stand-ins


def test_stand_ins_are_as_strict_as_torch_npu_and_apex(npu_stand_in, ascend_apex):
    w = torch.nn.Parameter(torch.ones(3))
    opt = npu_stand_in.optim.NpuFusedAdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    grad = w.grad
    opt.step()
    assert w.grad is grad and w.grad.data_ptr() == opt.get_combined_grads()[0].data_ptr()  # combined in place
    with pytest.raises(ValueError, match="set_to_none is not supported in fused optimizers"):
        opt.zero_grad(set_to_none=True)
    w.grad = None
    (w * 5).sum().backward()  # a new gradient tensor: not what the kernel reads
    assert not opt.get_combined_grads()[0].ne(1).any()
    scaler = npu_stand_in.GradScaler(init_scale=8.0)
    with pytest.raises(KeyError, match="dynamic"):
        scaler.load_state_dict(torch.amp.GradScaler("cpu").state_dict())
    model = torch.nn.Linear(2, 2)
    with pytest.raises(RuntimeError, match="combine_grad=True .* should only be set by selecting opt_level='O1'"):
        ascend_apex.initialize(model, torch.optim.SGD(model.parameters(), lr=1), opt_level="O0", combine_grad=True)
    from apex.optimizers import NpuFusedAdamW

    with pytest.raises(RuntimeError, match="npu fused optimizer can only be used when opt_level='O1'"):
        ascend_apex.initialize(model, NpuFusedAdamW(model.parameters()), opt_level="O0")
    _, o2 = ascend_apex.initialize(model, torch.optim.SGD(model.parameters(), lr=1), opt_level="O2")
    with pytest.raises(RuntimeError, match="Amp does not support closure use with optimizers"):
        o2.step(closure=lambda: 0.0)


# -------------------------------------------------------------------------------------------- npu_smoke.sh


def test_smoke_fails_a_pairing_whose_gradients_are_unscaled_twice(monkeypatch, capsys):
    from fairseq_npu.amp.amp_optimizer import DeviceAMPOptimizer

    def unscale_twice(self, max_norm, aggregate_norm_fn=None):  # the previous clip_grad_norm
        self.scaler.unscale_(self.optimizer)
        return self.fp32_optimizer.clip_grad_norm(max_norm, aggregate_norm_fn)

    monkeypatch.setattr(DeviceAMPOptimizer, "clip_grad_norm", unscale_twice)
    assert smoke.main(["--modes", "amp-fp16", "--optimizers", "fused_adamw"]) == 1
    out = capsys.readouterr().out
    assert "amp-fp16  fused_adamw" in out and "FAIL (first-update gradients 0.0078" in out
    assert out.rstrip().endswith("npu_smoke: 1 passed, 1 failed, 0 skipped")


def test_npu_smoke_script_passes_every_pairing_under_the_stand_ins(tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", TORCH_NPU_STAND_IN_HOST_TENSORS="1",
               PYTHONPATH=os.pathsep.join([*map(str, STAND_INS), os.environ.get("PYTHONPATH", "")]))
    for name in (device.ENV_VAR, flags.AMP_DTYPE_ENV, apex_amp.APEX_ENV):
        env.pop(name, None)
    out = tmp_path / "smoke.json"
    run = subprocess.run(["bash", "test/npu_smoke.sh", "--json", str(out)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "npu_smoke: device npu" in run.stdout
    results = json.loads(out.read_text())
    assert [(r["mode"], r["optimizer"], r["status"]) for r in results] == [
        (m.name, o, "PASS") for m in smoke.MODES for o in smoke.OPTIMIZERS]
    kernels = {(r["mode"], r["optimizer"]): r["kernel"].rsplit(".", 1)[-1] for r in results}
    assert kernels[("amp-fp16", "fused_adamw")] == "NpuFusedAdamW"
    assert run.stdout.rstrip().endswith("npu_smoke: 14 passed, 0 failed, 0 skipped")


# --------------------------------------------------------------------------------------------------- env_npu.sh


def test_env_npu_sets_torch_npu_2_variables_and_keeps_the_callers():
    script = ('source test/env_npu.sh 2> /dev/null; for v in TASK_QUEUE_ENABLE HCCL_EXEC_TIMEOUT HCCL_CONNECT_TIMEOUT '
              'COMBINED_ENABLE PTCOPY_ENABLE TRI_COMBINED_ENABLE DYNAMIC_OP HCCL_IF_IP CPU_AFFINITY_CONF; do '
              'echo "$v=${!v-unset}"; done')
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp")}
    seen = subprocess.run(["bash", "-c", script], cwd=REPO, env=env, capture_output=True, text=True).stdout.split()
    assert seen == ["TASK_QUEUE_ENABLE=2", "HCCL_EXEC_TIMEOUT=1800", "HCCL_CONNECT_TIMEOUT=1800", "COMBINED_ENABLE=1",
                    "PTCOPY_ENABLE=unset", "TRI_COMBINED_ENABLE=unset", "DYNAMIC_OP=unset", "HCCL_IF_IP=unset",
                    "CPU_AFFINITY_CONF=unset"]
    kept = subprocess.run(["bash", "-c", script], cwd=REPO, env=dict(env, TASK_QUEUE_ENABLE="1", HCCL_IF_IP="10.0.0.2"),
                          capture_output=True, text=True).stdout.split()
    assert "TASK_QUEUE_ENABLE=1" in kept and "HCCL_IF_IP=10.0.0.2" in kept
