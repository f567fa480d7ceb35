"""Launch helpers (fairseq_npu/launch): FPS on a synthetic fairseq log, recipe schedules, summary lines, CLI errors."""

import json
import math
import struct
import subprocess
from pathlib import Path

import pytest

from fairseq_npu.launch import command, summary, training_log

REPO = Path(__file__).resolve().parents[1]


def _inner(epoch, updates, bsz, wpb, wps, ups=None):
    ups = ups if ups is not None else wps / wpb
    fields = {"epoch": epoch, "update": 0, "loss": "0.5", "wps": str(wps), "ups": f"{ups:.2f}", "wpb": str(wpb),
              "bsz": str(bsz), "num_updates": str(updates), "lr": "1e-05", "train_wall": "0", "wall": "1"}
    return f"2024-01-01 00:00:00 | INFO | train_inner | {json.dumps(fields)}"


SYNTHETIC_LOG = [
    "2024-01-01 00:00:00 | INFO | fairseq_cli.train | training on 8 devices (GPUs/TPUs)",
    _inner(1, 10, 256, 1000.0, 500.0),  # first record: timer started late, never timed
    _inner(1, 20, 256, 1000.0, 4000.0),  # warm-up (starts before update 20 below)
    _inner(1, 30, 256, 1000.0, 8000.0),  # 10 updates in 1.25 s
    "2024-01-01 00:00:00 | INFO | fairseq_cli.train | begin validation on \"valid\" subset",
    '2024-01-01 00:00:00 | INFO | valid | {"epoch": 1, "valid_loss": "0.4", "valid_glue": "91.5", "valid_num_updates": "34"}',
    "2024-01-01 00:00:00 | INFO | fairseq.trainer | Saving checkpoint to /x/checkpoint_best.pt",
    '2024-01-01 00:00:00 | INFO | train | {"epoch": 1, "train_loss": "0.5", "train_num_updates": "34"}',
    _inner(2, 40, 250, 1000.0, 100.0),  # spans validation + checkpoint + epoch start: excluded
    _inner(2, 50, 256, 1000.0, 10000.0),  # 10 updates in 1.0 s
    _inner(2, 60, 256, 1000.0, 5000.0),  # 10 updates in 2.0 s
    '2024-01-01 00:00:00 | INFO | valid | {"epoch": 2, "valid_loss": "0.3", "valid_glue": "90.1", "valid_num_updates": "60"}',
    '2024-01-01 00:00:00 | INFO | train | {"epoch": 2, "train_loss": "0.4", "train_num_updates": "60"}',
]


def test_fps_excludes_warmup_and_intervals_spanning_validation_or_checkpoints():
    log = training_log.parse(SYNTHETIC_LOG)
    assert log.world_size == 8
    assert [i.after_pause for i in log.intervals] == [False, False, False, True, False, False]
    result = training_log.fps(log, warmup_updates=20)
    # intervals (20,30], (40,50], (50,60]: 3 x 10 x 256 samples in 1.25 + 1.0 + 2.0 s
    assert result.intervals_used == 3 and result.first_update == 20 and result.last_update == 60
    assert result.samples == 7680
    assert result.samples_per_s == pytest.approx(7680 / 4.25, rel=1e-12)
    # default warm-up: a tenth of the logged updates (6) -> (10,20] is timed too: 2560 samples more in 2.5 s
    default = training_log.fps(log)
    assert default.samples_per_s == pytest.approx(10240 / 6.75, rel=1e-12)


def test_fps_falls_back_to_ups_and_handles_too_short_logs():
    lines = [_inner(1, 5, 32, "x", "y", ups=2.0), _inner(1, 10, 32, "x", "y", ups=4.0)]
    lines = [ln.replace('"wps": "y", ', "").replace('"wpb": "x", ', "") for ln in lines]
    assert training_log.fps(training_log.parse(lines)).samples_per_s == pytest.approx(32 * 4.0)
    assert training_log.fps(training_log.parse(lines[:1])).samples_per_s is None


def test_summary_metrics_and_final_lines():
    log = training_log.parse(SYNTHETIC_LOG)
    plan = {"mode": "full", "metric": "glue", "valid_subsets": "valid"}
    result = summary.build(plan, log, e2e_seconds=12.5, exit_code=0, log_path="train.log", command=["x"],
                           warmup_updates=20)
    assert (result["final_metric"], result["best_metric"], result["epochs"], result["updates"]) == (90.1, 91.5, 2, 60)
    assert result["device_count"] == 8
    assert summary.final_lines(result) == [f"ActualFPS: {7680 / 4.25:.3f}", "Accuracy: 91.5"]
    perf = summary.build(dict(plan, mode="performance"), log, e2e_seconds=1, exit_code=0, log_path="l",
                         command=[], warmup_updates=20)
    assert summary.final_lines(perf) == [f"ActualFPS: {7680 / 4.25:.3f}"]


def _glue_dir(tmp_path, n_train):
    data = tmp_path / "SST-2-bin"
    (data / "input0").mkdir(parents=True)
    (data / "input0" / "dict.txt").write_text("a 1\n")
    (data / "input0" / "train.bin").write_bytes(b"")
    # fairseq mmap index header: magic, version, dtype code, number of items, number of docs
    (data / "input0" / "train.idx").write_bytes(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, 4, n_train, n_train + 1))
    return data


def test_published_schedule_at_the_published_batch_size(tmp_path):
    data = _glue_dir(tmp_path, 67349)
    args, plan = command.build(command.LaunchRequest(mode="full", data=str(data), model="roberta", task="sst2",
                                                     device="cpu", output_dir=str(tmp_path)))
    assert (plan["total_num_update"], plan["warmup_updates"], plan["lr"], plan["global_batch_size"]) == \
        (20935, 1256, 1e-5, 32)
    assert plan["published_schedule"] and plan["max_epoch"] == 10 and plan["max_update"] == 20935
    assert command.flag_value(args, "--task") == "sentence_prediction_npu"
    assert command.flag_value(args, "--best-checkpoint-metric") == "glue"
    assert command.flag_value(args, "--glue-task") == "SST-2"


def test_schedule_scales_to_the_global_batch_of_8_devices(tmp_path):
    data = _glue_dir(tmp_path, 67349)
    _, plan = command.build(command.LaunchRequest(mode="full", data=str(data), model="roberta", task="SST-2",
                                                  device="npu", world_size=8, output_dir=str(tmp_path)))
    epochs = 20935 * 32 / 67349  # what the published schedule covers
    per_epoch = math.ceil(math.ceil(67349 / 32) / 8)  # 2105 batches over 8 ranks
    assert plan["global_batch_size"] == 256
    assert plan["total_num_update"] == round(epochs * per_epoch) == 2626
    assert plan["warmup_updates"] == round(2626 * 1256 / 20935) == 158  # still 6% of training
    assert plan["amp_type"] == "O2" and plan["amp_dtype"] == "fp16"  # fairseq's --fp16 recipe on accelerators
    # --update-freq among the extra args counts in the global batch too
    _, uf = command.build(command.LaunchRequest(mode="full", data=str(data), task="SST-2", device="cpu",
                                                world_size=2, output_dir=str(tmp_path),
                                                extra=("--update-freq", "4")))
    assert uf["global_batch_size"] == 256 and uf["total_num_update"] == round(epochs * math.ceil(2105 / 2 / 4))


def test_albert_recipe_regression_task_and_explicit_epochs(tmp_path):
    data = _glue_dir(tmp_path, 5749)
    args, plan = command.build(command.LaunchRequest(mode="full", data=str(data), model="albert", task="sts-b",
                                                     device="cpu", max_epoch=3, output_dir=str(tmp_path)))
    assert plan["arch"] == "albert_base" and plan["num_classes"] == 1 and plan["official_metric"] == "pearson"
    assert "--regression-target" in args and "--separator-token" not in args
    assert plan["total_num_update"] == 3 * math.ceil(5749 / 16) and plan["lr"] == 2e-5
    perf, pplan = command.build(command.LaunchRequest(mode="performance", data=str(data), model="albert",
                                                      task="MNLI", device="cpu", output_dir=str(tmp_path)))
    assert "--disable-validation" in perf and "--no-save" in perf and pplan["max_update"] == 1000


def test_bad_requests_name_the_flag(tmp_path):
    data = _glue_dir(tmp_path, 10)
    with pytest.raises(ValueError, match=r"^--task=WNLX: unknown GLUE task 'WNLX'; expected one of: CoLA, SST-2, "
                                         r"MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI, AX$"):
        command.build(command.LaunchRequest(mode="full", data=str(data), task="WNLX", output_dir=str(tmp_path)))
    # a GLUE task without a published fine-tuning recipe is known, and said so
    with pytest.raises(ValueError, match=r"^--task=wnli: no published fine-tuning recipe for WNLI; recipes exist for "
                                         r"MNLI, QNLI, QQP, RTE, SST-2, MRPC, CoLA, STS-B$"):
        command.build(command.LaunchRequest(mode="full", data=str(data), task="wnli", output_dir=str(tmp_path)))
    with pytest.raises(ValueError, match=r"--data_path=.*nowhere: no such directory"):
        command.build(command.LaunchRequest(mode="full", data=str(tmp_path / "nowhere"), output_dir=str(tmp_path)))
    assert command.dataset_size(str(data / "input0" / "train.idx")) == 10


def _script(name, *args):
    return subprocess.run(["bash", str(REPO / "test" / name), *args], capture_output=True, text=True, timeout=60)


def test_scripts_stop_with_a_clear_message_when_devices_are_missing(tmp_path):
    cores = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout)
    if cores < 8:
        run = _script("train_full_8p.sh", f"--data_path={tmp_path}", "--device=cpu")
        assert run.returncode == 2
        assert run.stderr.strip() == (
            f"train_full_8p.sh: error: 8 processes asked, one per device, but only {cores} cpu core(s) visible on "
            f"this node; pass --nproc=N (N <= {cores}) to use fewer")
    run = _script("train_performance_1p.sh", "--device=cpu")
    assert run.returncode == 2 and "--data_path=DIR is required" in run.stderr
    run = _script("train_performance_1p.sh", f"--data_path={tmp_path / 'none'}", "--device=cpu", "--nproc=1")
    assert run.returncode == 2 and f"--data_path={tmp_path / 'none'}: no such directory" in run.stderr
