"""Checkpoints load with weights_only=True plus fairseq's allowlist; anything else pickled is refused, and so are
truncated files and OmegaConf resolvers in a checkpoint's config, each in one line naming the file."""

import argparse
import logging
import os
import pathlib
import pickle
import re

import numpy as np
import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import fairseq_npu  # noqa: F401  (installs the hooks)
from fairseq import checkpoint_utils
from fairseq_npu.checkpoint_loading import CorruptCheckpointError, UnsafeCheckpointError, safe_load


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


# --------------------------------------------------------------------------------------------------------------
# every wording of torch's weights_only refusal names what was refused, and no advice to turn weights_only off


class _SystemOnLoad:
    """Pickles as os.system (posix.system): torch refuses the whole module ("... whose module posix is blocked")."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _refusal(path):
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    message = str(err.value)
    assert "\n" not in message and "weights_only=False" not in message and "Weights only load failed" not in message
    prefix = (f"refusing to load checkpoint {path}: it pickles an object outside the fairseq checkpoint allowlist "
              f"(fairseq_npu.checkpoint_loading.allowed_globals): ")
    assert message.startswith(prefix), message
    return message[len(prefix):]


def test_blocked_module_payload_is_refused_naming_the_global(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {"w": torch.ones(1)}, "payload": _SystemOnLoad(marker)}, path)
    assert _refusal(path) == "Trying to load unsupported GLOBAL posix.system whose module posix is blocked"
    assert not marker.exists()


def test_unsupported_opcode_is_refused_naming_it(tmp_path):
    """Pickle protocol 4 writes FRAME opcodes, which the weights_only unpickler does not know (operand 149)."""
    path = tmp_path / "proto4.pt"
    torch.save({"model": {"w": torch.ones(1)}}, path, pickle_protocol=4)
    assert _refusal(path) == "Unsupported operand 149"


def evaluate_cli(tmp_path, checkpoint):
    """fairseq-npu-evaluate on an empty data dir and ``checkpoint``, in-process; its exit code. The command sets
    the root logger's level, which is put back for the tests after this one."""
    from fairseq_npu.cli.evaluate import cli_main

    (tmp_path / "SST-2-bin").mkdir()
    root = logging.getLogger()
    level = root.level
    try:
        return cli_main([str(tmp_path / "SST-2-bin"), "--path", str(checkpoint)])
    finally:
        root.setLevel(level)


def test_fairseq_npu_evaluate_refuses_in_one_line(tmp_path, capsys):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "cfg": None, "payload": _SystemOnLoad(marker)}, path)
    code = evaluate_cli(tmp_path, path)
    err = capsys.readouterr().err
    assert (code, err) == (2, f"fairseq-npu-evaluate: error: refusing to load checkpoint {path}: it pickles an object "
                              "outside the fairseq checkpoint allowlist (fairseq_npu.checkpoint_loading."
                              "allowed_globals): Trying to load unsupported GLOBAL posix.system whose module posix "
                              "is blocked\n")
    assert not marker.exists()


# --------------------------------------------------------------------------------------------------------------
# a truncated or damaged file: one line naming it and the newest intact checkpoint beside it


def _save_dir_with_intact_checkpoint(tmp_path, legacy=False):
    intact = tmp_path / "checkpoint_1_10.pt"
    state = {"cfg": None, "model": {"w": torch.randn(64, 64)}, "extra_state": {}, "optimizer_history": []}
    torch.save(state, intact, _use_new_zipfile_serialization=not legacy)
    older = tmp_path / "checkpoint_1_5.pt"
    torch.save(state, older)
    os.utime(older, (1, 1))  # older than checkpoint_1_10.pt
    return intact.read_bytes(), tmp_path / "checkpoint_last.pt"


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-format"])
@pytest.mark.parametrize("keep", [0, 3, 0.5, -1], ids=["empty", "3-bytes", "half", "all-but-1-byte"])
def test_truncated_checkpoint_names_file_and_newest_intact(tmp_path, keep, legacy):
    data, last = _save_dir_with_intact_checkpoint(tmp_path, legacy)
    cut = int(len(data) * keep) if isinstance(keep, float) else (len(data) + keep if keep < 0 else keep)
    last.write_bytes(data[:cut])
    with pytest.raises(CorruptCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(last))
    message = str(err.value)
    intact = tmp_path / "checkpoint_1_10.pt"
    assert re.fullmatch(rf"checkpoint {re.escape(str(last))} is truncated or corrupt \([^\n]+\); the newest intact "
                        rf"checkpoint in {re.escape(str(tmp_path))} is {re.escape(str(intact))} \(resume from it "
                        rf"with --restore-file {re.escape(str(intact))}\)", message), message


def test_truncated_checkpoint_without_an_intact_one(tmp_path):
    last = tmp_path / "checkpoint_last.pt"
    torch.save({"model": {"w": torch.randn(64, 64)}}, last)
    last.write_bytes(last.read_bytes()[:1000])
    (tmp_path / "checkpoint_1_5.pt").write_bytes(last.read_bytes()[:10])  # damaged too
    with pytest.raises(CorruptCheckpointError, match=rf"^checkpoint {re.escape(str(last))} is truncated or corrupt "
                       rf"\(incomplete zip archive: File is not a zip file\); there is no intact checkpoint in "
                       rf"{re.escape(str(tmp_path))}$"):
        checkpoint_utils.load_checkpoint_to_cpu(str(last))


# --------------------------------------------------------------------------------------------------------------
# OmegaConf resolvers in a checkpoint's config are refused; references to other keys still load


def test_resolver_interpolation_in_cfg_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("FAIRSEQ_NPU_TEST_HEAD", "fresh_random_head")
    path = tmp_path / "ck.pt"
    cfg = {"common": {"seed": 1}, "task": {"_name": "sentence_prediction",
                                           "classification_head_name": "${oc.env:FAIRSEQ_NPU_TEST_HEAD}"}}
    torch.save({"cfg": cfg, "model": {}, "optimizer_history": []}, path)
    with pytest.raises(UnsafeCheckpointError) as err:
        checkpoint_utils.load_checkpoint_to_cpu(str(path))
    assert str(err.value) == (f"refusing to load checkpoint {path}: cfg.task.classification_head_name = "
                              "'${oc.env:FAIRSEQ_NPU_TEST_HEAD}' is an OmegaConf resolver interpolation, which "
                              "fairseq would evaluate when it reads the config")


def test_resolver_interpolation_in_legacy_args_is_refused(tmp_path):
    path = tmp_path / "ck.pt"
    torch.save({"args": argparse.Namespace(arch="roberta_base", data="${oc.env:HOME}"), "model": {}}, path)
    with pytest.raises(UnsafeCheckpointError, match=r"args\.data = '\$\{oc\.env:HOME\}' is an OmegaConf resolver"):
        safe_load(str(path))


def test_key_references_in_cfg_still_load(tmp_path):
    path = tmp_path / "ck.pt"
    cfg = OmegaConf.create({"common": {"seed": 5}, "task": {"_name": "x", "seed": "${common.seed}"}})
    torch.save({"cfg": cfg, "model": {}}, path)
    assert safe_load(str(path))["cfg"].task.seed == 5


def test_fairseq_npu_evaluate_refuses_a_resolver_in_one_line(tmp_path, capsys, monkeypatch):
    """The case that made evaluation silently score a fresh random head: the head's name read from the environment."""
    monkeypatch.setenv("FAIRSEQ_NPU_TEST_HEAD", "fresh_random_head")
    path = tmp_path / "checkpoint_best.pt"
    cfg = {"task": {"_name": "sentence_prediction", "classification_head_name": "${oc.env:FAIRSEQ_NPU_TEST_HEAD}"}}
    torch.save({"cfg": cfg, "model": {}, "optimizer_history": []}, path)
    code = evaluate_cli(tmp_path, path)
    assert (code, capsys.readouterr().err) == (
        2, f"fairseq-npu-evaluate: error: refusing to load checkpoint {path}: cfg.task.classification_head_name = "
           "'${oc.env:FAIRSEQ_NPU_TEST_HEAD}' is an OmegaConf resolver interpolation, which fairseq would evaluate "
           "when it reads the config\n")
