"""The GPU check's report (benchmarks/gpu_check.sh, last step): OUT_DIR/gpu_report.json and gpu_report.md from the
CUDA tests' JUnit file, the throughput table (``compare.json``) and the equal-budget accuracy row
(``accuracy.json``), with the GPU targets checked for roberta_base and albert_base: the launch script's defaults at
>= 4,000 samples/s, >= 5x stock fairseq-train and >= 3x the fastest HF Trainer row; captured and eager dev
accuracy within the spread of the seeds.

``doc_section`` is docs/benchmarks.md's "GPU check" section (benchmarks/report.py renders it): what one call
measures, each step's time budget (read from gpu_check.sh, where they are set), and the figures once measured."""

import argparse
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, Optional

from benchmarks import common, compare

TARGET_SAMPLES_PER_S = 4000.0
TARGET_VS_STOCK = 5.0
TARGET_VS_HF = 3.0
MODELS = ("roberta", "albert")
GPU_CHECK = common.REPO / "benchmarks" / "gpu_check.sh"
_BUDGET = re.compile(r"^BUDGET_(\w+)_S=(\d+)\s*#\s*(.*)$", re.MULTILINE)


def budgets(script: Path = GPU_CHECK) -> Dict[str, dict]:
    """The steps' time budgets as gpu_check.sh sets them: {step: {seconds, what}}."""
    return {name.lower(): dict(seconds=int(s), what=what.strip()) for name, s, what in _BUDGET.findall(
        script.read_text())}


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


def targets(table: dict) -> Dict[str, dict]:
    """Per model: samples/s of the launch script's defaults, its ratios to stock and to the Trainer's fastest row,
    and whether each goal is met (None where a row is missing)."""
    out = {}
    for model in MODELS:
        m = table.get("models", {}).get(model)
        if m is None:
            out[model] = dict(measured=False)
            continue
        rows = m["rows"]
        ours = rows.get(compare.LAUNCH, {}).get("median")
        vs_stock = m["ratios"].get(f"{compare.LAUNCH} / {compare.STOCK}")
        vs_hf = m["ratios"].get(f"{compare.LAUNCH} / {compare.FASTEST_HF}")
        graphs = next((r.get("graph_report") for r in rows.get(compare.LAUNCH, {}).get("runs", [])), None)
        out[model] = dict(
            measured=True, samples_per_s=ours, vs_stock=vs_stock, vs_fastest_hf=vs_hf,
            fastest_hf_row=m.get("fastest_hf"), graph_report=graphs,
            device_busy=device_busy(graphs, ours, table.get("batch_size")),
            goals={f">= {TARGET_SAMPLES_PER_S:,.0f} samples/s": None if ours is None else ours >= TARGET_SAMPLES_PER_S,
                   f">= {TARGET_VS_STOCK:.0f}x stock fairseq-train":
                       None if vs_stock is None else vs_stock >= TARGET_VS_STOCK,
                   f">= {TARGET_VS_HF:.0f}x the fastest HF Trainer row":
                       None if vs_hf is None else vs_hf >= TARGET_VS_HF})
    return out


def device_busy(graphs: Optional[dict], samples_per_s: Optional[float], batch_size: Optional[int]) -> Optional[dict]:
    """The device time of a replayed update against the wall time of an update: near 1, the run is device-bound
    (shorter pad buckets would help); well below, the device waits for the host (data loading, Python)."""
    replay_ms = (graphs or {}).get("replay_ms_mean")
    if not replay_ms or not samples_per_s or not batch_size:
        return None
    wall_ms = 1000.0 * batch_size / samples_per_s
    return dict(replay_ms=replay_ms, wall_ms_per_update=round(wall_ms, 3), share=round(replay_ms / wall_ms, 3),
                replay_ms_by_shape=graphs.get("replay_ms"))


def reductions(table: dict, accuracy: dict) -> list:
    """What the check left out to fit its budget, in words."""
    said = []
    compiled = [m for m, v in table.get("models", {}).items() if compare.HF_COMPILE in v["rows"]]
    if table.get("models") and len(compiled) < len(table["models"]):
        said.append(f"the HF Trainer + torch_compile row ran for {', '.join(compiled) or 'no model'} only")
    if table.get("skipped"):
        said.append("not run, out of the throughput budget: " + "; ".join(
            f"{s['model']} {s['row']}" for s in table["skipped"]))
    if accuracy.get("seeds_skipped"):
        ran = [s for s in accuracy["seeds_planned"] if s not in accuracy["seeds_skipped"]]
        said.append(f"accuracy: seed(s) {', '.join(map(str, ran))} per arm (of {accuracy['seeds_planned']}): "
                    "the others did not fit the budget")
    return said


def _fmt(value, digits=2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}" if isinstance(value, float) else str(value)


def accuracy_markdown(accuracy: dict) -> list:
    if not accuracy.get("runs"):
        return ["not measured (see accuracy.log in logs.tar.gz)"]
    j = accuracy.get("judgement", {})
    lines = [f"{accuracy['model']} {accuracy['size']}, {accuracy['task']}, {accuracy['budget']} from scratch, lr "
             f"{accuracy['lr']}, `test/train_full_1p.sh` defaults; dev accuracy (%) per seed"
             + (" (the runs shared the GPU, all at once: their samples/s are not throughput figures):"
                if accuracy.get("concurrent") else ":"), "",
             "| seed | captured (`--update-mode graph`) | eager (`--update-mode device`) |", "|---|---|---|"]
    seeds = sorted({int(s) for runs in accuracy["runs"].values() for s in runs})
    for seed in seeds:
        cells = []
        for arm in ("captured", "eager"):
            run = accuracy["runs"][arm].get(str(seed), {})
            if "dev_accuracy" in run:
                cells.append(f"{run['dev_accuracy']} ({_fmt(run['samples_per_s'], 1)} samples/s)")
            elif "finished" in run:  # the other arm ran out of budget: outside the judgement
                cells.append(f"{run['finished']['dev_accuracy']}, left out: {run['left_out']}")
            else:
                cells.append("failed: " + run["error"] if "error" in run else
                             "stopped: " + run["stopped"] if "stopped" in run else "not run")
        lines.append(f"| {seed} | {cells[0]} | {cells[1]} |")
    arms = j.get("arms", {})
    lines += ["", f"Mean: captured {_fmt(arms.get('captured', {}).get('mean'))}, eager "
                  f"{_fmt(arms.get('eager', {}).get('mean'))}; gap {_fmt(j.get('gap_captured_minus_eager'))}; "
                  f"within the seeds' spread: {j.get('within_seed_spread')} ({j.get('note')})."]
    return lines


def markdown(report: dict) -> str:
    title = ("GPU check (dry run on CPU, tiny sizes: no figure here means anything)" if report["dry_run"]
             else "GPU check")
    t = report["tests"]
    md = [f"# {title}", "", f"Every step ran completely: **{report['passed']}**, in {report['seconds']} s "
          f"(budget {report['budgets'].get('total', {}).get('seconds', '-')} s). CUDA tests (`pytest -m cuda`, "
          f"exit code {report['tests_exit_code']}): {t['counts'] or 'no results'}.", ""]
    md += ["| step | budget (s) | took (s) | exit code |", "|---|---|---|---|"]
    for step, b in report["budgets"].items():
        if step != "total":
            md.append(f"| {b['what']} | {b['seconds']} | {report['step_seconds'].get(step, '-')} | "
                      f"{report['exit_codes'].get(step, '-')} |")
    if report["reductions"]:
        md += ["", "Left out to fit the budget: " + "; ".join(report["reductions"]) + "."]
    md += ["", "## CUDA tests", ""] + [f"- `{name}`: {outcome}" for name, outcome in t["tests"].items()]
    md += ["", "## Targets (SST-2, batch 32, `train_performance_1p.sh` defaults)", "",
           "| model | samples/s | vs stock | vs fastest HF row | CUDA graphs | device ms per replay / wall ms per "
           "update | goals met |",
           "|---|---|---|---|---|---|---|"]
    for model, tg in report["targets"].items():
        if not tg["measured"]:
            md.append(f"| {model} | not measured | | | | | |")
            continue
        g = tg["graph_report"]
        graphs = f"{g['graphs']}, {g['replay_share']:.0%} replayed, fallbacks {g['fallbacks']}" if g else "-"
        met = ", ".join(f"{k}: {v}" for k, v in tg["goals"].items())
        busy = tg.get("device_busy")
        busy_cell = (f"{busy['replay_ms']:.2f} / {busy['wall_ms_per_update']:.2f} ({busy['share']:.0%} busy; by "
                     f"shape {busy['replay_ms_by_shape']})" if busy else "-")
        md.append(f"| {model} | {_fmt(tg['samples_per_s'], 1)} | {_fmt(tg['vs_stock'])}x | "
                  f"{_fmt(tg['vs_fastest_hf'])}x ({tg['fastest_hf_row']}) | {graphs} | {busy_cell} | {met} |")
    acc = report["accuracy"]
    j = acc.get("judgement", {})
    md += ["", f"Dev accuracy at equal budget ({acc.get('model', 'roberta')}, {acc.get('budget', 'one epoch')} of "
               f"SST-2), captured - eager within the seeds' spread: **{j.get('within_seed_spread')}** "
               f"({j.get('note', 'not measured')})."]
    md += ["", "## Throughput (python -m benchmarks.compare)", ""]
    md += [compare.markdown(report["throughput"]) if report["throughput"].get("models") else
           f"not measured: benchmarks.compare exited {report['exit_codes'].get('throughput')} (see compare.log)"]
    md += ["", "## Dev accuracy at equal budget: captured vs eager update", ""] + accuracy_markdown(report["accuracy"])
    return "\n".join(md) + "\n"


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def doc_section(out_dir: Path) -> list:
    """docs/benchmarks.md's GPU check section: what one call measures, the budget per step, the figures."""
    steps = budgets()
    text = (
        f"Command, on the GPU machine: `bash benchmarks/gpu_check.sh {out_dir.relative_to(common.REPO)}` (after "
        "`bash benchmarks/gpu_wheels.sh` here built `.gpu_payload/`: the wheels the machine lacks, SST-2 and its "
        f"vocabularies, binarized SST-2). One call, at most {steps['total']['seconds']} s: installs the payload "
        "into `work_dirs/gpu_site` (outside the output folder), runs the CUDA tests (captured vs eager update: the "
        "same weights after 20 updates for RoBERTa and ALBERT in fp32 and bf16, an fp16 overflow skipped inside a "
        "graph, resume from a captured run, the fallback outside the pad buckets), the throughput table (stock "
        "fairseq-train, `train_performance_1p.sh` defaults captured and eager, HF Trainer best and best + "
        "torch_compile; roberta_base and albert_base, batch 32) and one SST-2 epoch from scratch with the update "
        "captured and eager (same seeds, dev accuracy side by side). The output folder holds "
        "`gpu_report.{json,md}`, `compare.json`, `accuracy.json` and `logs.tar.gz`. Targets for both models: "
        f">= {TARGET_SAMPLES_PER_S:,.0f} samples/s, >= {TARGET_VS_STOCK:.0f}x stock, >= {TARGET_VS_HF:.0f}x the "
        "fastest HF Trainer row, dev accuracy within the seeds' spread. To fit the call, the torch_compile row runs "
        "for roberta only (compiling alone takes about 75 s), and the accuracy row runs alongside the CUDA tests, "
        "every "
        "(seed, arm) run at once on the GPU: neither step times anything, and the eager arm is host-bound, so the GPU "
        "has room for all of them (one after the other they would not fit: an eager epoch of SST-2's 67,349 "
        "sentences at the 627 samples/s the launch defaults ran eagerly on the H200 takes about 110 s, and a pair "
        "with the captured arm and two start-ups about 150 s). The throughput "
        "table then runs with the GPU to itself. A seed whose runs are not done within the row's budget is left out "
        "(one seed gives no spread to judge by), the table stops starting runs when its budget is spent, and the "
        "report lists what was left out. `bash benchmarks/gpu_check.sh --dry-run DIR` runs every step on a CPU at "
        "tiny sizes.")
    lines = ["## P-GPU. The GPU check: one call on one GPU (roberta_base, albert_base)", "", text, "",
             "| step | budget (s) |", "|---|---|"]
    lines += [f"| {b['what']} | {b['seconds']} |" for b in steps.values()]
    report = _load(out_dir / "gpu_report.json")
    if not report or report.get("dry_run"):
        return lines + ["", "_Figures: not measured yet; they await a GPU._", ""]
    return lines + ["", markdown(report).split("\n", 2)[2], ""]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out-dir", type=Path, required=True, help="holds compare.json and accuracy.json")
    p.add_argument("--work-dir", type=Path, required=True, help="holds pytest_cuda.xml")
    p.add_argument("--exit-codes", default="", help="step=code,... (tests, throughput, accuracy)")
    p.add_argument("--step-seconds", default="", help="step=seconds,...")
    p.add_argument("--seconds", type=int, required=True, help="wall time of the whole check so far")
    p.add_argument("--dry-run", action="store_true")
    a = p.parse_args(argv)

    def pairs(text: str) -> Dict[str, int]:
        return {k: int(v) for k, v in (item.split("=") for item in text.split(",") if item)}

    codes = pairs(a.exit_codes)
    table = _load(a.out_dir / "compare.json")
    accuracy = _load(a.out_dir / "accuracy.json")
    report = dict(dry_run=a.dry_run, seconds=a.seconds, budgets=budgets(), step_seconds=pairs(a.step_seconds),
                  exit_codes=codes, passed=bool(codes) and all(c == 0 for c in codes.values()),
                  tests_exit_code=codes.get("tests"), tests=test_results(a.work_dir / "pytest_cuda.xml"),
                  throughput=table, targets=targets(table), accuracy=accuracy,
                  reductions=reductions(table, accuracy))
    common.write_atomic(a.out_dir / "gpu_report.json", json.dumps(report, indent=1) + "\n")
    common.write_atomic(a.out_dir / "gpu_report.md", markdown(report))
    print(f"gpu_report: {a.out_dir / 'gpu_report.md'} (every step ran completely: {report['passed']}, "
          f"{a.seconds} s)")
    for model, tg in report["targets"].items():
        if tg["measured"]:
            print(f"gpu_report: {model}: {_fmt(tg['samples_per_s'], 1)} samples/s, {_fmt(tg['vs_stock'])}x stock, "
                  f"{_fmt(tg['vs_fastest_hf'])}x {tg['fastest_hf_row']}; goals {tg['goals']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
