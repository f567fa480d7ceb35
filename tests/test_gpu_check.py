"""benchmarks/gpu_check.sh --dry-run: the GPU check's every step on this CPU at tiny sizes (the CUDA tests skip),
so that the script works the first time it meets a GPU. Needs the real SST-2 (../shared/data)."""

import json
import subprocess
from pathlib import Path

from benchmarks import compare

REPO = Path(__file__).resolve().parents[1]


def test_dry_run_writes_the_report_with_every_row(shared_data, tmp_path):
    out = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", "--models", "roberta", str(tmp_path)],
                         cwd=REPO, capture_output=True, text=True, timeout=300,
                         env={"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1",
                              "FAIRSEQ_NPU_SHARED_DATA": str(shared_data)})
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    assert report["passed"] and report["dry_run"] and report["tests_exit_code"] == 0
    cuda_tests = report["tests"]["tests"]
    assert "tests.test_cuda::test_fp16_run_resumes_from_its_last_checkpoint" in cuda_tests
    assert all(outcome.startswith("skipped") for outcome in cuda_tests.values())  # no GPU here
    rows = report["throughput"]["models"]["roberta"]["rows"]
    assert list(rows) == [compare.STOCK, compare.LAUNCH, compare.HF]
    assert all(row["median"] > 0 and row["command"] for row in rows.values())
    hf = rows[compare.HF]["runs"][0]
    assert hf["pad_ratio"] < 0.3 and hf["optim"] == "adamw_torch_fused"  # the Trainer's best: grouping, fused AdamW
    assert hf["precision"] in ("bf16", "fp32")  # this CPU's faster one
    assert set(report["throughput"]["models"]["roberta"]["ratios"]) == {f"{a} / {b}" for a, b in compare.RATIOS}
    md = (tmp_path / "gpu_report.md").read_text()
    assert "dry run" in md and "bash test/train_performance_1p.sh" in md and "python -m benchmarks.hf_trainer" in md
