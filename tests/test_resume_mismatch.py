"""A checkpoint that does not fit the run it resumes is one line naming the file and the first difference.

A 2-class checkpoint resumed with --num-classes 3 (on data with 3 labels): fairseq drops the saved head and builds a
3-row one, and torch pairs the saved 2-row moments with it. Under --optimizer fused_adamw the fused kernel read past
them and the process died of a segmentation fault (exit -11); stock adam failed at the first step with a bare size
RuntimeError. Another --encoder-embed-dim or another precision ended in fairseq's chained traceback. The real
command runs the fused_adamw case; the others run fairseq-train's entry point in this process.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glue_tiny_data import make_glue_dir, tiny_roberta_args, train_error, train_in_process

HEAD = "classification_heads.sentence_classification_head.out_proj.weight"


def args(data: Path, save: Path, updates: int, extra=()):
    argv = tiny_roberta_args(data, "sentence_prediction_npu", [
        "--max-update", str(updates), "--save-dir", str(save), "--no-epoch-checkpoints", *extra])
    return [a for a in argv if a != "--no-save"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """2-label data, the same data with a third label in its dictionary, and 2-update checkpoints of adam and
    fused_adamw on the 2-label data."""
    root = tmp_path_factory.mktemp("mismatch")
    data = make_glue_dir(root / "SST-2-bin", {"train": 16, "valid": 8}, seed=4)
    three = root / "THREE-bin"
    shutil.copytree(data, three)
    with open(three / "label" / "dict.txt", "a") as f:
        f.write("2 1\n")
    checkpoints = {}
    for optimizer in ("adam", "fused_adamw"):
        train_in_process(args(data, root / optimizer, 2, ["--optimizer", optimizer]))
        checkpoints[optimizer] = root / optimizer / "checkpoint_last.pt"
    return data, three, checkpoints


def copy_of(checkpoint: Path, tmp_path: Path) -> Path:
    save = tmp_path / "save"
    save.mkdir()
    shutil.copyfile(checkpoint, save / "checkpoint_last.pt")
    return save


def moment_line(save: Path) -> str:
    return (f"fairseq-train: error: checkpoint {save / 'checkpoint_last.pt'}: its optimizer state does not fit the "
            f"model: parameter {HEAD} has shape [3, 32], its saved exp_avg [2, 32] (the checkpoint was trained with "
            "another model shape, e.g. --num-classes); resume with the flags it was trained with, or pass "
            "--reset-optimizer to start a new optimizer state")


def test_fused_adamw_resume_with_more_classes_is_one_line_not_a_segfault(saved, tmp_path):
    data, three, checkpoints = saved
    save = copy_of(checkpoints["fused_adamw"], tmp_path)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    done = subprocess.run([sys.executable, "-m", "fairseq_cli.train",
                           *args(three, save, 4, ["--optimizer", "fused_adamw", "--num-classes", "3"])],
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1] == moment_line(save)


def test_stock_adam_resume_with_more_classes(saved, tmp_path, capsys, monkeypatch):
    data, three, checkpoints = saved
    save = copy_of(checkpoints["adam"], tmp_path)
    assert train_error(args(three, save, 4, ["--num-classes", "3"]), capsys, monkeypatch) == (2, moment_line(save))


def test_resume_with_another_embed_dim(saved, tmp_path, capsys, monkeypatch):
    data, _, checkpoints = saved
    save = copy_of(checkpoints["adam"], tmp_path)
    assert train_error(args(data, save, 4, ["--encoder-embed-dim", "48"]), capsys, monkeypatch) == (
        2, f"fairseq-train: error: checkpoint {save / 'checkpoint_last.pt'} does not fit the model this run builds: "
           "encoder.sentence_encoder.embed_tokens.weight is [35, 32] in the checkpoint and [35, 48] in this run's "
           "model (and 23 more tensors); resume with the architecture flags it was trained with (--arch, "
           "--encoder-embed-dim, ...), or train into another --save-dir")


@pytest.mark.parametrize("flag,wrapper", [("--bf16", "FP16Optimizer"), ("--amp", "DeviceAMPOptimizer")])
def test_resume_in_another_precision(saved, tmp_path, capsys, monkeypatch, flag, wrapper):
    data, _, checkpoints = saved
    save = copy_of(checkpoints["adam"], tmp_path)
    assert train_error(args(data, save, 4, [flag]), capsys, monkeypatch) == (
        2, f"fairseq-train: error: checkpoint {save / 'checkpoint_last.pt'} holds the state of optimizer FairseqAdam, "
           f"this run builds {wrapper} (another --optimizer, or another precision flag: --fp16, --bf16, --amp, "
           "--memory-efficient-fp16); resume with the flags it was trained with, or pass --reset-optimizer to start "
           "a new optimizer state")


def test_fused_adamw_load_state_dict_checks_shapes_itself():
    """Loaded outside fairseq-train's checkpoint hook (no names known), the parameter is named by position."""
    from omegaconf import OmegaConf

    from fairseq_npu.optim.fused_adamw import FairseqFusedAdamW, FusedAdamWConfig
    from fairseq_npu.optimizer_state import OptimizerStateMismatch

    cfg = OmegaConf.structured(FusedAdamWConfig(lr=[1e-3], adamw_impl="auto"))  # fused on cpu: the segfault
    small = [torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(2, 3))]
    big = [torch.nn.Parameter(torch.zeros(4)), torch.nn.Parameter(torch.zeros(3, 3))]
    trained = FairseqFusedAdamW(cfg, small)
    for p in small:
        p.grad = torch.ones_like(p)
    trained.step()
    resumed = FairseqFusedAdamW(cfg, big)
    with pytest.raises(OptimizerStateMismatch) as err:
        resumed.load_state_dict(trained.state_dict())
    assert str(err.value) == ("its optimizer state does not fit the model: parameter #1 of parameter group 0 has "
                              "shape [3, 3], its saved exp_avg [2, 3] (the checkpoint was trained with another model "
                              "shape, e.g. --num-classes); resume with the flags it was trained with, or pass "
                              "--reset-optimizer to start a new optimizer state")
