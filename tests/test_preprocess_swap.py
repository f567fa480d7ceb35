"""A preprocessing run killed while it puts TASK-bin in place: TASK-bin is never lost, the next run cleans up.

The preprocessing command (fairseq-npu-preprocess-glue's main) runs in a forked child that SIGKILLs itself at one
point of the swap; the parent then looks at DEST and runs the command again.
"""

import os
import signal
from pathlib import Path

import pytest

from fairseq_npu.preprocess import glue, output_swap

SHARED = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GPT2 = SHARED / "vocab" / "gpt2_bpe"
HEAD = "sentence\tlabel\n"


@pytest.fixture
def glue_dir(tmp_path):
    if not (GPT2 / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2}")
    task = tmp_path / "glue" / "SST-2"
    task.mkdir(parents=True)
    (task / "train.tsv").write_text(HEAD + "a good movie\t1\na bad movie\t0\n")
    (task / "dev.tsv").write_text(HEAD + "a fine dev sentence\t1\n")
    (task / "test.tsv").write_text("index\tsentence\n0\ta test sentence\n")
    return tmp_path / "glue"


def preprocess(glue_dir: Path, dest: Path) -> int:
    return glue.main([str(glue_dir), "SST-2", "--vocab-dir", str(GPT2), "--dest", str(dest), "--workers", "1",
                      "--no-download"])


def killed_run(glue_dir: Path, dest: Path, inject) -> None:
    """Run the command in a child that ``inject`` (given the output_swap module) arranges to SIGKILL itself."""
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        try:
            inject(output_swap)
            preprocess(glue_dir, dest)
        finally:
            os._exit(3)  # the kill point was not reached
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status


def die():
    os.kill(os.getpid(), signal.SIGKILL)


def train_rows(bin_dir: Path) -> int:
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    return len(MMapIndexedDataset(str(bin_dir / "input0" / "train")))


def second_version(glue_dir: Path) -> None:
    (glue_dir / "SST-2" / "train.tsv").write_text(HEAD + "a good movie\t1\na bad movie\t0\none more\t1\n")


def test_kill_before_the_swap_leaves_the_old_output_and_the_next_run_removes_the_temp_folder(glue_dir, tmp_path):
    dest = tmp_path / "out"
    assert preprocess(glue_dir, dest) == 0
    second_version(glue_dir)

    def inject(swap):
        swap.swap_into_place = lambda tmp, final: die()

    killed_run(glue_dir, dest, inject)
    names = sorted(p.name for p in dest.iterdir())
    assert names[1:] == ["SST-2-bin"] and names[0].startswith(".SST-2-bin.tmp-")  # complete but never swapped in
    assert train_rows(dest / "SST-2-bin") == 2
    assert preprocess(glue_dir, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]
    assert train_rows(dest / "SST-2-bin") == 3


def test_kill_right_after_the_atomic_exchange(glue_dir, tmp_path):
    dest = tmp_path / "out"
    assert preprocess(glue_dir, dest) == 0
    second_version(glue_dir)

    def inject(swap):
        exchange = swap._exchange

        def exchange_then_die(a, b):
            if not exchange(a, b):
                os._exit(4)  # no renameat2 here: nothing to test
            die()

        swap._exchange = exchange_then_die

    pid_status = None
    try:
        killed_run(glue_dir, dest, inject)
    except AssertionError as err:
        pid_status = err
    if pid_status is not None:
        pytest.skip("renameat2(RENAME_EXCHANGE) is not available on this system or file system")
    assert train_rows(dest / "SST-2-bin") == 3  # the new output is in place; the old one sits in the temp name
    assert len(list(dest.iterdir())) == 2
    assert preprocess(glue_dir, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]


def test_kill_between_the_two_renames_is_recovered_by_the_next_run(glue_dir, tmp_path):
    """Without renameat2: TASK-bin moved aside, the kill comes before the new one is renamed in."""
    dest = tmp_path / "out"
    assert preprocess(glue_dir, dest) == 0
    second_version(glue_dir)
    final = dest / "SST-2-bin"

    def inject(swap):
        replace = os.replace
        swap._exchange = lambda a, b: False

        def replace_or_die(src, dst):
            if Path(dst) == final:
                die()
            replace(src, dst)

        swap.os.replace = replace_or_die

    killed_run(glue_dir, dest, inject)
    names = sorted(p.name for p in dest.iterdir())
    assert "SST-2-bin" not in names and len(names) == 2
    assert [n[: len(".SST-2-bin.old-")] for n in names] == [".SST-2-bin.old-", ".SST-2-bin.tmp-"]
    # the next run restores the previous output first, even when it then fails on its own input
    (glue_dir / "SST-2" / "train.tsv").write_text(HEAD + "a good movie\t1\nno label\n")
    assert preprocess(glue_dir, dest) == 2
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]
    assert train_rows(final) == 2


def test_folders_of_live_runs_and_other_hosts_are_left_alone(glue_dir, tmp_path):
    dest = tmp_path / "out"
    dest.mkdir()
    live = dest / f".SST-2-bin.tmp-{output_swap._host()}-{os.getppid()}-abcd"  # the parent process: alive
    other_host = dest / ".SST-2-bin.old-elsewhere-12345"
    legacy = dest / ".SST-2-bin.tmp-k2j3h4"  # named by an older version: no owner, removed
    for p in (live, other_host, legacy):
        p.mkdir()
    assert preprocess(glue_dir, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == sorted([live.name, other_host.name, "SST-2-bin"])


def test_a_symlinked_task_bin_is_replaced_and_its_target_kept(glue_dir, tmp_path):
    dest, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    assert preprocess(glue_dir, elsewhere) == 0
    dest.mkdir()
    (dest / "SST-2-bin").symlink_to(elsewhere / "SST-2-bin")
    second_version(glue_dir)
    assert preprocess(glue_dir, dest) == 0
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]
    assert not (dest / "SST-2-bin").is_symlink() and train_rows(dest / "SST-2-bin") == 3
    assert train_rows(elsewhere / "SST-2-bin") == 2  # the link's target is not deleted
