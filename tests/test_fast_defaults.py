"""The launch scripts' fast preset: per device and capability (the capability query mocked), recorded in the plan;
--preset=stock reproduces the published recipe; under the npu defaults an epoch sees a bounded set of shapes."""

import pytest
import torch

from fairseq_npu import precision
from fairseq_npu.argv import flag_value
from fairseq_npu.launch import command, recipes
from glue_tiny_data import make_glue_dir


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # sentences of 2 to 300 tokens, so that several pad buckets are used
    return make_glue_dir(tmp_path_factory.mktemp("fast") / "SST-2-bin", {"train": 200, "valid": 40},
                         min_len=2, max_len=300)


def _plan(data, tmp_path, monkeypatch, device, bf16, **kw):
    asked = []
    monkeypatch.setattr(precision, "native_bf16", lambda d: asked.append(d) or bf16)
    args, plan = command.build(command.LaunchRequest(mode="performance", data=str(data), device=device,
                                                     output_dir=str(tmp_path), **kw))
    assert asked == ([device] if kw.get("preset", "fast") == "fast" else [])
    return args, plan


@pytest.mark.parametrize("device,bf16,precision_flags,amp", [
    ("cpu", True, ["--amp"], ("O1", "bf16")),
    ("cpu", False, [], ("-", "fp32")),
    ("cuda", True, ["--bf16"], ("O2", "bf16")),
    ("cuda", False, recipes.FP16_ARGS, ("O2", "fp16")),
    ("npu", True, recipes.FP16_ARGS, ("O2", "fp16")),
])
def test_fast_preset_per_device_and_capability(data, tmp_path, monkeypatch, device, bf16, precision_flags, amp):
    args, plan = _plan(data, tmp_path, monkeypatch, device, bf16)
    assert flag_value(args, "--optimizer") == "fused_adamw" and "--group-by-length" in args
    for flag in ("--amp", "--bf16", "--fp16"):
        assert (flag in args) == (flag in precision_flags), flag
    assert (plan["amp_type"], plan["amp_dtype"]) == amp
    assert (plan["preset"], plan["native_bf16"], plan["optimizer"]) == ("fast", bf16, "fused_adamw")
    grouping = ["--group-by-length", "--group-window", "50"]  # a quarter of the 200 sentences (1024 on SST-2)
    update = ["--update-mode", "device" if device == "cpu" else "graph"]  # the update object; graphs off cpu
    if device in ("npu", "cuda"):
        static = ["--pad-buckets", "32,64,128,256", "--static-batch", "fill"]
        assert plan["fast_settings"] == grouping + static + update
        assert flag_value(args, "--max-tokens") == str(32 * 512)  # a full batch at the longest padded length
    else:
        # cpu: no data worker process beside torch's threads
        assert plan["fast_settings"] == grouping + ["--num-workers", "0"] + update and "--pad-buckets" not in args
        assert flag_value(args, "--max-tokens") == "4400"


@pytest.mark.parametrize("device,precision_flags", [("cpu", []), ("cuda", recipes.FP16_ARGS),
                                                    ("npu", recipes.FP16_ARGS)])
def test_stock_preset_is_the_published_recipe(data, tmp_path, monkeypatch, device, precision_flags):
    args, plan = _plan(data, tmp_path, monkeypatch, device, True, preset="stock")
    assert flag_value(args, "--optimizer") == "adam"
    assert not {"--group-by-length", "--pad-buckets", "--static-batch", "--amp", "--bf16", "--update-mode"} & set(args)
    assert ("--fp16" in args) == bool(precision_flags)
    assert (plan["preset"], plan["native_bf16"], plan["fast_settings"]) == ("stock", None, [])


def test_group_window():
    assert recipes.group_window(32, 67349) == 1024  # SST-2 at the recipe's batch: the measured window
    assert recipes.group_window(16, 256) == 64 and recipes.group_window(32, None) == 1024
    assert recipes.group_window(32, 40) == 32  # never below one batch


def test_capability_query_asks_torch(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert precision.native_bf16("cpu") is False
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert precision.native_bf16("cpu") is True
    assert precision.native_bf16("npu") is False  # no torch_npu here: torch cannot say, so no bf16


def test_npu_defaults_bound_the_shapes_of_an_epoch(data, tmp_path, monkeypatch):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf

    args, plan = _plan(data, tmp_path, monkeypatch, "npu", False, batch_size=16)
    # the same command line, with the data pipeline built on cpu (no npu here; shapes do not depend on it)
    at = args.index("--device-type")
    args = args[:at] + ["--cpu"] + args[at + 2:]
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), args))
    task = tasks.setup_task(cfg.task)
    task.load_dataset("train")
    allowed = {(16, length) for length in (*recipes.NPU_PAD_BUCKETS, 512)}
    for epoch in (1, 2):
        itr = task.get_batch_iterator(
            dataset=task.dataset("train"), max_tokens=cfg.dataset.max_tokens, max_sentences=cfg.dataset.batch_size,
            max_positions=task.max_positions(), ignore_invalid_inputs=True, seed=cfg.common.seed, epoch=epoch)
        batches = list(itr.next_epoch_itr(shuffle=True))
        shapes = {tuple(b["net_input"]["src_tokens"].shape) for b in batches}
        assert shapes <= allowed, shapes
        assert len(shapes) >= 3  # the data spans several buckets: the bound is what limits them
        assert len(batches) == 13  # 200 sentences, every batch 16 (the last filled up)
