"""--fp16 / --bf16 (O2), --memory-efficient-fp16 and --amp resume to exactly the state of an uninterrupted run.

For each precision and optimizer: 6 updates in one run, against 3 updates, then a second run that resumes from
checkpoint_last.pt and trains to 6. Parameters, fp32 master weights, Adam moments and the loss scale must be
bit-identical. ``--fp16-scale-window 2`` makes the loss scale grow during the run, so the scaler's counters must
resume too. Stock fairseq rebuilds the masters from the half-precision weights and restarts the counters.
"""

import logging

import pytest
import torch

from fairseq_npu.amp.master_weights_state import STATE_KEY
from glue_tiny_data import make_glue_dir, tiny_roberta_args, train_in_process


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    # 64 sentences, batch 8: 8 updates an epoch, so every save of these runs is mid-epoch
    return make_glue_dir(tmp_path_factory.mktemp("half_resume") / "SST-2-bin", {"train": 64, "valid": 8}, seed=5)


def train(data, save_dir, max_update, flags):
    args = tiny_roberta_args(data, "sentence_prediction", [
        "--max-update", str(max_update), "--save-dir", str(save_dir), "--save-interval-updates", "3",
        "--no-epoch-checkpoints", "--fp16-init-scale", "128", *flags])
    train_in_process([a for a in args if a != "--no-save"])
    return torch.load(save_dir / "checkpoint_last.pt", map_location="cpu", weights_only=False)


def differences(a, b, path=""):
    """Paths at which two nested checkpoint states differ (tensors compared bit for bit)."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        same = torch.is_tensor(a) and torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
        return [] if same else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if a.keys() != b.keys():
            return [f"{path} keys"]
        return [d for k in a for d in differences(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} length"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [path]


CASES = {
    "fp16-adam": ["--fp16", "--fp16-scale-window", "2", "--optimizer", "adam"],
    "fp16-fused_adamw": ["--fp16", "--fp16-scale-window", "2", "--optimizer", "fused_adamw"],
    "bf16-adam": ["--bf16", "--optimizer", "adam"],
    "memory-efficient-fp16-adam": ["--memory-efficient-fp16", "--fp16-scale-window", "2", "--optimizer", "adam"],
    # O1 for comparison: no masters (fp32 weights); its scaler state is saved by DeviceAMPOptimizer
    "amp-fp16-adam": ["--amp", "--amp-dtype", "float16", "--fp16-scale-window", "2", "--optimizer", "adam"],
    # the device update (fairseq_npu/update/): its scale and counters live on the device and reach the checkpoint
    "fp16-device-update": ["--fp16", "--fp16-scale-window", "2", "--optimizer", "fused_adamw", "--update-mode",
                           "device"],
    "amp-fp16-device-update": ["--amp", "--amp-dtype", "float16", "--fp16-scale-window", "2", "--optimizer",
                               "fused_adamw", "--update-mode", "device"],
}
WITHOUT_MASTERS = ("--memory-efficient-fp16", "--amp")  # these step the model's own weights


@pytest.mark.parametrize("flags", CASES.values(), ids=CASES.keys())
def test_resume_is_bit_identical(data, tmp_path, flags):
    whole = train(data, tmp_path / "whole", 6, flags)
    train(data, tmp_path / "split", 3, flags)
    resumed = train(data, tmp_path / "split", 6, flags)
    assert resumed["optimizer_history"][-1]["num_updates"] == whole["optimizer_history"][-1]["num_updates"] == 6
    assert differences(whole["model"], resumed["model"]) == []
    assert differences(whole["last_optimizer_state"], resumed["last_optimizer_state"]) == []
    if not set(WITHOUT_MASTERS) & set(flags):
        masters = resumed["last_optimizer_state"][STATE_KEY]["fp32_params"]
        assert masters and {m.dtype for m in masters} == {torch.float32}
        half = torch.bfloat16 if "--bf16" in flags else torch.float16
        # what stock loses: the masters hold more than the half-precision weights can
        assert any(not torch.equal(m, m.to(half).float()) for m in masters)
    if "--fp16" in flags or "--memory-efficient-fp16" in flags:
        assert whole["last_optimizer_state"]["loss_scale"] == 1024.0  # 128, doubled every 2 updates
    if "--amp" in flags and "device" in flags:
        assert whole["last_optimizer_state"]["fairseq_npu_amp_scaler"]["scale"] == 1024.0


def test_checkpoint_without_master_weights_still_resumes(data, tmp_path, caplog):
    flags = CASES["fp16-adam"]
    train(data, tmp_path / "split", 3, flags)
    last = tmp_path / "split" / "checkpoint_last.pt"
    state = torch.load(last, map_location="cpu", weights_only=False)
    del state["last_optimizer_state"][STATE_KEY]  # as stock fairseq (or an older plugin) writes it
    torch.save(state, last)
    with caplog.at_level(logging.INFO, logger="fairseq_npu.amp.master_weights_state"):
        resumed = train(data, tmp_path / "split", 6, flags)
    assert resumed["optimizer_history"][-1]["num_updates"] == 6
    assert "the checkpoint has no fp32 master weights" in caplog.text
