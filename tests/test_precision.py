"""The precision policy (fairseq_npu/precision.py): one decision for training, validation, evaluation and predict;
one --opt-level default; the FAIRSEQ_NPU_* environment contract written down where it is read."""

import argparse
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from fairseq_npu import device, precision
from fairseq_npu.device import DeviceBackend

REPO = Path(__file__).resolve().parents[1]
CPU = DeviceBackend("cpu", "test")


def _common(**flags):
    names = ("fp16", "bf16", "amp", "memory_efficient_fp16", "memory_efficient_bf16")
    return SimpleNamespace(**{n: flags.get(n, False) for n in names})


def test_policy_follows_the_flags_as_fairseqs_trainer_casts(monkeypatch):
    monkeypatch.delenv(precision.AMP_DTYPE_ENV, raising=False)
    assert precision.policy(_common(), CPU) == precision.Precision("cpu", "float32", None)
    assert precision.policy(_common(fp16=True), CPU) == precision.Precision("cpu", "float16", None)
    assert precision.policy(_common(memory_efficient_bf16=True), CPU) == precision.Precision("cpu", "bfloat16", None)
    # --amp on cpu autocasts in bf16 (the evaluation loop used fp16 here, unlike training)
    assert precision.policy(_common(amp=True), CPU) == precision.Precision("cpu", "float32", "bfloat16")
    assert precision.policy(_common(amp=True, bf16=True), CPU) == precision.Precision("cpu", "bfloat16", "bfloat16")
    monkeypatch.setenv(precision.AMP_DTYPE_ENV, "float16")
    p = precision.policy(_common(amp=True), CPU)
    assert p.autocast_dtype == "float16" and p.weights_dtype() is torch.float32
    with p.autocast():
        assert torch.get_autocast_dtype("cpu") == torch.float16 and torch.is_autocast_enabled("cpu")
    with precision.Precision("cpu").autocast():
        assert not torch.is_autocast_enabled("cpu")


def test_amp_dtype_on_accelerators(npu_stand_in, monkeypatch):
    monkeypatch.delenv(precision.AMP_DTYPE_ENV, raising=False)
    npu = device.get()
    assert npu.type == "npu" and precision.amp_dtype(npu) == "float16"
    npu_stand_in.STATE["bf16"] = False  # a 910A
    with pytest.raises(RuntimeError, match="--amp-dtype bfloat16: device npu does not support it"):
        precision.amp_dtype(npu, "bfloat16")


def test_one_opt_level_default():
    from fairseq_npu.amp import flags
    from fairseq_npu.launch import __main__ as launch_main
    from fairseq_npu.launch import command

    parser = argparse.ArgumentParser()
    flags.add_args(parser)
    assert parser.parse_args([]).opt_level == precision.DEFAULT_OPT_LEVEL == "O1"
    assert command.LaunchRequest(mode="full", data="d").opt_level == precision.DEFAULT_OPT_LEVEL
    assert flags.translate(["d", "--use-apex"])[-3:] == ["--amp", "--amp-dtype", "float16"]  # apex O1 mapped
    source = Path(launch_main.__file__).read_text()
    assert "default=precision.DEFAULT_OPT_LEVEL" in source
    # the shell layer passes --opt-level only when asked: no default of its own
    assert 'OPT_LEVEL=""' in (REPO / "test" / "common.sh").read_text()


def test_every_environment_variable_is_in_the_contract():
    # what the plugin, the launch scripts and the test fixtures read (a benchmark script's own settings and a
    # test's throw-away names are not part of it)
    used = set(re.findall(r"FAIRSEQ_NPU_[A-Z_]+", (REPO / "tests" / "conftest.py").read_text()))
    for folder in ("fairseq_npu", "test"):
        for path in (REPO / folder).rglob("*"):
            if path.suffix in (".py", ".sh") and path.is_file():
                used |= set(re.findall(r"FAIRSEQ_NPU_[A-Z_]+", path.read_text(errors="replace")))
    documented = set(re.findall(r"``(FAIRSEQ_NPU_[A-Z_]+)``", precision.__doc__))
    docs = set(re.findall(r"`(FAIRSEQ_NPU_[A-Z_]+)`", (REPO / "docs" / "launch.md").read_text()))
    assert used and used <= documented, used - documented
    assert documented <= docs, documented - docs


def test_validation_autocasts_from_the_config_before_any_training_step(tmp_path, monkeypatch):
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from glue_tiny_data import make_glue_dir, tiny_roberta_args

    # --amp-dtype and --device-type of earlier tests' command lines live on in the environment (they export)
    monkeypatch.delenv(precision.AMP_DTYPE_ENV, raising=False)
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    device.reset()

    data = make_glue_dir(tmp_path / "SST-2-bin", {"train": 16, "valid": 8})
    argv = tiny_roberta_args(data, "sentence_prediction_npu", ["--amp"])
    cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
    task = tasks.setup_task(cfg.task)
    model = task.build_model(cfg.model)
    criterion = task.build_criterion(cfg.criterion)
    task.load_dataset("valid")
    dataset = task.dataset("valid")
    seen = []
    model.register_forward_hook(lambda *_: seen.append(torch.get_autocast_dtype("cpu")
                                                       if torch.is_autocast_enabled("cpu") else None))
    task.valid_step(dataset.collater([dataset[i] for i in range(4)]), model.eval(), criterion)
    assert seen == [torch.bfloat16]
