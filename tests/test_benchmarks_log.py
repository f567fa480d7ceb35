"""The benchmarks' reading of fairseq json logs (fairseq_npu/launch/training_log.py, the one log reader): records,
timestamps and samples/s after warm-up."""

from pathlib import Path

import pytest

from benchmarks import bench_throughput, common
from fairseq_npu.launch import training_log

LOG = """\
$ fairseq-train ...
2026-11-22 03:29:23 | INFO | train_inner | {"epoch": 1, "loss": "1.101", "ups": "0.5", "wpb": "400", "bsz": "32", "num_updates": "10"}
2026-11-22 03:29:35 | INFO | train_inner | {"epoch": 1, "loss": "0.988", "ups": "2", "wpb": "300", "bsz": "32", "num_updates": "20", "pad_ratio": "0.1"}
not a record | train_inner | {broken
2026-11-22 03:29:45 | INFO | train_inner | {"epoch": 1, "loss": "0.9", "ups": "4", "wpb": "100", "bsz": "16", "num_updates": "30", "pad_ratio": "0.3"}
2026-11-22 03:29:46 | INFO | valid | {"epoch": 1, "valid_loss": "0.7", "valid_accuracy": "81.5", "valid_num_updates": "30"}
2026-11-22 03:29:47 | INFO | train | {"epoch": 1, "train_loss": "1.0"}
"""


def test_records_by_kind_with_numbers_and_time():
    rec = training_log.parse(LOG).records
    assert [len(rec[k]) for k in ("train_inner", "valid", "train")] == [3, 1, 1]
    assert rec["valid"][0]["valid_accuracy"] == 81.5
    assert rec["train_inner"][2]["_time"] - rec["train_inner"][0]["_time"] == 22.0


def test_throughput_is_total_samples_over_total_time_after_warmup():
    inner = training_log.parse(LOG)
    tp = training_log.fps(inner, warmup_updates=10, strict=True)
    # intervals 10-20 (5 s, 320 samples) and 20-30 (2.5 s, 160 samples): 480 / 7.5, not the mean of 64 and 64
    assert tp.samples_per_s == pytest.approx(64.0)
    assert tp.measured_updates == 20 and tp.measured_seconds == pytest.approx(7.5)
    assert tp.real_tokens_per_batch == pytest.approx(200.0)
    assert tp.pad_ratio == pytest.approx(0.2)
    assert training_log.fps(inner, 0, strict=True).samples_per_s == pytest.approx((320 + 320 + 160) / 27.5)


def test_throughput_without_measured_interval_says_so():
    inner = training_log.parse(LOG)
    with pytest.raises(ValueError, match="no train_inner interval after 30 warm-up updates"):
        training_log.fps(inner, warmup_updates=30, strict=True)



def test_samples_per_cpu_second_from_cpu_ms():
    timed = LOG.replace('"ups"', '"cpu_ms": "500", "ups"', 1).replace('"ups": "2"', '"ups": "2", "cpu_ms": "250"')
    timed = timed.replace('"ups": "4"', '"ups": "4", "cpu_ms": "100"')
    tp = training_log.fps(training_log.parse(timed), warmup_updates=10, strict=True)
    # 320 + 160 samples over 10 x 0.25 + 10 x 0.1 CPU-seconds
    assert tp.samples_per_cpu_s == pytest.approx(480 / 3.5)
    # without cpu_ms on every record there is no CPU-time figure
    assert training_log.fps(training_log.parse(LOG), 10, strict=True).samples_per_cpu_s is None


@pytest.mark.parametrize("model", ["roberta", "albert"])
def test_gpu_throughput_rows_are_valid_fairseq_command_lines(model):
    """The GPU column cannot run here; its command lines must at least be what fairseq-train accepts: base size,
    no --cpu, stock with the fp16 recipe and adam, the plugin rows with grouping + fused_adamw."""
    from fairseq import options

    import fairseq_npu

    rows = dict(bench_throughput.fairseq_rows(model, Path("/nonexistent/SST-2-bin"), 32, 600, "cuda",
                                              common.BASE_SIZES, 50))
    parsed = {}
    for name, cmd in rows.items():
        args = [a if a != "fairseq_npu" else str(Path(fairseq_npu.__file__).parent) for a in common.fairseq_args(cmd)]
        parsed[name] = options.parse_args_and_arch(options.get_training_parser(), args)
    for name, a in parsed.items():
        assert (a.cpu, a.encoder_layers, a.encoder_embed_dim, a.batch_size, a.max_update) == (False, 12, 768, 32, 600)
    stock = parsed["stock"]
    assert (stock.task, stock.optimizer, stock.fp16, stock.fp16_init_scale) == ("sentence_prediction", "adam", True, 4)
    best = parsed["plugin best: grouping + fused_adamw + fp16"]
    assert (best.task, best.optimizer, best.group_by_length, best.fp16) == (
        "sentence_prediction_npu", "fused_adamw", True, True)
    bf16 = parsed["plugin: grouping + fused_adamw + bf16 autocast"]
    assert (bf16.amp, bf16.amp_dtype, bf16.fp16) == (True, "bfloat16", False)
    compiled = rows["plugin best + torch.compile of the model"]
    assert compiled[:2] == ["env", "BENCH_COMPILE_MODEL=1"]
    assert vars(parsed["plugin best + torch.compile of the model"]) == vars(best)  # the same run, compiled
