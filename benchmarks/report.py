"""Renders docs/benchmarks.md from the saved results (benchmarks/results/*.json) and the prose in
benchmarks/report_notes.md (findings and conclusions that the numbers alone do not say)."""

import functools
import json
import statistics
from pathlib import Path

from benchmarks import common, gpu_report

DOC = common.REPO / "docs" / "benchmarks.md"
NOTES = common.REPO / "benchmarks" / "report_notes.md"


def _load(name):
    path = common.RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _fmt(x, digits=1):
    return "-" if x is None else f"{x:.{digits}f}"


def _machine(m):
    return (f"{m['cpu']}, {m['cores']} cores visible (torch threads {m['torch_threads']}), {m['mem_gb']} GB RAM; "
            f"GPU: {m['gpu']}; Python {m['python']}, torch {m['torch']}, fairseq {m['fairseq']}, "
            f"transformers {m['transformers']}; commit {m['commit']}")


def _loads(runs):
    values = [r["load_before"] for r in runs] + [r["load_after"] for r in runs]
    return f"{min(values):.1f}-{max(values):.1f}"


def padding_section(res) -> list:
    out = ["## 0. Padding on SST-2 train (exact, machine-independent)", "",
           f"One epoch of batches of {res['batch_size']} sentences (`python -m benchmarks.padding_stats`):", "",
           "| model | sentences | mean / max length | real tokens, random batches | real tokens, grouped | "
           "padded positions random / grouped | attention scores random / grouped |", "|---|---|---|---|---|---|---|"]
    for model, s in res["models"].items():
        out.append(f"| {model} | {s['sentences']} | {s['mean_length']} / {s['max_length']} | "
                   f"{100 * s['real_fraction_random']:.1f}% | {100 * s['real_fraction_grouped']:.1f}% | "
                   f"{s['positions_ratio']:.2f}x | {s['attention_ratio']:.2f}x |")
    return out + [""]


GPU_COMMAND = ("python -m benchmarks.bench_throughput --device cuda --models roberta,albert --warmup 100 "
               "--updates 500 --log-interval 50 --repeats 2")


def throughput_section(res, title=None, gpu_note=True) -> list:
    device = res.get("device", "cpu")
    out = [title or (f"## 1. Training throughput, {device.upper()}, SST-2 train"
                     + (" (GPU column)" if device != "cpu" else "")), ""]
    out.append(f"Machine: {_machine(res['machine'])}.")
    out.append("")
    out.append(f"Threads per run: {res.get('threads', 'default')}. Batch {res['batch_size']} sentences, samples/s over {res['updates']} updates after {res['warmup']} "
               "warm-up updates; each row ran once per repeat, rows in reverse order on alternate repeats. "
               "'load' is the 1-minute load average before/after the runs (the machine runs other jobs: "
               "with 2 cores, anything above ~2 means the figures were taken under load).")
    for model, block in res["models"].items():
        s = res["sizes"][model]
        out += ["", f"### {model}: {s['layers']} layers x {s['dim']} hidden, ffn {s['ffn']}, {s['heads']} heads"
                + (f", embedding {s['embedding_dim']}" if "embedding_dim" in s else ""), ""]
        out.append("| row | samples per CPU-second | vs stock | wall samples/s | wall vs stock | "
                   "real tokens/batch | pad ratio | load |")
        out.append("|---|---|---|---|---|---|---|---|")

        def med(runs, key):
            values = [r[key] for r in runs if r.get(key)]
            return statistics.median(values) if values else None

        stock_runs = block["rows"][0]["runs"]
        stock_cpu, stock_wall = med(stock_runs, "samples_per_cpu_s"), med(stock_runs, "samples_per_s")
        for row in block["rows"]:
            runs = [r for r in row["runs"] if r.get("samples_per_s")]
            if not runs:
                out.append(f"| {row['name']} | failed: {row['runs'][0].get('error', '?')} | | | | | | |")
                continue
            cpu, wall = med(runs, "samples_per_cpu_s"), med(runs, "samples_per_s")
            pad = [r["pad_ratio"] for r in runs if r.get("pad_ratio") is not None]
            out.append(f"| {row['name']} | {_fmt(cpu)} | {_fmt(cpu / stock_cpu if cpu and stock_cpu else None, 2)}x | "
                       f"{_fmt(wall)} | {wall / stock_wall:.2f}x | {_fmt(runs[0]['real_tokens_per_batch'], 0)} | "
                       f"{_fmt(pad[0], 3) if pad else '-'} | {_loads(runs)} |")
        out += ["", "<details><summary>commands</summary>", ""]
        for row in block["rows"]:
            out += [f"- {row['name']}:", "  ```", f"  {row['command']}", "  ```"]
        out += ["", "</details>"]
    if gpu_note and device == "cpu" and _load("throughput_cuda") is None:
        out += ["", "GPU column (roberta_base / albert_base at full size, batch 32): **not measured**: no GPU was "
                f"available to this work. On a CUDA machine (`make install TORCH_SPEC=torch`), `{GPU_COMMAND}` "
                "measures it (results `benchmarks/results/throughput_cuda.json`, rendered here as its own section); "
                "`--print-commands` lists the rows without running them.", ""]
    return out


def scaling_section(res, title="## 2. Scaling and hook overhead (CPU)") -> list:
    out = [title, "", f"Machine: {_machine(res['machine'])}.", ""]
    out.append("| run | samples/s | updates/s | load | command |")
    out.append("|---|---|---|---|---|")
    for r in res["scaling"]:
        if "error" in r:
            out.append(f"| {r['name']} | failed: `{r['error']}` | | | `{r['command']}` |")
            continue
        out.append(f"| {r['name']} | {r['samples_per_s']:.1f} | {r['updates_per_s']:.2f} | "
                   f"{r['load_before']:.1f}-{r['load_after']:.1f} | `{r['command']}` |")
    out += ["", "Hook overhead: stock command with and without `--user-dir fairseq_npu`, alternated:", ""]
    out.append("| run | samples per CPU-second | wall samples/s | load |")
    out.append("|---|---|---|---|")
    for r in res["hooks"]:
        out.append(f"| {r['name']} | {_fmt(r.get('samples_per_cpu_s'))} | {r['samples_per_s']:.1f} | "
                   f"{r['load_before']:.1f}-{r['load_after']:.1f} |")
    for key, label in (("samples_per_cpu_s", "CPU-time"), ("samples_per_s", "wall")):
        plain = [r[key] for r in res["hooks"] if r["name"] == "stock" and r.get(key)]
        hooked = [r[key] for r in res["hooks"] if r["name"] != "stock" and r.get(key)]
        if plain and hooked:
            ratio = statistics.median(hooked) / statistics.median(plain)
            out += ["", f"Median hooked / plain ({label}): **{ratio:.3f}**."]
    if res["hooks"]:
        out += ["", f"Command (hooked run): `{res['hooks'][-1]['command']}`"]
    if "import" in res:
        imp = res["import"]
        out += ["", f"Start-up: `import fairseq, fairseq.options` {imp['fairseq']} s; plus `import fairseq_npu` "
                f"{imp['fairseq_plus_plugin']} s (median extra {imp['median_extra_s']} s, fresh interpreters)."]
    return out + [""]


def accuracy_section(res, title="## 3. Accuracy: from scratch, stock path vs plugin path, same budget") -> list:
    from benchmarks import bench_accuracy

    out = [title, "",
           f"Machine: {_machine(res['machine'])}.", ""]
    sizes = ", ".join(f"{m} {s['layers']} layers x {s['dim']}" for m, s in res["sizes"].items())
    out.append(f"Models: {sizes}, random init. Budget per task: " + "; ".join(
        f"{t}: {b['updates']} updates of {b['batch_size']}, peak lr {b['lr']}, dev every {b['every']}"
        for t, b in res["budget"].items() if t in res["runs"]) + ".")
    seeded = "seeds" in res
    if seeded:
        out += ["", f"Seeds {', '.join(map(str, res['seeds']))}; {res.get('jobs', 1)} trainings at a time, each "
                "single-threaded. 'first dev' is the metric at the first validation, 'final' at the end of the "
                "budget; mean and sample standard deviation over the seeds.", ""]
        out += ["| task | model | path | first dev (update), mean | final, per seed | final, mean ± sd | "
                "best, mean | wall s, mean | load |", "|---|---|---|---|---|---|---|---|---|"]
    else:
        out += ["", "| task | model | path | dev metric, final | best | wall s | load |", "|---|---|---|---|---|---|---|"]
    for task, by_model in res["runs"].items():
        for model, by_path in by_model.items():
            for path, run in by_path.items():
                runs = bench_accuracy.seed_runs(run)
                if not seeded:
                    c = run["curve"]
                    out.append(f"| {task} | {model} | {path} | {c['metric']} {c['final']:.1f} | {_fmt(c['best'])} | "
                               f"{run['wall_s']:.0f} | {run['load_before']:.1f}-{run['load_after']:.1f} |")
                    continue
                s = bench_accuracy.summary(runs)
                first = [r["curve"]["points"][0] for r in runs]
                sd = f" ± {s['sd']:.1f}" if s["sd"] is not None else ""
                out.append(f"| {task} | {model} | {path} | {statistics.fmean(p['value'] for p in first):.1f} "
                           f"({int(first[0]['update'])}) | {' / '.join(f'{v:.1f}' for v in s['finals'])} | "
                           f"{runs[0]['curve']['metric']} **{_fmt(s['mean'])}**{sd} | {_fmt(s['best_mean'])} | "
                           f"{s['wall_mean']:.0f} | {_loads(runs)} |")
    out.append("")
    for plot in res.get("plots", []):
        out += [f"![{Path(plot).stem}](img/{Path(plot).name})", ""]
    out += ["<details><summary>commands</summary>", ""]
    for task, by_model in res["runs"].items():
        for model, by_path in by_model.items():
            for path, run in by_path.items():
                command = bench_accuracy.seed_runs(run)[0]["command"]
                label = f"- {task} {model} {path}" + (" (seed 1 shown; the others differ in --seed):" if seeded else ":")
                out += [label, "  ```", f"  {command}", "  ```"]
    return out + ["", "</details>", ""]


PHASES = ("forward + backward", "grad norm", "optimizer step", "trainer other")
HOST_OPS_COMMAND = "python -m benchmarks.bench_host_overhead --repeats 3"


def host_ops_section(res) -> list:
    sizes = res["sizes"]["roberta"]
    repeats = len(res["models"]["roberta"]["rows"][0]["runs"])
    out = ["## 4. Host work per update: operators and host reads, stock vs plugin (roberta_base / albert_base depth)",
           "", f"Machine: {_machine(res['machine'])}.", "",
           f"Models: 12 layers (the base models' depth, so the base models' number of parameter tensors and layer "
           f"calls) at width {sizes['dim']} (ffn {sizes['ffn']}, {sizes['heads']} heads), batch {res['batch_size']} "
           "SST-2 sentences, random init. 'operators' are the aten operators `Trainer.train_step` dispatches in one "
           "update (counted with a TorchDispatchMode by `benchmarks/host_ops_train.py`; the same every update, and "
           "independent of the width); each is host work, and most are a kernel launch on a GPU or NPU. 'host "
           "reads' are the tensor values the host reads back (`.item()`, `bool(t)`), each a wait for the device "
           "to drain its queue when the tensor lives there. 'ms per update' is wall time per update of "
           f"single-threaded runs of the same narrow models (median of {repeats} "
           f"runs of {res['updates']} updates after {res['warmup']}): host work is a large share of it, not all (the "
           "arithmetic of about 400 tokens through 12 layers and the passes over the 50,265-row embedding's gradient "
           "remain). The `--fp16` rows are counted only: this CPU has no fp16 arithmetic units, so their time would "
           "measure emulated fp16 matmuls. The torch.compile row is timed only (a dispatch mode does not see inside "
           "compiled kernels), after 60 warm-up updates (compilation, and a recompile when the shapes turn dynamic). "
           f"Command: `{HOST_OPS_COMMAND}`.", "",
           "| model | row | operators per update | forward + backward | grad norm (incl. fp16 grad copy) | "
           "optimizer step (incl. fp16 weight copy) | trainer other | host reads | ms per update | CPU ms per update |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for model, m in res["models"].items():
        for row in m["rows"]:
            c = row["counts"]
            if c:
                phases = " | ".join(str(c["ops"].get(ph, 0)) for ph in PHASES)
                counted = f"**{c['total_ops']}** | {phases} | {c['total_syncs']}"
            else:  # timed only
                counted = " | ".join(["-"] * (len(PHASES) + 2))
            out.append(f"| {model} | {row['name']} | {counted} | "
                       f"{_fmt(row['ms_per_update'])} | {_fmt(row['cpu_ms_per_update'])} |")
    out += ["", "<details><summary>commands</summary>", ""]
    for model, m in res["models"].items():
        for row in m["rows"]:
            out += [f"- {model}, {row['name']}:"]
            if row.get("count_command"):
                out += ["  counting:", "  ```", f"  {row['count_command']}", "  ```"]
            if row.get("timing_command"):
                out += ["  timing:", "  ```", f"  {row['timing_command']}", "  ```"]
    return out + ["", "</details>", ""]


CPU_COMPARE_COMMAND = "python -m benchmarks.compare --warmup 20 --updates 200 --repeats 2"
GPU_CHECK_OUT = "benchmarks/results/gpu_check"


def peer_section(title: str, path: Path, command: str) -> list:
    """The side-by-side run of benchmarks.compare (stock, launch script defaults, HF Trainer best), if measured."""
    from benchmarks import compare

    out = [title, "", f"Command: `{command}`.", ""]
    if not path.exists():
        return out + ["_Not measured yet._", ""]
    return out + [compare.markdown(json.loads(path.read_text())), ""]


# the accuracy results after section 3, each rendered by accuracy_section under its title, in this order
ACCURACY_SECTIONS = (
    ("accuracy_epoch_sst2_cpu", "## 3c. Accuracy at a full epoch of SST-2, three seeds: stock path vs plugin best"),
    ("accuracy_epoch_stsb_cpu", "## 3d. Accuracy after three epochs of STS-B, two seeds: stock path vs plugin best"),
    ("accuracy_variants_cpu", "## 3b. Accuracy: plugin path with a finite group window / without grouping "
                              "(same budget as section 3)"),
    ("accuracy_early_sst2_cpu", "## 3e. Accuracy at a short, steep budget, three seeds: stock, plugin best, and "
                                "the plugin without grouping / with a finite group window"),
    ("accuracy_launch_defaults_epoch_sst2", "## 3f. Accuracy at a full epoch of SST-2, three seeds: stock vs the "
                                            "launch defaults (grouping window 1024, fused_adamw, bf16 where native)"),
    ("accuracy_launch_defaults_early_sst2", "## 3g. Accuracy at the short budget, three seeds: stock vs the launch "
                                            "defaults"),
    ("accuracy_epoch_sst2_update_defaults", "## 3h. Accuracy at a full epoch of SST-2, three seeds: the launch "
                                            "defaults with and without the device update's levers"),
    ("accuracy_epoch_sst2_bit_masks", "## 3i. Accuracy at a full epoch of SST-2, three seeds: the launch defaults "
                                      "with the 16-bit dropout masks (finding 14); compare with section 3h's "
                                      "plugin-defaults"),
)


def render() -> Path:
    lines = ["# Benchmarks", "",
             f"**The timed CPU comparison, in one command** (on an otherwise idle machine; about 10 minutes on 2 "
             f"cores): `{CPU_COMPARE_COMMAND}`. It runs stock `fairseq-train`, `bash test/train_performance_1p.sh` "
             "with its defaults and the Hugging Face Trainer at its best settings (RoBERTa and ALBERT 4 x 256, batch "
             "32, real SST-2) one after another, in both orders, prints every command line, the medians and the "
             "ratios, and writes `benchmarks/results/compare/compare.{json,md}` (section P below; then "
             "`python -m benchmarks.run_all --render-only`).", "",
             "**The GPU check, in one call:** `bash benchmarks/gpu_wheels.sh` on a networked machine (wheels, SST-2 "
             "and vocabularies, about 40 MiB, into the git-ignored `.gpu_payload/`); copy the checkout with that "
             "folder to the GPU machine (Python 3.12, a CUDA torch, transformers, accelerate; no network needed) and "
             f"run `bash benchmarks/gpu_check.sh {GPU_CHECK_OUT}` there: the CUDA tests, the same table at "
             "roberta_base / albert_base with more rows, and the accuracy of the captured update, in at most "
             f"{gpu_report.budgets()['total']['seconds']} s, "
             "with the GPU targets checked (section P-GPU below; not yet run on a GPU). "
             "`bash benchmarks/gpu_check.sh --dry-run DIR` runs it on a CPU at tiny sizes.", "",
             "Regenerate everything (data, measurements, plots, this page) with `python -m benchmarks.run_all` "
             "from the repository root with the venv active; `python -m benchmarks.run_all --render-only` "
             "rewrites this page from the saved results in `benchmarks/results/`. Logs of every run are kept under "
             "`work_dirs/benchmarks/`.", ""]
    if NOTES.exists():
        lines += [NOTES.read_text().rstrip(), ""]
    lines += peer_section("## P. What a user gets: stock fairseq-train vs the launch script vs HF Trainer best (CPU)",
                          common.RESULTS / "compare" / "compare.json", CPU_COMPARE_COMMAND)
    lines += gpu_report.doc_section(common.REPO / GPU_CHECK_OUT)  # section P-GPU
    for name, section in (("padding_sst2", padding_section), ("throughput_cpu", throughput_section),
                          ("throughput_cpu_default_threads", lambda r: throughput_section(
                              r, "## 1b. Training throughput, CPU, wall clock at torch's default threads (2)",
                              gpu_note=False)),
                          ("throughput_cpu_default_threads_quiet", lambda r: throughput_section(
                              r, "## 1c. Training throughput, CPU, wall clock at torch's default threads (2), "
                                 "idle machine", gpu_note=False)),
                          ("throughput_cuda", throughput_section), ("scaling_cpu", scaling_section),
                          ("scaling_cpu_quiet", lambda r: scaling_section(
                              r, "## 2b. Scaling and hook overhead (CPU), idle machine")),
                          ("accuracy_cpu", accuracy_section),
                          *((name, functools.partial(accuracy_section, title=title))
                            for name, title in ACCURACY_SECTIONS),
                          ("host_ops_cpu", host_ops_section)):
        res = _load(name)
        if res is None:
            if name != "throughput_cuda":  # the CPU section says how to measure the GPU column
                lines += [f"_{name}: not measured yet._", ""]
        else:
            lines += section(res)
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text("\n".join(lines).rstrip() + "\n")
    return DOC


if __name__ == "__main__":
    print(render())
