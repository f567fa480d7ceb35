"""A FAIRSEQ_NPU_* environment variable set to a value the plugin does not take is one line naming it, exit code 2.

Before: FAIRSEQ_NPU_DEVICE=gpu and FAIRSEQ_NPU_CPU_MALLOC=fast ended fairseq-train in a traceback,
FAIRSEQ_NPU_AMP_DTYPE=fp8 was reported as a flag (--amp-dtype) the user never gave, and FAIRSEQ_NPU_APEX or
FAIRSEQ_NPU_UPDATE_MODE garbage was ignored or failed late. fairseq-train's parsing runs in this process; the real
command with a bad variable is a case of benchmarks/fault_injection.py.
"""

import logging
import sys

import pytest

from glue_tiny_data import make_glue_dir, tiny_roberta_args

BAD = {
    "FAIRSEQ_NPU_DEVICE": ("gpu", "expected one of auto, npu, cuda, cpu, or unset it"),
    "FAIRSEQ_NPU_AMP_DTYPE": ("fp8", "expected one of auto, float16, bfloat16, or unset it"),
    "FAIRSEQ_NPU_CPU_MALLOC": ("fast", "expected one of auto, keep, system, or unset it"),
    "FAIRSEQ_NPU_UPDATE_MODE": ("fast", "expected one of stock, device, graph, or unset it"),
    "FAIRSEQ_NPU_APEX": ("O7 x", "expected '<opt level> <loss scale>' with an opt level of O0, O1, O2, or unset it"),
}


def line(name: str, prog: str) -> str:
    value, expected = BAD[name]
    return f"{prog}: error: {name}={value!r} (environment): {expected}"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_glue_dir(tmp_path_factory.mktemp("env") / "SST-2-bin", {"train": 8, "valid": 8}, seed=7)


@pytest.mark.parametrize("name", sorted(BAD))
def test_fairseq_train_in_process(data, name, capsys, monkeypatch):
    from fairseq import options

    import fairseq_npu  # noqa: F401  (fairseq-train imports --user-dir before it parses: the hooks are in)

    monkeypatch.setenv(name, BAD[name][0])
    monkeypatch.setattr(sys, "argv", ["fairseq-train"])
    with pytest.raises(SystemExit) as exit_info:
        options.parse_args_and_arch(options.get_training_parser(), tiny_roberta_args(data, "sentence_prediction"))
    assert (exit_info.value.code, capsys.readouterr().err) == (2, line(name, "fairseq-train") + "\n")


@pytest.mark.parametrize("name", sorted(BAD))
def test_fairseq_npu_evaluate(data, tmp_path, name, capsys, monkeypatch):
    from fairseq_npu.cli.evaluate import cli_main

    monkeypatch.setenv(name, BAD[name][0])
    (tmp_path / "checkpoint.pt").write_bytes(b"never read")
    root = logging.getLogger()
    level = root.level
    try:
        code = cli_main([str(data), "--path", str(tmp_path / "checkpoint.pt")])
    finally:
        root.setLevel(level)
    assert (code, capsys.readouterr().err) == (2, line(name, "fairseq-npu-evaluate") + "\n")
