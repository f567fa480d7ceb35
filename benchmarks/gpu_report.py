"""The GPU check's report (benchmarks/gpu_check.sh, last step): OUT_DIR/gpu_report.json and gpu_report.md from the
CUDA tests' JUnit file and the throughput table (``compare.json``), with the issue's GPU targets checked:
roberta_base through the launch script at >= 4,000 samples/s and >= 2x both stock fairseq and HF Trainer best."""

import argparse
import json
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from benchmarks import common, compare

TARGET_SAMPLES_PER_S = 4000.0
TARGET_RATIO = 2.0


def test_results(xml_path: Path) -> dict:
    """Per-test outcome (passed / failed / skipped) from pytest's JUnit XML; empty when it is missing."""
    if not xml_path.exists():
        return dict(tests={}, counts={})
    tests = {}
    for case in ET.parse(xml_path).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = f"skipped: {child.get('message', '')}"
        tests[name] = outcome
    counts = {}
    for outcome in tests.values():
        key = outcome.split(":")[0]
        counts[key] = counts.get(key, 0) + 1
    return dict(tests=tests, counts=counts)


def targets(table: dict) -> dict:
    """The GPU goal for roberta: samples/s of the launch script's defaults, and its ratios to the two peers."""
    rows = table.get("models", {}).get("roberta", {}).get("rows", {})
    ours = rows.get(compare.LAUNCH, {}).get("median")
    if ours is None:
        return {}
    out = {"roberta launch samples/s": ours, f"goal >= {TARGET_SAMPLES_PER_S:.0f} samples/s": ours >= TARGET_SAMPLES_PER_S}
    for peer in (compare.STOCK, compare.HF):
        theirs = rows.get(peer, {}).get("median")
        if theirs:
            out[f"vs {peer}"] = ours / theirs
            out[f"goal >= {TARGET_RATIO:.0f}x {peer}"] = ours / theirs >= TARGET_RATIO
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, required=True)
    p.add_argument("--tests-rc", type=int, required=True)
    p.add_argument("--compare-rc", type=int, required=True)
    p.add_argument("--seconds", type=int, required=True, help="wall time of the whole check so far")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)
    table_path = a.out_dir / "compare.json"
    table = json.loads(table_path.read_text()) if a.compare_rc == 0 and table_path.exists() else {}
    report = dict(dry_run=a.dry_run, seconds=a.seconds, passed=a.tests_rc == 0 and a.compare_rc == 0,
                  tests_exit_code=a.tests_rc, compare_exit_code=a.compare_rc,
                  tests=test_results(a.out_dir / "pytest_cuda.xml"), throughput=table, targets=targets(table))
    title = "GPU check (dry run on CPU, tiny sizes: no figure here means anything)" if a.dry_run else "GPU check"
    md = [f"# {title}", "", f"Passed: **{report['passed']}** in {a.seconds} s. CUDA tests (`pytest -m cuda`, exit "
          f"code {a.tests_rc}): {report['tests']['counts'] or 'no results'}.", ""]
    md += [f"- `{name}`: {outcome}" for name, outcome in report["tests"]["tests"].items()]
    md += ["", "## Throughput (python -m benchmarks.compare)", ""]
    md += [compare.markdown(table) if table else f"not measured: benchmarks.compare exited {a.compare_rc} "
           f"(see compare.log)", ""]
    if report["targets"]:
        md += ["## Targets (roberta_base, batch 32)", ""]
        md += [f"- {k}: {f'{v:.2f}' if isinstance(v, float) else v}" for k, v in report["targets"].items()]
    common.write_atomic(a.out_dir / "gpu_report.json", json.dumps(report, indent=1) + "\n")
    common.write_atomic(a.out_dir / "gpu_report.md", "\n".join(md) + "\n")
    print(f"gpu_report: {a.out_dir / 'gpu_report.md'} (passed: {report['passed']}, {a.seconds} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
