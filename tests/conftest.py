"""Shared pytest fixtures: the real GLUE data beside the project, a fresh device choice, and the torch_npu stand-in."""

import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", REPO.parent / "shared" / "data"))
STAND_IN = Path(__file__).resolve().parent / "npu_stand_in"


@pytest.fixture
def shared_data() -> Path:
    """../shared/data (real GLUE tsv files and vocabularies); skips the test when it is absent."""
    if not (SHARED_DATA / "glue").is_dir():
        pytest.skip(f"real GLUE data not found at {SHARED_DATA} (set FAIRSEQ_NPU_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def fresh_device(monkeypatch):
    """No device chosen yet and none asked for in the environment; chosen afresh after the test. Yields
    fairseq_npu.device (modules that want it for every test: ``pytestmark = pytest.mark.usefixtures(...)``)."""
    from fairseq_npu import device

    monkeypatch.delenv(device.ENV_VAR, raising=False)
    device.reset()
    yield device
    device.reset()


@pytest.fixture
def npu_stand_in(monkeypatch):
    """Make the torch_npu stand-in importable and re-select the device; yields the stand-in module."""
    from fairseq_npu import device

    monkeypatch.syspath_prepend(str(STAND_IN))
    monkeypatch.delenv(device.ENV_VAR, raising=False)
    import torch_npu

    torch_npu.install()
    torch_npu.reset()
    device.reset()
    yield torch_npu
    device.reset()
    for name in [m for m in sys.modules if m == "torch_npu" or m.startswith("torch_npu.")] + ["torch.npu"]:
        sys.modules.pop(name, None)
    if hasattr(torch, "npu"):
        delattr(torch, "npu")


@pytest.fixture
def npu_host(npu_stand_in):
    """The npu backend on the stand-in, its tensors in host memory, so that npu code paths train for real
    (tests/npu_stand_in/README.md)."""
    from fairseq_npu import device

    npu_stand_in.keep_tensors_on_host()
    assert device.get().type == "npu"
    yield npu_stand_in
    npu_stand_in.keep_tensors_on_host.undo()


@pytest.fixture(autouse=True)
def no_update_mode_left_over(monkeypatch):
    """``--update-mode`` exports $FAIRSEQ_NPU_UPDATE_MODE for spawned workers; a test's choice must not reach the
    next test's in-process runs."""
    monkeypatch.delenv("FAIRSEQ_NPU_UPDATE_MODE", raising=False)
