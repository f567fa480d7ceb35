"""Fault injection: break files and processes the way a user's machine does, run the shipped commands, judge how
each one ended.

    python -m benchmarks.fault_injection [--cases NAME,NAME...] [--markdown docs/failures.md] [--workdir DIR]

Builds a tiny learnable SST-2 task (fairseq_npu.synthetic, preprocessed by fairseq-npu-preprocess-glue with a
SentencePiece vocabulary trained on it), trains a tiny RoBERTa once with test/train_full_1p.sh, then runs each
case on a fresh copy of what it breaks: bytes flipped in, truncated or emptied checkpoints, .bin/.idx, dict.txt and
tsv files; processes killed at a random point of training or of a checkpoint save; impossible flags; two runs in one
folder; a diverging run; a full disk where the machine lets this process mount a small tmpfs. Each case gets a
verdict:

- ``honest``: the outcome a user can trust: a non-zero exit whose last line says what is wrong (or, where the
  case has a right answer, that answer with exit 0), no traceback, no process left behind;
- ``exit-0-wrong``: exit 0 with a wrong or incomplete result;
- ``segfault``: killed by SIGSEGV;
- ``orphan``: a process of the case still runs after its command ended;
- ``traceback``: a Python traceback where one line was due;
- ``skipped``: the machine does not allow the fault (the reason is given).

The table goes to stdout and, with ``--markdown``, to a page (docs/failures.md is generated so). A few minutes on
two cores; the test suite runs two cases of it (tests/test_fault_injection.py), never the whole table.
"""

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[1]
TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64",
        "--encoder-attention-heads", "2", "--max-positions", "64", "--log-interval", "2", "--num-workers", "0"]
TRAIN = ["--device=cpu", "--task=SST-2", "--batch-size=16", "--lr=1e-3", "--precision=fp32"]
VERDICTS = ("honest", "exit-0-wrong", "segfault", "orphan", "traceback", "skipped")
ORPHAN_WAIT = 10  # seconds a case's processes get to end after its command did


@dataclass
class Outcome:
    case: str
    what: str
    exit_code: Optional[int]
    last_line: str
    verdict: str
    note: str = ""


class Bench:
    """The shared fixtures (data, a trained run) and the helpers the cases run commands with."""

    def __init__(self, workdir: Path, seed: int):
        self.work = workdir
        self.rng = random.Random(seed)
        self.env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
        self.env.pop("FAIRSEQ_NPU_PLUGIN", None)
        self._data = self._trained = None

    # fixtures -----------------------------------------------------------------------------------------------
    @property
    def glue(self) -> Path:
        return self.work / "glue"

    def data(self) -> Path:
        if self._data is None:
            from fairseq_npu import synthetic
            from fairseq_npu.preprocess.glue import preprocess_task

            raw = synthetic.write_task(self.glue / "SST-2", n_train=160, n_dev=32, n_test=24)
            self._data = Path(preprocess_task(self.glue, "SST-2", dest=self.work / "bin", model="albert",
                                              task_dir=raw, train_spm_vocab_size=120))
        return self._data

    def trained(self) -> Path:
        """A finished 2-epoch run of train_full_1p.sh: its folder."""
        if self._trained is None:
            out = self.work / "trained"
            run = self.script("train_full_1p.sh", f"--data_path={self.data()}", *TRAIN, "--max-epoch=2",
                              f"--output_dir={out}", *TINY)
            if run.returncode != 0:
                raise RuntimeError(f"the reference run failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
            self._trained = out
        return self._trained

    def copy(self, src: Path, name: str) -> Path:
        dest = self.work / "cases" / name / src.name
        if dest.exists():
            shutil.rmtree(dest.parent)
        shutil.copytree(src, dest, symlinks=True)
        return dest

    def case_dir(self, name: str) -> Path:
        path = self.work / "cases" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    # commands -----------------------------------------------------------------------------------------------
    def script(self, name: str, *args, timeout=300) -> subprocess.CompletedProcess:
        return self.run(["bash", str(REPO / "test" / name), *map(str, args)], timeout=timeout)

    def run(self, cmd: List[str], timeout=300, env=None) -> subprocess.CompletedProcess:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                                  env=env or self.env)
        except subprocess.TimeoutExpired as err:
            return subprocess.CompletedProcess(cmd, 124, _text(err.stdout), _text(err.stderr) + "\n(timed out)")

    def start(self, name: str, log: Path, *args) -> subprocess.Popen:
        with open(log, "wb") as f:
            return subprocess.Popen(["bash", str(REPO / "test" / name), *map(str, args)], stdout=f,
                                    stderr=subprocess.STDOUT, cwd=REPO, env=self.env)

    def module(self, name: str, *args, timeout=300) -> subprocess.CompletedProcess:
        return self.run([sys.executable, "-m", name, *map(str, args)], timeout=timeout)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


# faults ---------------------------------------------------------------------------------------------------------


def flip_bytes(path: Path, rng: random.Random, count: int = 64, where: float = 0.5) -> None:
    data = bytearray(path.read_bytes())
    start = max(0, min(len(data) - count, int(len(data) * where)))
    for i in range(start, min(len(data), start + count)):
        data[i] ^= rng.randrange(1, 256)
    path.write_bytes(bytes(data))


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def processes_naming(text: str) -> List[int]:
    """Processes whose command line holds ``text`` (a /proc scan): what a case left behind."""
    return [int(pid) for pid in filter(str.isdigit, os.listdir("/proc"))
            if int(pid) != os.getpid() and text in command_line_of(int(pid))]


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout=180) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and text in path.read_text(errors="replace"):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


# verdicts -------------------------------------------------------------------------------------------------------


def last_line(*texts: str) -> str:
    for text in texts:
        lines = [line for line in (text or "").splitlines() if line.strip()]
        if lines:
            return lines[-1].strip()
    return ""


def judge(case: str, what: str, rc: Optional[int], out: str, err: str, marker: str,
          right: Optional[Callable[[], Optional[str]]] = None) -> Outcome:
    """``right``: for a case with a right answer at exit 0, returns None when the result is right, else why not.
    Without it, exit 0 is wrong: every case breaks something the command cannot succeed with."""
    line = last_line(err, out)
    left = processes_naming(marker) if marker else []
    deadline = time.monotonic() + ORPHAN_WAIT
    while left and time.monotonic() < deadline:
        time.sleep(0.2)
        left = processes_naming(marker)
    for pid in left:  # report, then clean up
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if rc in (-signal.SIGSEGV, 128 + signal.SIGSEGV) or "Segmentation fault" in out + err:
        return Outcome(case, what, rc, line, "segfault")
    if left:
        return Outcome(case, what, rc, line, "orphan", f"{len(left)} process(es) left running")
    if "Traceback (most recent call last)" in out + err:
        return Outcome(case, what, rc, line, "traceback")
    if rc == 0:
        wrong = "exit 0 where the command cannot succeed" if right is None else right()
        return Outcome(case, what, rc, line, "exit-0-wrong" if wrong else "honest", wrong or "")
    return Outcome(case, what, rc, line, "honest")


def summary_status(folder: Path) -> str:
    try:
        return json.loads((folder / "summary.json").read_text()).get("status", "?")
    except (OSError, ValueError):
        return "no summary.json"


# cases ----------------------------------------------------------------------------------------------------------
# each takes the Bench, returns an Outcome; CASES keeps their order in the table


def _train_on_broken_data(name: str, what: str, relpath: str, fault: Callable[[Path], None]):
    def case(b: Bench) -> Outcome:
        data = b.copy(b.data(), name)
        fault(data / relpath)
        out = b.case_dir(name) / "run"
        run = b.script("train_full_1p.sh", f"--data_path={data}", *TRAIN, "--max-epoch=1", f"--output_dir={out}",
                       *TINY)
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(out))
    return name, case


def _resume_broken_checkpoint(name: str, what: str, fault: Callable[[Path, random.Random], None]):
    def case(b: Bench) -> Outcome:
        run_dir = b.copy(b.trained(), name)
        fault(run_dir / "checkpoints" / "checkpoint_last.pt", b.rng)
        run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, "--max-epoch=3",
                       f"--output_dir={run_dir}", *TINY)
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(run_dir))
    return name, case


def _load_broken_checkpoint(name: str, what: str, command: str, fault: Callable[[Path, random.Random], None]):
    def case(b: Bench) -> Outcome:
        folder = b.case_dir(name)
        path = folder / "checkpoint_best.pt"
        shutil.copyfile(b.trained() / "checkpoints" / "checkpoint_best.pt", path)
        fault(path, b.rng)
        args = [b.data(), "--path", path, "--cpu"]
        if command == "fairseq_npu.cli.predict":
            args += ["--output-dir", folder / "submission"]
        run = b.module(command, *args)
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(folder))
    return name, case


def _preprocess_broken_tsv(name: str, what: str, tsv: str, fault: Callable[[Path], None]):
    def case(b: Bench) -> Outcome:
        b.data()
        glue = b.copy(b.glue, name)
        fault(glue / "SST-2" / tsv)
        run = b.module("fairseq_npu.preprocess.glue", glue, "SST-2", "--dest", glue.parent / "bin",
                       "--model", "albert", "--train-spm", "120", "--workers", "1")
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(glue.parent))
    return name, case


def _submission_from_test_rows(name: str, what: str, reorder: Callable[[List[str], random.Random], List[str]],
                               must_refuse: bool):
    def case(b: Bench) -> Outcome:
        b.trained()
        glue = b.copy(b.glue, name)
        test = glue / "SST-2" / "test.tsv"
        header, *rows = test.read_text().splitlines()
        kept = reorder(rows, b.rng)
        test.write_text("\n".join([header] + kept) + "\n")
        pre = b.module("fairseq_npu.preprocess.glue", glue, "SST-2", "--dest", glue.parent / "bin",
                       "--model", "albert", "--spm-model", b.data() / "spiece.model", "--workers", "1")
        if pre.returncode != 0:
            return judge(name, what, pre.returncode, pre.stdout, pre.stderr, str(glue.parent))
        sub = glue.parent / "submission"
        run = b.module("fairseq_npu.cli.predict", glue.parent / "bin" / "SST-2-bin", "--path",
                       b.trained() / "checkpoints" / "checkpoint_best.pt", "--cpu", "--output-dir", sub)

        def right() -> Optional[str]:
            if must_refuse:
                return "a submission missing a GLUE index was written"
            lines = (sub / "SST-2.tsv").read_text().splitlines()[1:]
            indices = [int(line.split("\t")[0]) for line in lines]
            if indices != sorted(int(r.split("\t")[0]) for r in kept):
                return "the submission is not numbered by the test file's index column"
            return None
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(glue.parent), right)
    return name, case


def _kill_during(name: str, what: str, text: str, sig: int, target: str, script="train_full_1p.sh", nproc=1):
    """Start a long run, wait for ``text`` in its log (at a random update where the text names one), then send
    ``sig`` to ``target``: the launch script, the trainer or the torchrun agent."""
    def case(b: Bench) -> Outcome:
        folder = b.case_dir(name)
        out = folder / "run"
        log = folder / "script.out"
        extra = [f"--nproc={nproc}"] if nproc > 1 else []
        wait_text = text.replace("{N}", str(b.rng.randrange(2, 8, 2)))
        proc = b.start(script, log, f"--data_path={b.data()}", *TRAIN, *extra, "--max-epoch=200",
                       f"--output_dir={out}", *TINY)
        if not wait_for_text(out / "train.log", wait_text, proc):
            proc.kill()
            proc.wait()
            return judge(name, what, proc.returncode, log.read_text(errors="replace"), "", str(out))
        pids = {"script": [proc.pid],
                "trainer": [p for p in processes_naming(str(out)) if "fairseq_cli.train" in command_line_of(p)
                            and "torch.distributed.run" not in command_line_of(p)],
                "agent": [p for p in processes_naming(str(out)) if "torch.distributed.run" in command_line_of(p)]}[target]
        for pid in pids:
            os.kill(pid, sig)
        try:
            rc = proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
        text_out = log.read_text(errors="replace")
        status = summary_status(out)

        def right() -> Optional[str]:
            return "exit 0 after a kill"
        outcome = judge(name, what, rc, text_out, "", str(out), right)
        if outcome.verdict == "honest" and target != "script" or sig != signal.SIGKILL:
            expected = "interrupted" if target == "script" else "failed"
            if status != expected:
                outcome.verdict, outcome.note = "exit-0-wrong" if rc == 0 else outcome.verdict, \
                    f"summary.json status {status!r}, expected {expected!r}"
        if "Saving checkpoint" in wait_text and outcome.verdict == "honest":
            check = b.module("fairseq_npu.cli.evaluate", b.data(), "--path", out / "checkpoints" /
                             "checkpoint_last.pt", "--cpu")
            if check.returncode != 0:
                outcome.verdict, outcome.note = "exit-0-wrong", "checkpoint_last.pt no longer loads"
            else:
                outcome.note = "checkpoint_last.pt still loads"
        return outcome
    return name, case


def command_line_of(pid: int) -> str:
    """The command line of a running process, "" once it is gone."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _launch_flag(name: str, what: str, *flags):
    def case(b: Bench) -> Outcome:
        out = b.case_dir(name) / "run"
        run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, *flags, f"--output_dir={out}", *TINY)
        return judge(name, what, run.returncode, run.stdout, run.stderr, str(out))
    return name, case


def _two_runs_one_folder(b: Bench) -> Outcome:
    name = "two-runs-one-folder"
    folder = b.case_dir(name)
    out = folder / "run"
    first = b.start("train_full_1p.sh", folder / "first.out", f"--data_path={b.data()}", *TRAIN, "--max-epoch=200",
                    f"--output_dir={out}", *TINY)
    try:
        wait_for_text(out / "train.log", '"num_updates"', first)
        run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, "--max-epoch=1", f"--output_dir={out}",
                       *TINY)
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    return judge(name, "a second train_full_1p.sh into a running run's --output_dir", run.returncode, run.stdout,
                 run.stderr, str(out))


def _diverged(b: Bench) -> Outcome:
    name = "diverged-lr-1e6"
    out = b.case_dir(name) / "run"
    run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN[:-2], "--lr=1e6", "--precision=amp",
                   "--max-epoch=2", f"--output_dir={out}", *TINY)
    outcome = judge(name, "--lr=1e6 under bf16 autocast (every update skipped, valid_loss nan)", run.returncode,
                    run.stdout, run.stderr, str(out))
    if summary_status(out) != "failed":
        outcome.note = f"summary.json status {summary_status(out)!r}"
        if outcome.verdict == "honest":
            outcome.verdict = "exit-0-wrong" if run.returncode == 0 else outcome.verdict
    return outcome


def _bad_env(b: Bench) -> Outcome:
    name = "env-cpu-malloc-bogus"
    out = b.case_dir(name) / "run"
    env = dict(b.env, FAIRSEQ_NPU_CPU_MALLOC="bogus")
    run = b.run(["bash", str(REPO / "test" / "train_full_1p.sh"), f"--data_path={b.data()}", *TRAIN,
                 "--max-epoch=1", f"--output_dir={out}", *TINY], env=env)
    return judge(name, "FAIRSEQ_NPU_CPU_MALLOC=bogus", run.returncode, run.stdout, run.stderr, str(out))


def _resume_other_classes(b: Bench) -> Outcome:
    name = "resume-num-classes-3"
    run_dir = b.copy(b.trained(), name)
    run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, "--num-classes=3", "--max-epoch=3",
                   f"--output_dir={run_dir}", *TINY)
    return judge(name, "resume a 2-class fused_adamw run with --num-classes=3", run.returncode, run.stdout,
                 run.stderr, str(run_dir))


def _rerun_finished(b: Bench) -> Outcome:
    name = "rerun-finished-folder"
    run_dir = b.copy(b.trained(), name)
    run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, "--max-epoch=2", f"--output_dir={run_dir}",
                   *TINY)

    def right() -> Optional[str]:
        s = json.loads((run_dir / "summary.json").read_text())
        return None if s.get("status") == "ok" and s.get("best_metric") is not None else "summary without a result"
    return judge(name, "train_full_1p.sh again into a finished run's folder, same flags", run.returncode,
                 run.stdout, run.stderr, str(run_dir), right)


def _full_disk(b: Bench) -> Outcome:
    name = "full-disk-checkpoints"
    what = "checkpoints folder on a 512 KiB tmpfs (one tiny checkpoint fits, its copy does not)"
    folder = b.case_dir(name)
    mount = folder / "small"
    mount.mkdir(exist_ok=True)
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if made.returncode != 0:
        return Outcome(name, what, None, "", "skipped",
                       f"cannot mount a small tmpfs here ({last_line(made.stderr) or 'mount failed'})")
    try:
        out = folder / "run"
        out.mkdir(exist_ok=True)
        (out / "checkpoints").symlink_to(mount)
        run = b.script("train_full_1p.sh", f"--data_path={b.data()}", *TRAIN, "--max-epoch=1", f"--output_dir={out}",
                       *TINY)
        outcome = judge(name, what, run.returncode, run.stdout, run.stderr, str(out))
        partial = sorted(p.name for p in mount.iterdir() if p.name.endswith(".tmp"))
        if partial:
            outcome.note = f"left behind: {', '.join(partial)}"
        return outcome
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def _text_as_checkpoint(path: Path, rng: random.Random) -> None:
    path.write_text("this is not a checkpoint\n")


CASES: Dict[str, Callable[[Bench], Outcome]] = dict([
    _launch_flag("flag-batch-size-0", "train_full_1p.sh --batch-size=0", "--batch-size=0"),
    _launch_flag("flag-max-epoch-minus-1", "train_full_1p.sh --max-epoch=-1", "--max-epoch=-1"),
    _train_on_broken_data("data-train-bin-truncated", "input0/train.bin cut to half", "input0/train.bin", truncate),
    _train_on_broken_data("data-train-idx-empty", "input0/train.idx emptied", "input0/train.idx", empty),
    _train_on_broken_data("data-valid-idx-flipped", "64 bytes flipped in input0/valid.idx", "input0/valid.idx",
                          lambda p: flip_bytes(p, random.Random(1), where=0.0)),
    _train_on_broken_data("data-dict-truncated", "input0/dict.txt cut to a tenth", "input0/dict.txt",
                          lambda p: truncate(p, 0.1)),
    _train_on_broken_data("data-label-dict-empty", "label/dict.txt emptied", "label/dict.txt", empty),
    _resume_broken_checkpoint("ckpt-last-flipped-resume", "64 bytes flipped in the middle of checkpoint_last.pt, "
                              "resumed", flip_bytes),
    _resume_broken_checkpoint("ckpt-last-truncated-resume", "checkpoint_last.pt cut to half, resumed",
                              lambda p, rng: truncate(p)),
    _load_broken_checkpoint("ckpt-flipped-evaluate", "64 bytes flipped in checkpoint_best.pt, fairseq-npu-evaluate",
                            "fairseq_npu.cli.evaluate", flip_bytes),
    _load_broken_checkpoint("ckpt-empty-predict", "empty checkpoint_best.pt, fairseq-npu-predict",
                            "fairseq_npu.cli.predict", lambda p, rng: empty(p)),
    _load_broken_checkpoint("ckpt-text-evaluate", "a text file as --path, fairseq-npu-evaluate",
                            "fairseq_npu.cli.evaluate", _text_as_checkpoint),
    _preprocess_broken_tsv("tsv-train-flipped", "64 bytes flipped in train.tsv, preprocessed", "train.tsv",
                           lambda p: flip_bytes(p, random.Random(2))),
    _preprocess_broken_tsv("tsv-dev-truncated", "dev.tsv cut mid-row, preprocessed", "dev.tsv",
                           lambda p: truncate(p, 0.503)),
    _preprocess_broken_tsv("tsv-train-empty", "empty train.tsv, preprocessed", "train.tsv", empty),
    _submission_from_test_rows("test-rows-shuffled", "test.tsv rows shuffled (index kept), predicted",
                               lambda rows, rng: rng.sample(rows, len(rows)), must_refuse=False),
    _submission_from_test_rows("test-row-deleted", "one test.tsv row deleted by hand, predicted",
                               lambda rows, rng: rows[:3] + rows[4:], must_refuse=True),
    _kill_during("sigterm-script-training", "SIGTERM to train_full_1p.sh at a random update",
                 '"num_updates": "{N}"', signal.SIGTERM, "script"),
    _kill_during("sigkill-script-training", "SIGKILL to train_full_1p.sh at a random update",
                 '"num_updates": "{N}"', signal.SIGKILL, "script"),
    _kill_during("sigkill-trainer-saving", "SIGKILL to the trainer as a checkpoint save starts",
                 "Saving checkpoint", signal.SIGKILL, "trainer"),
    _kill_during("sigkill-torchrun-agent", "SIGKILL to the torchrun agent of train_full_8p.sh --nproc=2",
                 '"num_updates": "{N}"', signal.SIGKILL, "agent", script="train_full_8p.sh", nproc=2),
    ("two-runs-one-folder", _two_runs_one_folder),
    ("diverged-lr-1e6", _diverged),
    ("env-cpu-malloc-bogus", _bad_env),
    ("resume-num-classes-3", _resume_other_classes),
    ("rerun-finished-folder", _rerun_finished),
    ("full-disk-checkpoints", _full_disk),
])


def markdown(outcomes: List[Outcome], seconds: float, work: Path) -> str:
    counts = {v: sum(o.verdict == v for o in outcomes) for v in VERDICTS}
    lines = [
        "# Failures: how each injected fault ends",
        "",
        "Generated by `python -m benchmarks.fault_injection --markdown docs/failures.md` (benchmarks/fault_injection.py"
        " says what each case does and what the verdicts mean). Tiny RoBERTa on cpu, the shipped scripts and CLIs.",
        "`honest`: a non-zero exit whose last line names the cause (or the right result at exit 0), no traceback, "
        "nothing left running. `WORK` is the scratch folder; a SIGKILLed script prints nothing, so its last line is "
        "the log's.",
        "",
        "Totals: " + ", ".join(f"{v} {n}" for v, n in counts.items() if n) + f" ({len(outcomes)} cases, "
        f"{seconds:.0f} s).",
        "",
        "| case | fault | exit code | last line | verdict |",
        "|---|---|---|---|---|",
    ]
    for o in outcomes:
        line = o.last_line.replace(str(work), "WORK")  # the scratch folder
        line = line if len(line) <= 160 else line[:157] + "..."
        line = line.replace("|", "\\|").replace("`", "'")
        verdict = f"{o.verdict} ({o.note})" if o.note else o.verdict
        lines.append(f"| `{o.case}` | {o.what} | {'' if o.exit_code is None else o.exit_code} | {line} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fault_injection", description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="", help=f"comma-separated subset of: {', '.join(CASES)}")
    parser.add_argument("--markdown", type=Path, help="write the table as a markdown page here")
    parser.add_argument("--workdir", type=Path, help="scratch folder (default: a temporary one, removed after)")
    parser.add_argument("--seed", type=int, default=1, help="the random points of the kills and byte flips")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.cases.split(",") if n.strip()] or list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--cases: unknown {', '.join(unknown)}")
    import tempfile

    work = args.workdir or Path(tempfile.mkdtemp(prefix="fault_injection."))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(work.resolve(), args.seed)
    started = time.monotonic()
    outcomes = []
    try:
        for name in names:
            t0 = time.monotonic()
            outcome = CASES[name](bench)
            outcomes.append(outcome)
            print(f"{name}: {outcome.verdict} (exit {outcome.exit_code}, {time.monotonic() - t0:.0f} s) "
                  f"{outcome.last_line[:140]}", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    page = markdown(outcomes, time.monotonic() - started, bench.work)
    print(page)
    if args.markdown:
        args.markdown.write_text(page, encoding="utf-8")
    return 0 if all(o.verdict in ("honest", "skipped") for o in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
