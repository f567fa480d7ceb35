"""Multi-seed fine-tuning: --seeds=LIST on the full launch scripts, and the summary over the seeds' runs."""

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_npu.launch import seeds

from glue_tiny_data import make_glue_dir

REPO = Path(__file__).resolve().parents[1]


def _seed_summary(out: Path, seed: int, **fields):
    (out / f"seed{seed}").mkdir(parents=True)
    run = dict(mode="full", model="roberta", task="RTE", metric_name="accuracy", status="ok", exit_code=0, fps=100.0,
               log=f"seed{seed}/train.log", lr=2e-5)
    run.update(fields)
    (out / f"seed{seed}" / "summary.json").write_text(json.dumps(run))


def test_summary_gives_each_seed_and_the_median_mean_std_and_names_the_failed(tmp_path):
    _seed_summary(tmp_path, 1, best_metric=80.0, fps=90.0)
    _seed_summary(tmp_path, 2, best_metric=90.0, fps=110.0)
    _seed_summary(tmp_path, 3, best_metric=None, status="failed", exit_code=1)  # crashed after a few updates
    # seed 4 was killed before it wrote anything
    _seed_summary(tmp_path, 5, best_metric=85.0, fps=100.0)
    s = seeds.build(str(tmp_path), [1, 2, 3, 4, 5], [0, 0, 1, 137, 0])
    assert [(r["seed"], r["status"], r.get("best_metric")) for r in s["seeds"]] == [
        (1, "ok", 80.0), (2, "ok", 90.0), (3, "failed", None), (4, "failed", None), (5, "ok", 85.0)]
    assert s["seeds"][2]["reason"] == "training failed (exit code 1)"
    assert s["seeds"][3]["reason"] == "no summary.json (exit code 137)"
    assert (s["seeds_ok"], s["seeds_failed"], s["status"]) == (3, [3, 4], "failed")
    stats = s["metric_stats"]
    assert (stats["median"], stats["mean"], stats["min"], stats["max"]) == (85.0, 85.0, 80.0, 90.0)
    assert stats["std"] == pytest.approx(statistics.stdev([80.0, 90.0, 85.0])) == pytest.approx(5.0)
    assert s["best_metric"] == 85.0 and s["fps"] == 100.0  # single-seed readers get the medians
    assert (s["model"], s["task"], s["lr"]) == ("roberta", "RTE", 2e-5) and "log" not in s  # shared plan fields
    assert seeds.final_lines(s)[-2:] == [
        "ActualFPS: 100",
        "Accuracy: 85 (median of 3/5 seeds 1,2,3,4,5; std 5, mean 85, min 80, max 90; FAILED seeds: 3,4)",
    ]
    assert seeds.final_lines(s)[:5] == ["seed 1: 80", "seed 2: 90", "seed 3: FAILED: training failed (exit code 1)",
                                        "seed 4: FAILED: no summary.json (exit code 137)", "seed 5: 85"]


def test_a_run_without_a_dev_metric_is_failed_not_skipped(tmp_path):
    _seed_summary(tmp_path, 7, best_metric=None)
    s = seeds.build(str(tmp_path), [7], [0])
    assert s["seeds"][0]["reason"] == "no dev metric in the log" and s["status"] == "failed"
    assert seeds.final_lines(s)[-1] == ("Accuracy: NA (median of 0/1 seeds 7; std NA, mean NA, min NA, max NA; "
                                        "FAILED seeds: 7)")


@pytest.mark.parametrize("text,message", [
    ("1,,2", "--seeds=1,,2: expected whole numbers separated by commas, e.g. --seeds=1,2,3,4,5"),
    ("1,2,1", "--seeds=1,2,1: seed 1 given twice"),
    ("", "--seeds=: expected whole numbers separated by commas, e.g. --seeds=1,2,3,4,5"),
])
def test_bad_seed_lists_name_the_flag(text, message):
    with pytest.raises(ValueError) as err:
        seeds.parse_seeds(text)
    assert str(err.value) == message


def test_full_1p_runs_each_seed_and_reports_the_crashed_one(tmp_path):
    """Two seeds of a tiny RoBERTa; the python that runs seed 7 crashes it, as a killed run would."""
    data = make_glue_dir(tmp_path / "SST-2-bin", {"train": 96, "valid": 32})
    crashing_python = tmp_path / "python"
    crashing_python.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ " $* " == *" fairseq_cli.train "* && " $* " == *" --seed 7 "* ]]; then\n'
        '    echo "simulated crash" >&2; exit 3\nfi\n'
        f'exec {sys.executable} "$@"\n')
    crashing_python.chmod(0o755)
    out = tmp_path / "out"
    run = subprocess.run(
        ["bash", str(REPO / "test" / "train_full_1p.sh"), f"--data_path={data}", "--model=roberta", "--device=cpu",
         "--task=SST-2", "--batch-size=16", "--lr=1e-3", "--max-epoch=1", f"--output_dir={out}", "--seeds=4,7",
         "--encoder-layers", "1", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
         "--encoder-attention-heads", "2", "--max-positions", "64", "--num-workers", "0", "--log-interval", "2"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
        env=dict(os.environ, PYTHON=str(crashing_python), OMP_NUM_THREADS="1"))
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    assert "train_full_1p.sh: seed 7 failed (exit code 3); going on with the other seeds" in run.stderr
    s = json.loads((out / "summary.json").read_text())
    assert [(r["seed"], r["status"]) for r in s["seeds"]] == [(4, "ok"), (7, "failed")]
    assert s["seeds"][1]["reason"] == "training failed (exit code 3)"
    # each seed in its own folder, trained with its own --seed (fairseq reads the last one given)
    own = json.loads((out / "seed4" / "summary.json").read_text())
    given = [own["command"][i + 1] for i, a in enumerate(own["command"]) if a == "--seed"]
    assert given[-1] == "4" and own["status"] == "ok"
    assert (out / "seed4" / "checkpoints" / "checkpoint_best.pt").is_file()
    assert json.loads((out / "seed7" / "summary.json").read_text())["exit_code"] == 3
    assert s["best_metric"] == own["best_metric"] is not None
    lines = run.stdout.strip().splitlines()
    assert lines[-3:] == seeds.final_lines(s)[-3:]
    assert lines[-1] == (f"Accuracy: {seeds._fmt(own['best_metric'])} (median of 1/2 seeds 4,7; std NA, "
                         f"mean {seeds._fmt(own['best_metric'])}, min {seeds._fmt(own['best_metric'])}, "
                         f"max {seeds._fmt(own['best_metric'])}; FAILED seeds: 7)")
