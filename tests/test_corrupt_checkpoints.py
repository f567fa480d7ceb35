"""Checkpoints are verified before use, and a save that cannot be written leaves the earlier ones intact.

A damaged file (bytes flipped in a tensor, in data.pkl or in the zip directory, a text file, a truncated file)
is refused at every load path (resume, --finetune-from-model, fairseq-npu-evaluate, -predict, -export, -convert)
with one line naming the file and what is wrong, and exit code 2. Before, a flipped tensor byte trained on and
exited 0 (torch never checks the zip CRCs). A save onto a full disk or into a folder where nothing can be written
is one line, leaves no ``.tmp`` and no changed checkpoint. One case of each runs the real command; the others run
the same entry points in this process.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from glue_tiny_data import cli, make_glue_dir, tiny_roberta_args, train_in_process


def damage(src: Path, dst: Path, how: str) -> None:
    """Write ``src`` to ``dst`` damaged as ``how`` says (same size, except 'truncated' and 'text')."""
    data = bytearray(src.read_bytes())
    if how == "tensor-bytes":
        middle = len(data) // 2
        data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    elif how == "data.pkl":
        at = data.find(b"data.pkl") + 100  # inside the pickle, after the member's local header
        data[at:at + 8] = bytes(b ^ 0xFF for b in data[at:at + 8])
    elif how == "zip-directory":
        at = data.rfind(b"PK\x01\x02") + 20  # the last central-directory entry's compressed size
        data[at:at + 4] = b"\xff\xff\xff\x7f"
    elif how == "truncated":
        data = data[: len(data) * 2 // 3]
    elif how == "text":
        data = bytearray(b"hello world\n")
    dst.write_bytes(bytes(data))


REASONS = {
    "tensor-bytes": r"truncated or corrupt \(archive/data/\d+ in the archive fails its CRC check\)",
    "data.pkl": r"truncated or corrupt \(archive/data\.pkl in the archive fails its CRC check\)",
    "zip-directory": r"truncated or corrupt \(the zip directory entry of archive/\S+ is damaged\)",
    "truncated": r"truncated or corrupt \(incomplete zip archive: File is not a zip file\)",
}


def expected_line(path: Path, how: str) -> str:
    """The one line (a regular expression) that names ``path`` damaged as ``how``."""
    if how == "text":
        return (rf"{re.escape(str(path))} is not a PyTorch checkpoint \(it starts with 'hello world\\n'; neither "
                r"torch's zip archive nor its legacy format\)")
    return (rf"checkpoint {re.escape(str(path))} is {REASONS[how]}; there is no intact checkpoint in "
            rf"{re.escape(str(path.parent))}")


HOW = ["tensor-bytes", "data.pkl", "zip-directory", "truncated", "text"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SST-2-like data and a save dir holding the checkpoint_last.pt of 2 updates of a tiny RoBERTa."""
    root = tmp_path_factory.mktemp("corrupt")
    data = make_glue_dir(root / "SST-2-bin", {"train": 16, "valid": 8, "test": 8}, seed=2)
    save = root / "save"
    train_in_process(args(data, save, 2))
    return data, save / "checkpoint_last.pt"


def args(data: Path, save: Path, updates: int, extra=()):
    argv = tiny_roberta_args(data, "sentence_prediction_npu", [
        "--max-update", str(updates), "--save-dir", str(save), "--no-epoch-checkpoints", *extra])
    return [a for a in argv if a != "--no-save"]


def run(command):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


# --------------------------------------------------------------------------------------------------------------
# the real command: resume from a checkpoint_last.pt with 64 bytes flipped in a tensor


def test_resume_from_a_flipped_tensor_is_refused(trained, tmp_path):
    data, intact = trained
    save = tmp_path / "save"
    save.mkdir()
    damage(intact, save / "checkpoint_last.pt", "tensor-bytes")
    before = (save / "checkpoint_last.pt").read_bytes()
    done = run([sys.executable, "-m", "fairseq_cli.train", *args(data, save, 4)])
    assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Traceback" not in done.stderr
    assert re.fullmatch("fairseq-train: error: " + expected_line(save / "checkpoint_last.pt", "tensor-bytes"),
                        last_line(done.stderr)), done.stderr[-2000:]
    assert (save / "checkpoint_last.pt").read_bytes() == before  # nothing trained, nothing saved


# --------------------------------------------------------------------------------------------------------------
# every other load path, every kind of damage, in this process


@pytest.mark.parametrize("how", HOW)
@pytest.mark.parametrize("command", ["evaluate", "predict", "export"])
def test_damaged_checkpoint_is_one_line_in_every_cli(trained, tmp_path, capsys, command, how):
    data, intact = trained
    path = tmp_path / "checkpoint_best.pt"
    damage(intact, path, how)
    if command == "evaluate":
        from fairseq_npu.cli.evaluate import cli_main
        argv = [str(data), "--path", str(path)]
    elif command == "predict":
        from fairseq_npu.cli.predict import cli_main
        argv = [str(data), "--path", str(path), "--output-dir", str(tmp_path / "out")]
    else:
        pytest.importorskip("transformers")
        from fairseq_npu.convert.export import cli_main
        argv = [str(path), str(tmp_path / "hf")]
    code, err = cli(cli_main, argv, capsys)
    assert code == 2
    assert re.fullmatch(f"fairseq-npu-{command}: error: {expected_line(path, how)}\n", err), err
    assert not (tmp_path / "out").exists() and not (tmp_path / "hf").exists()


@pytest.mark.parametrize("how", ["data.pkl", "text"])
def test_finetune_from_a_damaged_model_is_one_line(trained, tmp_path, capsys, monkeypatch, how):
    monkeypatch.setattr(sys, "argv", ["fairseq-train"])  # the name the error line carries
    data, intact = trained
    model = tmp_path / "pretrained" / "model.pt"
    model.parent.mkdir()
    damage(intact, model, how)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(args(data, tmp_path / "save", 2, ["--finetune-from-model", str(model)]))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert re.fullmatch("fairseq-train: error: " + expected_line(model, how), last_line(err)), err
    assert "Traceback" not in err


def test_convert_refuses_a_truncated_safetensors_and_a_damaged_bin(tmp_path, capsys):
    from safetensors.torch import save_file

    from fairseq_npu.convert.cli import cli_main

    src = tmp_path / "hf"
    src.mkdir()
    (src / "config.json").write_text('{"model_type": "roberta"}')
    save_file({"embeddings.weight": torch.randn(64, 32)}, str(src / "model.safetensors"))
    whole = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(whole[: len(whole) // 2])
    code, err = cli(cli_main, [str(src), str(tmp_path / "out")], capsys)
    header = 8 + int.from_bytes(whole[:8], "little")
    assert (code, err) == (2, f"fairseq-npu-convert: error: {src / 'model.safetensors'}: truncated: "
                              f"{len(whole) // 2} bytes, its header describes {header + 64 * 32 * 4}\n")

    (src / "model.safetensors").unlink()
    torch.save({"embeddings.weight": torch.randn(64, 32)}, src / "pytorch_model.bin")
    damage(src / "pytorch_model.bin", src / "pytorch_model.bin", "tensor-bytes")
    code, err = cli(cli_main, [str(src), str(tmp_path / "out")], capsys)
    assert (code, err) == (2, f"fairseq-npu-convert: error: checkpoint {src / 'pytorch_model.bin'} is truncated or "
                              "corrupt (pytorch_model/data/0 in the archive fails its CRC check); there is no intact "
                              f"checkpoint in {src}\n")
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------------------
# saving: a full disk (the .tmp is a link to /dev/full, which answers every write with ENOSPC), a save dir
# where nothing can be created


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_is_one_line_and_keeps_the_previous_checkpoint(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["fairseq-train"])
    data, intact = trained
    save = tmp_path / "save"
    save.mkdir()
    shutil.copyfile(intact, save / "checkpoint_last.pt")
    os.symlink("/dev/full", save / "checkpoint_last.pt.tmp")
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(args(data, save, 4))  # resumes at update 2, saves at 4
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "Traceback" not in err
    assert last_line(err) == (
        f"fairseq-train: error: cannot write checkpoint {save / 'checkpoint_last.pt'}: No space left on device; "
        f"no partial file is left, and the checkpoints already in {save} are unchanged")
    assert sorted(p.name for p in save.iterdir()) == ["checkpoint_last.pt"]
    assert (save / "checkpoint_last.pt").read_bytes() == intact.read_bytes()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_full_disk_during_the_copy_to_checkpoint_last(tmp_path):
    from fairseq import checkpoint_utils

    from fairseq_npu.checkpoint_saving import CheckpointSaveError

    (tmp_path / "checkpoint_1_4.pt").write_bytes(b"new")
    (tmp_path / "checkpoint_last.pt").write_bytes(b"old")
    os.symlink("/dev/full", tmp_path / "checkpoint_last.pt.tmp")
    with pytest.raises(CheckpointSaveError) as err:
        checkpoint_utils.PathManager.copy(str(tmp_path / "checkpoint_1_4.pt"), str(tmp_path / "checkpoint_last.pt"),
                                          overwrite=True)
    assert str(err.value) == (f"cannot write checkpoint {tmp_path / 'checkpoint_last.pt'}: No space left on device; "
                              f"no partial file is left, and the checkpoints already in {tmp_path} are unchanged")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_1_4.pt", "checkpoint_last.pt"]
    assert (tmp_path / "checkpoint_last.pt").read_bytes() == b"old"


def test_save_dir_where_nothing_can_be_written(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["fairseq-train"])
    data, _ = trained
    (tmp_path / "a_file").write_text("x")
    save = tmp_path / "a_file" / "save"  # as a read-only folder refuses (a test run as root ignores chmod)
    with pytest.raises(SystemExit) as exit_info:
        train_in_process(args(data, save, 2))
    err = capsys.readouterr().err
    assert (exit_info.value.code, last_line(err)) == (
        2, f"fairseq-train: error: --save-dir {save}: cannot write checkpoints there (Not a directory)")
    assert "Traceback" not in err
