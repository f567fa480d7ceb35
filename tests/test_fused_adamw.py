"""fused_adamw against fairseq's own adam: same maths to 1e-6 after 100 steps, alone and under the FP16 wrapper."""

import io

import pytest
import torch
from omegaconf import OmegaConf

import fairseq_npu  # noqa: F401  (registers fused_adamw, installs the hooks)
from fairseq import optim
from fairseq.optim.adam import FairseqAdam
from fairseq_npu import device
from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW, choose_impl
from benchmarks.op_counter import OpCounter

SHAPES = [(64, 32), (32,), (128, 64), (7,), (3, 5, 4)]
STEPS = 100
TOL = 1e-6

pytestmark = pytest.mark.usefixtures("fresh_device")  # tests/conftest.py


def adam_cfg(name, weight_decay, **extra):
    cfg = dict(_name=name, adam_betas="(0.9, 0.98)", adam_eps=1e-6, weight_decay=weight_decay, lr=[1e-3], **extra)
    if name == "adam":
        cfg.update(use_old_adam=False, fp16_adam_stats=False, tpu=False)
    return OmegaConf.create(cfg)


def make_params(dtype=torch.float32):
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(s).to(dtype)) for s in SHAPES]


def gradients(step, dtype=torch.float32):
    """Deterministic gradients spanning 1e-4..1 in magnitude, so eps and weight decay both matter."""
    g = torch.Generator().manual_seed(1000 + step)
    return [(torch.randn(s, generator=g) * 10.0 ** -(i % 5)).to(dtype) for i, s in enumerate(SHAPES)]


def run(optimizer, params, dtype=torch.float32):
    for step in range(STEPS):
        optimizer.zero_grad()
        for p, g in zip(params, gradients(step, dtype)):
            p.grad = g.clone()
        optimizer.step()


def assert_within_bound(ref, new, weight_decay, what):
    """|fused_adamw - adam| <= TOL, plus, with weight decay, STEPS * 2**-24 of the weight: the kernel's decay
    factor 1 - lr * wd is a float32 (steps of 2**-24 below 1), so each step may round the decay by up to that
    much of the weight, where fairseq's p - (lr * wd) * p does not (fused_adamw's module docstring)."""
    excess = max(((a.detach().float() - b.detach().float()).abs() - TOL
                  - (STEPS * 2.0 ** -24 * a.detach().float().abs() if weight_decay else 0.0)).max().item()
                 for a, b in zip(ref, new))
    assert excess <= 0, f"{what}: |fused_adamw - adam| beyond the bound by {excess}"


@pytest.mark.parametrize("impl", ["fused", "foreach", "forloop"])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_matches_fairseq_adam_after_100_steps(impl, weight_decay):
    ref, new = make_params(), make_params()
    run(FairseqAdam(adam_cfg("adam", weight_decay), ref), ref)
    opt = FairseqFusedAdamW(adam_cfg("fused_adamw", weight_decay, adamw_impl=impl), new)
    assert opt.impl == impl
    run(opt, new)
    assert_within_bound(ref, new, weight_decay, f"{impl}, weight decay {weight_decay}")
    moved = max((a - b).abs().max().item() for a, b in zip(ref, make_params()))
    assert moved > 1e-2  # the comparison is not vacuous: 100 steps moved the weights


def test_decay_over_the_launch_recipe_is_within_its_stated_bound():
    """The kernel's decay over the launch scripts' SST-2 schedule (20,935 updates, warm-up 1,256, peak lr 1e-5,
    wd 0.1; zero gradients, so decay is all that moves the weights): the total decay within 1% of exact
    arithmetic's, every weight within 6e-4 of its exactly decayed value, relative."""
    from fairseq.optim.lr_scheduler.polynomial_decay_schedule import PolynomialDecayLRSchedule

    total, warmup, peak = 20935, 1256, 1e-5
    torch.manual_seed(0)
    start = torch.randn(4096)
    weight = torch.nn.Parameter(start.clone())
    opt = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.1, adamw_impl="fused"), [weight])
    sched = PolynomialDecayLRSchedule(OmegaConf.create(dict(
        warmup_updates=warmup, force_anneal=None, end_learning_rate=0.0, power=1.0, total_num_update=total,
        lr=[peak])), opt)
    exact = start.double()
    for update in range(1, total + 1):
        lr = sched.step_update(update - 1)
        weight.grad = torch.zeros_like(weight)
        opt.step()
        exact = exact * (1.0 - lr * 0.1)
    decay, exact_decay = 1 - (weight.detach().double() / start).mean(), 1 - (exact / start).mean()
    assert exact_decay > 5e-3  # the schedule decays the weights by about 1%: the comparison is not vacuous
    assert abs(decay / exact_decay - 1) < 0.01
    assert ((weight.detach().double() - exact) / exact).abs().max() < 6e-4


def test_plain_torch_adamw_would_not_match():
    """The eps correction is needed: torch's AdamW with the same numbers drifts past 1e-6."""
    ref, new = make_params(), make_params()
    run(FairseqAdam(adam_cfg("adam", 0.1), ref), ref)
    plain = torch.optim.AdamW(new, lr=1e-3, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    for step in range(STEPS):
        plain.zero_grad()
        for p, g in zip(new, gradients(step)):
            p.grad = g.clone()
        plain.step()
    assert max((a - b).abs().max().item() for a, b in zip(ref, new)) > 10 * TOL


def fp16_cfg(name, weight_decay, bf16=False, **extra):
    return OmegaConf.create({
        "optimizer": adam_cfg(name, weight_decay, **extra),
        "common": {"fp16_scale_window": 128, "fp16_init_scale": 1, "fp16_scale_tolerance": 0.0,
                   "threshold_loss_scale": None, "min_loss_scale": 1e-4, "bf16": bf16,
                   "fp16_no_flatten_grads": False, "model_parallel_size": 1},
        "optimization": {"update_freq": [1]},
        "distributed_training": {"distributed_world_size": 1},
    })


@pytest.mark.parametrize("bf16", [False, True], ids=["fp16-flat", "bf16"])
def test_matches_fairseq_adam_under_the_fp16_wrapper(bf16):
    """--fp16 (flat fp32 master copy on cpu, through the build_fp32_params hook) and --bf16 (per-tensor copy)."""
    dtype = torch.bfloat16 if bf16 else torch.float16
    ref, new = make_params(dtype), make_params(dtype)
    wrapped_ref = optim.FP16Optimizer.build_optimizer(fp16_cfg("adam", 0.1, bf16), ref)
    wrapped_new = optim.FP16Optimizer.build_optimizer(fp16_cfg("fused_adamw", 0.1, bf16, adamw_impl="auto"), new)
    assert isinstance(wrapped_new.fp32_optimizer, FairseqFusedAdamW)
    assert wrapped_new.has_flat_params == (not bf16)
    for opt, params in ((wrapped_ref, ref), (wrapped_new, new)):
        run(opt, params, dtype)
    masters = lambda w: (list(w.fp32_params.values()) if isinstance(w.fp32_params, dict) else w.fp32_params)
    assert_within_bound(masters(wrapped_ref), masters(wrapped_new), 0.1, "fp32 master weights")
    # the half weights are the roundings of masters that close: within one half-precision step of each other
    step = 2.0 ** -7 if bf16 else 2.0 ** -10
    assert all(torch.allclose(a.float(), b.float(), rtol=step, atol=0) for a, b in zip(ref, new))


def test_state_dict_round_trip_continues_identically():
    a, b = make_params(), make_params()
    opt_a = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.1, adamw_impl="auto"), a)
    run(opt_a, a)
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)  # as a checkpoint would: no tensor shared with opt_a
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert state["param_groups"][0]["fairseq_step"] == STEPS
    with torch.no_grad():
        for x, y in zip(b, a):
            x.copy_(y)
    opt_b = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.1, adamw_impl="forloop"), b)
    opt_b.load_state_dict(state)
    for opt, params in ((opt_a, a), (opt_b, b)):
        opt.zero_grad()
        for p, g in zip(params, gradients(STEPS)):
            p.grad = g.clone()
        opt.step()
    assert max((x - y).abs().max().item() for x, y in zip(a, b)) <= TOL


def test_memory_efficient_fp16_is_refused_with_the_optimizer_named():
    params = make_params(torch.float16)
    with pytest.raises(ValueError, match="Unsupported optimizer: FairseqFusedAdamW"):
        optim.MemoryEfficientFP16Optimizer.build_optimizer(fp16_cfg("fused_adamw", 0.0, adamw_impl="auto"), params)


def test_auto_picks_the_torch_fused_kernel_on_cpu():
    assert choose_impl("auto", make_params()) == "fused"


def test_npu_branch_uses_npufusedadamw_and_keeps_combined_grads(npu_stand_in):
    params = make_params()
    assert device.get().type == "npu"
    opt = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.1, adamw_impl="auto"), params)
    assert opt.impl == "npu"
    assert isinstance(opt.optimizer, npu_stand_in.optim.NpuFusedAdamW)
    for p, g in zip(params, gradients(0)):
        p.grad = g.clone()
    grads = [p.grad for p in params]
    opt.step()
    opt.zero_grad()  # must zero in place: the real NpuFusedAdamW updates from views of one combined buffer
    assert all(p.grad is g and not g.any() for p, g in zip(params, grads))


def test_npu_falls_back_to_foreach_when_no_fused_npu_optimizer(npu_stand_in, monkeypatch, caplog):
    monkeypatch.delattr(npu_stand_in.optim, "NpuFusedAdamW")
    with caplog.at_level("WARNING"):
        impl = choose_impl("npu", make_params())
    assert impl == "foreach"  # cpu tensors here; on a real npu torch has no fused AdamW for them either
    assert "--adamw-impl npu unavailable" in caplog.text


def test_fp16_master_syncs_are_multi_tensor_copies_with_stocks_result():
    """Under --fp16 with fused_adamw, grads -> flat fp32 grad and flat fp32 -> params are one copy each (a hook),
    equal bit for bit to stock's tensor-by-tensor copies, including the zeros for a parameter without a grad."""
    from fairseq.optim.fp16_optimizer import _FP16OptimizerMixin

    from fairseq_npu.patching import original_of

    wrapped = {}
    for name in ("stock", "ours"):
        params = make_params(torch.float16)
        wrapped[name] = optim.FP16Optimizer.build_optimizer(fp16_cfg("fused_adamw", 0.1, adamw_impl="auto"), params)
        for p, g in zip(params, gradients(0, torch.float16)):
            p.grad = g
        params[1].grad = None  # an unused parameter: stock writes zeros for it
        wrapped[name]._needs_sync = True  # what backward() sets
        wrapped[name].fp32_params[None].grad.fill_(7.0)  # whatever the previous update left
    stock_grads = original_of(_FP16OptimizerMixin._sync_fp16_grads_to_fp32)
    stock_params = original_of(_FP16OptimizerMixin._sync_fp32_params_to_fp16)
    stock_grads(wrapped["stock"])
    wrapped["ours"]._sync_fp16_grads_to_fp32()
    assert torch.equal(wrapped["stock"].fp32_params[None].grad, wrapped["ours"].fp32_params[None].grad)
    wrapped["ours"]._needs_sync = True
    with OpCounter() as ops:  # the views of the flat buffer were built by the first call
        wrapped["ours"]._sync_fp16_grads_to_fp32()
    assert ops.names == {"_foreach_copy_": 1, "_foreach_zero_": 1}, ops.names
    for w in wrapped.values():  # an update of the master copy, then back to the fp16 weights
        w.fp32_params[None].data.add_(torch.linspace(-1, 1, w.fp32_params[None].numel()))
    stock_params(wrapped["stock"])
    wrapped["ours"]._sync_fp32_params_to_fp16()
    with OpCounter() as ops:
        wrapped["ours"]._sync_fp32_params_to_fp16()
    assert ops.names == {"_foreach_copy_": 1}, ops.names
    assert all(torch.equal(a, b) for a, b in zip(wrapped["stock"].fp16_params, wrapped["ours"].fp16_params))
    assert not torch.equal(wrapped["ours"].fp16_params[0], make_params(torch.float16)[0])  # they did change


def test_stock_adam_keeps_stocks_fp16_master_syncs():
    params = make_params(torch.float16)
    wrapped = optim.FP16Optimizer.build_optimizer(fp16_cfg("adam", 0.1), params)
    for p, g in zip(params, gradients(0, torch.float16)):
        p.grad = g
    wrapped._needs_sync = True
    with OpCounter() as ops:
        wrapped._sync_fp16_grads_to_fp32()
    assert ops.names["copy_"] == len(SHAPES)  # tensor by tensor, as stock does


def test_a_state_written_with_the_separate_decay_pass_resumes_with_its_decay():
    """Optimizer states saved when fused_adamw decayed in a pass of its own keep the decay in
    ``fairseq_weight_decay`` beside a kernel ``weight_decay`` of 0: on load it moves into the kernel's."""
    params = make_params()
    opt = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.1, adamw_impl="fused"), params)
    run(opt, params)
    state = opt.state_dict()
    for group in state["param_groups"]:
        group["fairseq_weight_decay"], group["weight_decay"] = group["weight_decay"], 0.0
    fresh = FairseqFusedAdamW(adam_cfg("fused_adamw", 0.0, adamw_impl="fused"), make_params())
    fresh.load_state_dict(state)
    assert [g["weight_decay"] for g in fresh.optimizer.param_groups] == [0.1]
    assert all("fairseq_weight_decay" not in g for g in fresh.optimizer.param_groups)
