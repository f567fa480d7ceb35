"""Shared pieces of the benchmark scripts: model sizes, command lines, running a command with the machine's load
recorded around it, and the machine description."""

import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

from fairseq_npu.launch.recipes import FP16_ARGS

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
WORK = REPO / "work_dirs" / "benchmarks"
RESULTS = REPO / "benchmarks" / "results"
# real GLUE tsv files and vocabularies (beside the checkout unless FAIRSEQ_NPU_SHARED_DATA says otherwise)
SHARED_DATA = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", REPO.parent / "shared" / "data"))

# the command-line pieces the benchmarks combine into their rows
USER_DIR = ["--user-dir", "fairseq_npu"]
STOCK_TASK = ["--task", "sentence_prediction", "--optimizer", "adam"]
GROUPED_TASK = ["--task", "sentence_prediction_npu", "--group-by-length"]

# reduced sizes for CPU (the roberta 4 layers x 256); ALBERT keeps its factorized 128-dim embedding
SIZES = {
    "roberta": dict(layers=4, dim=256, ffn=1024, heads=4),
    "albert": dict(layers=4, dim=256, ffn=1024, heads=4, embedding_dim=128),
}


# the published base sizes (what the GPU benchmark trains): the archs' defaults, spelled out for the HF Trainer
BASE_SIZES = {
    "roberta": dict(layers=12, dim=768, ffn=3072, heads=12),
    "albert": dict(layers=12, dim=768, ffn=3072, heads=12, embedding_dim=128),
}

# the recipe's fp16 settings (README.glue.md): stock fairseq's best on a GPU, as the launch scripts pass them
FP16_FLAGS = FP16_ARGS


# smaller still for the accuracy curves, so that each from-scratch run fits in a few minutes on 2 shared cores
SMALL_SIZES = {
    "roberta": dict(layers=2, dim=128, ffn=512, heads=2),
    "albert": dict(layers=2, dim=128, ffn=512, heads=2, embedding_dim=128),
}


# the dry runs (gpu_check.sh --dry-run, the tests): every code path, in seconds
TINY_SIZES = {
    "roberta": dict(layers=2, dim=32, ffn=64, heads=2),
    "albert": dict(layers=2, dim=32, ffn=64, heads=2, embedding_dim=16),
}
SIZE_TABLES = {"reduced": SIZES, "base": BASE_SIZES, "tiny": TINY_SIZES}


def model_flags(model: str, sizes: Optional[Dict[str, dict]] = None) -> List[str]:
    s = (sizes or SIZES)[model]
    flags = ["--arch", f"{model}_base", "--encoder-layers", str(s["layers"]), "--encoder-embed-dim", str(s["dim"]),
             "--encoder-ffn-embed-dim", str(s["ffn"]), "--encoder-attention-heads", str(s["heads"])]
    if model == "albert":
        flags += ["--embedding-dim", str(s["embedding_dim"])]
    return flags


def launch_cpu_args(model: str, data: Path, max_update: int, output_dir: Path) -> List[str]:
    """fairseq-train's arguments (the data folder first) of the launch script's cpu performance run at the reduced
    sizes, batch 32: the command the launch defaults give a user (``fairseq_npu.launch.command.build``)."""
    from fairseq_npu.launch.command import LaunchRequest, build

    cmd, _ = build(LaunchRequest(mode="performance", data=str(data), model=model, device="cpu", batch_size=32,
                                 max_update=max_update, output_dir=str(output_dir),
                                 extra=tuple(model_flags(model)[2:])))  # the launch picks the arch; sizes follow
    return list(cmd)


def task_flags(task: str) -> List[str]:
    """fairseq's GLUE recipe flags for the task (README.glue.md), minus what the benchmark sets itself."""
    if task == "STS-B":
        return ["--num-classes", "1", "--regression-target", "--best-checkpoint-metric", "loss"]
    return ["--num-classes", "2"]


def common_train_flags(batch_size: int, lr: float, total_updates: int, warmup: int, seed: int = 1,
                       cpu: bool = True) -> List[str]:
    """The README.glue.md recipe (adam betas/eps, weight decay, polynomial decay), logging json; on cpu unless
    ``cpu`` is False (then on the device fairseq finds: cuda)."""
    return [
        *(["--cpu"] if cpu else []), "--max-positions", "512", "--batch-size", str(batch_size),
        "--required-batch-size-multiple", "1",
        "--init-token", "0", "--criterion", "sentence_prediction",
        "--dropout", "0.1", "--attention-dropout", "0.1", "--weight-decay", "0.1",
        "--adam-betas", "(0.9,0.98)", "--adam-eps", "1e-06", "--clip-norm", "0.0",
        "--lr-scheduler", "polynomial_decay", "--lr", str(lr),
        "--total-num-update", str(total_updates), "--warmup-updates", str(warmup),
        "--log-format", "json", "--seed", str(seed),
    ]


def fairseq_train() -> str:
    """fairseq's ``fairseq-train`` console script: beside this interpreter (a venv), else the one on PATH (the GPU
    check installs fairseq into a folder of its own)."""
    local = BIN / "fairseq-train"
    return str(local) if local.exists() else (shutil.which("fairseq-train") or str(local))


def module_command(name: str, *args: str) -> List[str]:
    """``python -m benchmarks.NAME ARGS``: how one benchmark runs another (from the repository root)."""
    return [sys.executable, "-m", f"benchmarks.{name}", *args]


def fairseq_args(cmd: List[str]) -> List[str]:
    """The fairseq-train arguments of a row's command: without an ``env VAR=value`` prefix and the program
    (``fairseq-train`` or ``python -m benchmarks.cpu_timed_train``)."""
    args = list(cmd)
    if args and args[0] == "env":
        args = args[1:]
        while args and "=" in args[0]:
            args = args[1:]
    return args[3:] if args[:2] == [sys.executable, "-m"] else args[1:]


def slug(name: str) -> str:
    """A row's name as a file name."""
    return "".join(c if c.isalnum() or c in "-." else "_" for c in name.replace("+", "plus")).strip("_")


def loadavg() -> float:
    return round(os.getloadavg()[0], 2)


def _exit_on_sigterm(signum, frame):
    raise SystemExit(128 + signum)


def start_logged(cmd: List[str], log_path: Path, env: Optional[Dict[str, str]] = None) -> subprocess.Popen:
    """Start ``cmd`` from the repo root in a process group of its own (a launch script and the trainer it starts
    can then be stopped together), output to ``log_path``, which begins with the command line."""
    # a run in its own group no longer gets the SIGTERM that `timeout` sends to the benchmark's group: the
    # benchmark turns it into SystemExit, so that its callers stop their runs on the way out (stop_group)
    if (threading.current_thread() is threading.main_thread()
            and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(env or {})
    with open(log_path, "w") as log:
        log.write("$ " + " ".join(shlex.quote(c) for c in cmd) + "\n")
        log.flush()
        return subprocess.Popen(cmd, cwd=REPO, env=full_env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in group ``pgid``. A signal only starts a process's exit; on a
    loaded machine the process can run on for a while after it."""
    proc_dir = Path("/proc")
    if not proc_dir.is_dir():  # no procfs: ask the kernel, which also counts zombies
        try:
            os.killpg(pgid, 0)
            return True
        except ProcessLookupError:
            return False
    for stat in proc_dir.glob("[0-9]*/stat"):
        try:
            # fields after the parenthesised command name: state, ppid, pgrp, ...
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):  # the process ended while being read
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _wait_group(proc: subprocess.Popen, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``proc``'s whole group to end, reaping the leader; True when it has."""
    deadline = time.monotonic() + seconds
    while True:
        proc.poll()  # reaps the leader, which would otherwise stay a zombie member
        if not group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def stop_group(proc: subprocess.Popen, grace_s: float = 10.0, kill_wait_s: float = 10.0) -> None:
    """Stop ``proc`` and every process it started, and return once they are gone: SIGTERM to its group, then
    SIGKILL to whatever is left after ``grace_s``. Stopping only the launch script would leave its trainer running
    on the device, under the next benchmark's timings. The grace is the group's, not the leader's: a launch script
    exits at once on SIGTERM while its trainer may still be writing a checkpoint."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, kill_wait_s)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:  # the group is gone
            break
        if _wait_group(proc, wait_s):
            break
    else:
        print(f"warning: process group {proc.pid} still has live members {kill_wait_s:.0f} s after SIGKILL",
              file=sys.stderr)
    proc.wait()


def finished_run(proc: subprocess.Popen, log_path: Path, wall: float, before: float) -> dict:
    """The record of a run that ended by itself: wall time, exit code, the load around it; a failed run raises
    with the log's last lines. What the script left running in its group is stopped first: no trainer outlives its
    run."""
    if group_alive(proc.pid):
        stop_group(proc)
    info = dict(returncode=proc.returncode, wall_s=round(wall, 1), load_before=before, load_after=loadavg(),
                log=str(log_path.relative_to(REPO)) if log_path.is_relative_to(REPO) else str(log_path))
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").splitlines()[-15:]
        raise RuntimeError(f"command failed ({proc.returncode}), log {log_path}:\n" + "\n".join(tail))
    return info


def run_logged(cmd: List[str], log_path: Path, env: Optional[Dict[str, str]] = None, timeout: float = 1800) -> dict:
    """Run ``cmd`` from the repo root, output to ``log_path``; returns wall time, exit code and the 1-minute load
    average before and after (the machine is shared: a busy machine makes the figures noisy). A run still going
    after ``timeout`` seconds is stopped with everything it started, and raises."""
    before = loadavg()
    t0 = time.perf_counter()
    proc = start_logged(cmd, log_path, env)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop_group(proc)
        raise RuntimeError(f"stopped at its time limit ({timeout:.0f} s), log {log_path}") from None
    except BaseException:  # interrupted: the run must not outlive its benchmark
        stop_group(proc)
        raise
    return finished_run(proc, log_path, time.perf_counter() - t0, before)


def shell_command(cmd: List[str], env: Optional[Dict[str, str]] = None) -> str:
    """The command as a user would type it from the repo root (venv active)."""
    parts = [f"{k}={shlex.quote(v)}" for k, v in (env or {}).items()]
    args = list(cmd)
    if args and (args[0].startswith(str(BIN)) or Path(args[0]).name == "fairseq-train"):
        args[0] = Path(args[0]).name
    args = ["python" if a == sys.executable else a for a in args]  # also after an `env VAR=value` prefix
    args = [str(Path(a).relative_to(REPO)) if a.startswith(str(REPO) + "/") else a for a in args]
    return " ".join(parts + [shlex.quote(a) for a in args])


def machine() -> dict:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    versions = {}
    for mod in ("torch", "fairseq", "transformers", "numpy"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - a missing library is reported, not fatal
            versions[mod] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = "unknown"
    import torch

    gpu = "none (CPU only)"
    if torch.cuda.is_available():
        gpu = f"{torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, CUDA {torch.version.cuda}"
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), mem_gb=mem_gb,
                python=platform.python_version(), os=platform.platform(), gpu=gpu,
                commit=commit, **versions)


def write_atomic(path: Path, text: str) -> Path:
    """Write through a temporary file renamed into place: an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def save_result(name: str, result: dict) -> Path:
    return write_atomic(RESULTS / f"{name}.json", json.dumps(result, indent=1) + "\n")
