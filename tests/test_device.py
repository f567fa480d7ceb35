"""The device layer: selection order, overrides, and what each backend tells the rest of the plugin."""

import pytest
import torch

from fairseq_npu import device

pytestmark = pytest.mark.usefixtures("fresh_device")  # tests/conftest.py


def test_auto_picks_cpu_without_accelerators(capsys):
    if torch.cuda.is_available():
        pytest.skip("this test describes a machine without cuda")
    backend = device.get()
    assert backend.type == "cpu"
    assert backend.dist_backend == "gloo"
    assert backend.autocast_device_type == "cpu"
    assert backend.half_dtypes == (torch.bfloat16, torch.float16)
    assert backend.device() == torch.device("cpu")
    assert backend.memory_stats() == {}
    assert "torch_npu not importable" in backend.reason and "no CUDA device" in backend.reason


def test_selection_is_announced_once(capsys, caplog):
    caplog.set_level("INFO")
    device.get()
    device.get()
    lines = [r.getMessage() for r in caplog.records if "device backend" in r.getMessage()]
    lines += [line for line in capsys.readouterr().err.splitlines() if "device backend" in line]
    assert len(lines) == 1
    assert lines[0].startswith("fairseq_npu: device backend cpu (distributed gloo) because ")


def test_env_var_forces_cpu(monkeypatch, npu_stand_in):
    monkeypatch.setenv(device.ENV_VAR, "cpu")
    device.reset()
    backend = device.get()
    assert backend.type == "cpu"
    assert backend.reason == f"{device.ENV_VAR}=cpu"


def test_unknown_device_type_is_an_error(monkeypatch):
    monkeypatch.setenv(device.ENV_VAR, "tpu")
    with pytest.raises(ValueError, match=r"FAIRSEQ_NPU_DEVICE / --device-type must be one of .* got 'tpu'"):
        device.select()


def test_requesting_a_missing_device_is_an_error_not_a_fallback():
    with pytest.raises(RuntimeError, match=r"device type 'npu' was asked for \(requested\) but torch_npu not importable"):
        device.select("npu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match=r"device type 'cuda' was asked for \(requested\) but no CUDA device"):
            device.select("cuda")


def test_fairseq_cpu_flag_wins(npu_stand_in):
    assert device.select("npu", force_cpu=True).type == "cpu"


def test_set_backend_exports_choice_for_spawned_workers(monkeypatch):
    import os

    device.set_backend("cpu")
    assert os.environ[device.ENV_VAR] == "cpu"
    monkeypatch.delenv(device.ENV_VAR)


def test_npu_branch_through_stand_in(npu_stand_in):
    backend = device.get()
    assert backend.type == "npu"
    assert backend.reason == "auto: torch_npu with 8 NPU device(s)"
    assert backend.dist_backend == "hccl"
    assert backend.autocast_device_type == "npu"
    assert backend.half_dtypes == (torch.float16, torch.bfloat16)
    assert backend.device_count() == 8
    backend.set_device(3)
    assert backend.device() == torch.device("npu", 3)
    backend.synchronize()
    backend.empty_cache()
    backend.manual_seed(7)
    assert backend.memory_stats() == {"allocated_bytes": 1024, "max_allocated_bytes": 2048}
    names = [name for name, _ in npu_stand_in.CALLS]
    assert names[:4] == ["set_device", "synchronize", "empty_cache", "manual_seed"]
    assert npu_stand_in.CALLS[3] == ("manual_seed", (7,))


def test_npu_without_bf16_offers_fp16_only(npu_stand_in):
    npu_stand_in.STATE["bf16"] = False  # Ascend 910A
    assert device.get().half_dtypes == (torch.float16,)
    assert not device.get().supports_dtype(torch.bfloat16)


def test_torch_npu_present_but_no_device_falls_back_in_auto(npu_stand_in):
    npu_stand_in.STATE["available"] = False
    backend = device.get()
    assert backend.type in ("cpu", "cuda")
    assert "torch_npu imported but no NPU device is visible" in backend.reason
