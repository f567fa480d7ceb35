"""Wall time of fairseq's own GLUE preprocessing vs fairseq-npu-preprocess-glue, side by side, same input and workers.

Stock: the installed fairseq's examples/roberta/preprocess_GLUE_tasks.sh itself, run by bash, with two edits
that do not touch its logic: ``wget`` is a no-op (the GPT-2 files are linked beside it, as the script expects
after its downloads) and ``--workers 60`` becomes ``--workers N``. Ours: the ``fairseq-npu-preprocess-glue``
console script (a fresh process, imports included). Both outputs are compared byte for byte.

Cases: ``sst2`` (the real SST-2: train, dev, test) and ``large`` (an MNLI-layout task of --large-rows training
pairs built from SST-2 sentences, plus small dev/test splits). ``--write-stock-hashes FILE`` also records the
sha256 of every stock output file of the five real parity tasks (the fixture of tests/test_preprocess_stock_parity.py).

    python -m benchmarks.bench_preprocess --workers 2                      # both cases
    python -m benchmarks.bench_preprocess --cases sst2 --repeat 3
"""

import argparse
import hashlib
import json
import os
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import REPO, SHARED_DATA as SHARED

PARITY_TASKS = ("SST-2", "STS-B", "RTE", "MRPC", "CoLA")
MNLI_LABELS = ("entailment", "neutral", "contradiction")


def fairseq_dir() -> Path:
    import importlib.util

    return Path(importlib.util.find_spec("fairseq").origin).parent


def stock_workspace(root: Path, vocab: Path, workers: int) -> Path:
    """A folder where the stock script runs as written: GPT-2 files and ``examples`` beside it, wget a no-op."""
    ws = root / "stock_ws"
    (ws / "bin").mkdir(parents=True)
    script = (fairseq_dir() / "examples" / "roberta" / "preprocess_GLUE_tasks.sh").read_text()
    script = re.sub(r"--workers 60", f"--workers {workers}", script)
    (ws / "preprocess_GLUE_tasks.sh").write_text(script)
    (ws / "bin" / "wget").write_text("#!/bin/sh\nexit 0\n")
    (ws / "bin" / "wget").chmod(0o755)
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        (ws / name).symlink_to(vocab / name)
    (ws / "examples").symlink_to(fairseq_dir() / "examples")
    return ws


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def timed(cmd, cwd, env=None):
    cpu, start = children_cpu(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"{cmd[:3]} failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return wall, children_cpu() - cpu


def run_stock(ws: Path, glue: Path, task: str):
    env = dict(os.environ, PATH=f"{ws / 'bin'}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    shutil.rmtree(ws / f"{task}-bin", ignore_errors=True)
    return timed(["bash", "preprocess_GLUE_tasks.sh", str(glue), task], ws, env)


def run_ours(glue: Path, task: str, dest: Path, vocab: Path, workers: int):
    exe = shutil.which("fairseq-npu-preprocess-glue", path=str(Path(sys.executable).parent)) or "fairseq-npu-preprocess-glue"
    return timed([exe, str(glue), task, "--vocab-dir", str(vocab), "--dest", str(dest), "--workers", str(workers),
                  "--no-download"], REPO)


def data_files(bin_dir: Path):
    return {str(p.relative_to(bin_dir)): p for p in sorted(bin_dir.rglob("*"))
            if p.is_file() and not p.name.startswith("preprocess.")}


def compare(stock: Path, ours: Path) -> str:
    a, b = data_files(stock), data_files(ours)
    if a.keys() != b.keys():
        return f"DIFFERENT file sets: {sorted(set(a) ^ set(b))}"
    bad = [k for k in a if a[k].read_bytes() != b[k].read_bytes()]
    return f"byte-identical ({len(a)} files)" if not bad else f"DIFFERENT: {bad}"


def make_large_mnli(dest: Path, rows: int, seed: int = 0) -> Path:
    """MNLI layout (12/16/10 columns) with ``rows`` training pairs of SST-2 sentences."""
    sents = [line.split("\t")[0].strip() for line in (SHARED / "glue" / "SST-2" / "train.tsv").read_text().split("\n")[1:] if line]
    rng = random.Random(seed)
    task = dest / "MNLI"
    task.mkdir(parents=True)

    def pair(i):
        return rng.choice(sents), rng.choice(sents)

    train_head = ["index", "promptID", "pairID", "genre", "s1_bp", "s2_bp", "s1_p", "s2_p", "sentence1", "sentence2",
                  "label1", "gold_label"]
    dev_head = train_head[:11] + ["label2", "label3", "label4", "label5", "gold_label"]
    with open(task / "train.tsv", "w", encoding="utf-8") as f:
        f.write("\t".join(train_head) + "\n")
        for i in range(rows):
            a, b = pair(i)
            lab = MNLI_LABELS[i % 3]
            f.write(f"{i}\t{i}\t{i}e\tfiction\t-\t-\t-\t-\t{a}\t{b}\t{lab}\t{lab}\n")
    for name in ("dev_matched", "dev_mismatched"):
        with open(task / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.write("\t".join(dev_head) + "\n")
            for i in range(2000):
                a, b = pair(i)
                lab = MNLI_LABELS[i % 3]
                f.write(f"{i}\t{i}\t{i}e\tfiction\t-\t-\t-\t-\t{a}\t{b}\t{lab}\t{lab}\t{lab}\t{lab}\t{lab}\t{lab}\n")
    for name in ("test_matched", "test_mismatched"):
        with open(task / f"{name}.tsv", "w", encoding="utf-8") as f:
            f.write("\t".join(train_head[:10]) + "\n")
            for i in range(2000):
                a, b = pair(i)
                f.write(f"{i}\t{i}\t{i}e\tfiction\t-\t-\t-\t-\t{a}\t{b}\n")
    return dest


def bench_case(name, glue, task, ws, root, vocab, workers, repeat):
    stock_times, our_times = [], []
    for r in range(repeat):
        stock_times.append(run_stock(ws, glue, task))
        our_times.append(run_ours(glue, task, root / "ours", vocab, workers))
    verdict = compare(ws / f"{task}-bin", root / "ours" / f"{task}-bin")
    s = min(stock_times)
    o = min(our_times)
    print(f"{name}: stock {s[0]:.1f} s wall ({s[1]:.1f} s cpu), ours {o[0]:.1f} s wall ({o[1]:.1f} s cpu), "
          f"speed-up {s[0] / o[0]:.1f}x wall, {s[1] / o[1]:.1f}x cpu; outputs {verdict}", flush=True)
    return {"case": name, "stock_wall_s": s[0], "stock_cpu_s": s[1], "ours_wall_s": o[0], "ours_cpu_s": o[1],
            "speedup_wall": s[0] / o[0], "outputs": verdict, "all_stock": stock_times, "all_ours": our_times}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cases", default="sst2,large", help="comma-separated: sst2, large")
    parser.add_argument("--large-rows", type=int, default=400_000)
    parser.add_argument("--repeat", type=int, default=1, help="runs per side; the fastest is reported")
    parser.add_argument("--vocab-dir", type=Path, default=SHARED / "vocab" / "gpt2_bpe")
    parser.add_argument("--write-stock-hashes", type=Path, help="run the stock script on the five parity tasks and "
                        "write the sha256 of each output file here")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bench_preprocess."))
    try:
        glue = root / "glue"
        glue.mkdir()
        ws = stock_workspace(root, args.vocab_dir, args.workers)
        print(f"machine: {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}; workers {args.workers}", flush=True)
        results = []
        cases = args.cases.split(",") if args.cases else []
        if "sst2" in cases:
            shutil.copytree(SHARED / "glue" / "SST-2", glue / "SST-2")
            results.append(bench_case("SST-2 (train+dev+test)", glue, "SST-2", ws, root, args.vocab_dir, args.workers,
                                      args.repeat))
        if "large" in cases:
            make_large_mnli(glue, args.large_rows)
            results.append(bench_case(f"MNLI layout, {args.large_rows} train pairs", glue, "MNLI", ws, root,
                                      args.vocab_dir, args.workers, args.repeat))
        if args.write_stock_hashes:
            hashes = {}
            for task in PARITY_TASKS:
                if not (glue / task).exists():
                    shutil.copytree(SHARED / "glue" / task, glue / task)
                run_stock(ws, glue, task)
                hashes[task] = {rel: hashlib.sha256(p.read_bytes()).hexdigest()
                                for rel, p in data_files(ws / f"{task}-bin").items()}
            args.write_stock_hashes.write_text(json.dumps(hashes, indent=1, sort_keys=True) + "\n")
            print(f"wrote {args.write_stock_hashes}")
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
