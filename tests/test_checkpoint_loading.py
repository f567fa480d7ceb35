"""Checkpoints load with weights_only=True plus fairseq's allowlist; anything else pickled is refused."""

import argparse
import pathlib
import pickle

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq import checkpoint_utils
from fairseq_npu.checkpoint_loading import UnsafeCheckpointError, safe_load


class _TouchOnLoad:
    """Pickles as a call to Path.touch: loading it unsafely would create the marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


def _roberta_style_checkpoint(path):
    """What roberta.base model.pt holds: legacy argparse args, weights, and training state."""
    args = argparse.Namespace(arch="roberta_base", task="masked_lm", encoder_layers=12, lr=[0.0006],
                              adam_betas="(0.9, 0.98)")
    torch.save({
        "args": args,
        "model": {"encoder.sentence_encoder.embed_tokens.weight": torch.randn(8, 4)},
        "optimizer_history": [{"criterion_name": "MaskedLmLoss", "optimizer_name": "FairseqAdam",
                               "lr_scheduler_state": {"best": np.float64(1.5)}, "num_updates": 500000}],
        "extra_state": {"epoch": 3, "train_iterator": {"epoch": 3, "iterations_in_epoch": 0}},
        "last_optimizer_state": {"state": {0: {"step": torch.tensor(3.0)}}, "param_groups": [{"lr": 1e-4}]},
    }, path)
    return args


def test_stock_torch_load_refuses_fairseq_checkpoints(tmp_path):
    """The problem being solved: torch >= 2.6 defaults to weights_only=True and rejects argparse.Namespace."""
    _roberta_style_checkpoint(tmp_path / "model.pt")
    with pytest.raises(pickle.UnpicklingError, match="argparse.Namespace"):
        torch.load(tmp_path / "model.pt")


def test_legacy_args_checkpoint_loads(tmp_path):
    args = _roberta_style_checkpoint(tmp_path / "model.pt")
    state = safe_load(str(tmp_path / "model.pt"), map_location="cpu")
    assert state["args"] == args
    assert state["optimizer_history"][0]["lr_scheduler_state"]["best"] == 1.5
    assert state["model"]["encoder.sentence_encoder.embed_tokens.weight"].shape == (8, 4)


def test_omegaconf_cfg_checkpoint_loads(tmp_path):
    cfg = OmegaConf.create({"common": {"seed": 1, "fp16": False}, "model": {"_name": "roberta_base", "dropout": 0.1},
                            "optimization": {"lr": [1e-5]}})
    torch.save({"cfg": cfg, "model": {"w": torch.ones(2)}}, tmp_path / "ck.pt")
    state = safe_load(str(tmp_path / "ck.pt"))
    assert isinstance(state["cfg"], DictConfig)
    assert OmegaConf.to_container(state["cfg"]) == OmegaConf.to_container(cfg)


def test_arbitrary_callable_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "cfg": None, "payload": _TouchOnLoad(marker)}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    message = str(err.value)
    assert message.startswith(f"refusing to load checkpoint {path}: it pickles an object outside the fairseq")
    assert message.endswith("allowed_globals): Unsupported global: GLOBAL getattr was not an allowed global by default")  # torch names the offending global
    assert not marker.exists()


def test_fairseq_checkpoint_utils_uses_the_safe_loader(tmp_path):
    """A checkpoint as fairseq's Trainer writes it (plain-container cfg) loads through stock checkpoint_utils."""
    cfg = {"common": {"seed": 1}, "model": {"_name": "roberta_base"}, "task": {"_name": "sentence_prediction"}}
    torch.save({"args": None, "cfg": cfg, "model": {"w": torch.arange(3.0)},
                "optimizer_history": [{"criterion_name": "SentencePredictionCriterion", "optimizer_name": "FairseqAdam",
                                       "lr_scheduler_state": {"best": None}, "num_updates": 10}],
                "extra_state": {"best": np.float64(0.9)}}, tmp_path / "checkpoint_last.pt")
    state = checkpoint_utils.load_checkpoint_to_cpu(str(tmp_path / "checkpoint_last.pt"))
    assert torch.equal(state["model"]["w"], torch.arange(3.0))
    assert state["cfg"].common.seed == 1
