"""Input that used to pass preprocessing and fail later (or with a traceback) stops it with one line, exit 2.

Label sets that break training only at the first validation, empty splits, STS-B scores that are not numbers,
a vocabulary that is not GPT-2's, an unwritable --dest; and partial task folders (a missing test split is skipped,
train and dev stay required). Run through glue_scripts/preprocess_GLUE_tasks.sh once, the rest through the same
command's main() in this process.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from fairseq_npu.preprocess import glue

SHARED = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GPT2 = SHARED / "vocab" / "gpt2_bpe"
REPO = Path(__file__).resolve().parents[1]

PAIR_HEAD = ["index", "sentence1", "sentence2", "label"]
STSB_HEAD = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
MRPC_HEAD = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]


@pytest.fixture(autouse=True)
def gpt2():
    if not (GPT2 / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2}")


def tsv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in ([header] if header else []) + rows),
                    encoding="utf-8")


def stsb_row(i, score):
    return [i, "g", "f", "y", i, "s", "s", f"first {i}", f"second {i}", score]


def sst2(glue_dir: Path) -> Path:
    task = glue_dir / "SST-2"
    tsv(task / "train.tsv", ["sentence", "label"], [["a good movie", 1], ["a bad movie", 0]])
    tsv(task / "dev.tsv", ["sentence", "label"], [["a fine dev sentence", 1]])
    tsv(task / "test.tsv", ["index", "sentence"], [[0, "a test sentence"]])
    return glue_dir


def run_main(argv, capsys):
    code = glue.main(argv)
    captured = capsys.readouterr()
    return code, [line for line in captured.err.splitlines() if line.startswith("error:")]


def test_late_failing_label_sets_and_partial_folders_through_the_shell_script(tmp_path):
    g = tmp_path / "glue"
    # RTE: a dev label train never has (was: <unk> and a warning, then IndexError at the first validation)
    tsv(g / "RTE" / "train.tsv", PAIR_HEAD, [[0, "A.", "B.", "entailment"], [1, "C.", "D.", "entailment"]])
    tsv(g / "RTE" / "dev.tsv", PAIR_HEAD, [[0, "E.", "F.", "entailment"], [1, "G.", "H.", "not_entailment"]])
    tsv(g / "RTE" / "test.tsv", PAIR_HEAD[:3], [[0, "I.", "J."]])
    # SST-2: a header-only train.tsv (was: an empty split, then `cannot mmap an empty file` in fairseq-train)
    sst2(g)
    tsv(g / "SST-2" / "train.tsv", ["sentence", "label"], [])
    # STS-B: a score that is not a number
    tsv(g / "STS-B" / "train.tsv", STSB_HEAD, [stsb_row(0, "4.0"), stsb_row(1, "nan")])
    tsv(g / "STS-B" / "dev.tsv", STSB_HEAD, [stsb_row(0, "2.5")])
    tsv(g / "STS-B" / "test.tsv", STSB_HEAD[:9], [stsb_row(0, "")[:9]])
    # MRPC without test.tsv: preprocessed, the test split skipped with a notice
    tsv(g / "MRPC" / "train.tsv", MRPC_HEAD, [[1, 1, 2, "Same thing.", "The same thing."], [0, 3, 4, "Yes.", "No."]])
    tsv(g / "MRPC" / "dev.tsv", MRPC_HEAD, [[1, 5, 6, "Dev one.", "Dev two."]])
    # AX has only its test split: a folder without diagnostic.tsv is still an error
    (g / "diagnostic").mkdir()
    dest = tmp_path / "out"
    proc = subprocess.run(["bash", str(REPO / "glue_scripts" / "preprocess_GLUE_tasks.sh"), str(g), "ALL",
                           "--vocab-dir", str(GPT2), "--dest", str(dest), "--workers", "1", "--no-download"],
                          capture_output=True, text=True, env=dict(os.environ, PYTHON=sys.executable))
    lines = proc.stderr.splitlines()
    assert proc.returncode == 2
    assert [line for line in lines if line.startswith("error:")] == [
        f"error: {g}/RTE/dev.tsv:3: label 'not_entailment' never occurs in train.tsv, so the model has no class "
        "for it (train labels: entailment)",
        f"error: {g}/STS-B/train.tsv:3: label 'nan' in column 10 is not a score in [0, 5]",
        f"error: {g}/SST-2/train.tsv:1: only a header line, no data rows; the train split would be empty",
        f"error: {g}/diagnostic/diagnostic.tsv: missing AX split 'diagnostic.tsv'",
        "error: 4 of 5 tasks failed: RTE, STS-B, SST-2, AX",
    ]
    assert "Traceback" not in proc.stderr
    notices = [line for line in lines if "test.tsv" in line and "error" not in line]
    assert len(notices) == 1 and notices[0].endswith(
        f"| INFO | fairseq_npu.preprocess.glue | MRPC: no test.tsv in {g}/MRPC; the test split is skipped "
        "(no predictions for it)")
    assert sorted(p.name for p in dest.iterdir()) == ["MRPC-bin"]
    assert sorted(p.name for p in (dest / "MRPC-bin" / "input0").iterdir()) == [
        "dict.txt", "train.bin", "train.idx", "valid.bin", "valid.idx"]
    assert json.loads((dest / "MRPC-bin" / "preprocess.json").read_text())["missing_splits"] == {"test": "test.tsv"}


@pytest.mark.parametrize("score", ["inf", "abc", "-0.5", "5.01", "1e999", "NaN"])
def test_stsb_scores_outside_0_to_5_are_errors(tmp_path, capsys, score):
    g = tmp_path / "glue"
    tsv(g / "STS-B" / "train.tsv", STSB_HEAD, [stsb_row(0, "4.0"), stsb_row(1, "0.5")])
    tsv(g / "STS-B" / "dev.tsv", STSB_HEAD, [stsb_row(0, "2.5"), stsb_row(1, score)])
    tsv(g / "STS-B" / "test.tsv", STSB_HEAD[:9], [stsb_row(0, "")[:9]])
    code, errors = run_main([str(g), "STS-B", "--vocab-dir", str(GPT2), "--dest", str(tmp_path / "out"),
                             "--no-download"], capsys)
    assert (code, errors) == (2, [f"error: {g}/STS-B/dev.tsv:3: label {score!r} in column 10 is not a score in "
                                  "[0, 5]"])


def test_skip_bad_rows_drops_dev_rows_with_labels_train_lacks(tmp_path, capsys):
    g = tmp_path / "glue"
    tsv(g / "RTE" / "train.tsv", PAIR_HEAD, [[0, "A.", "B.", "entailment"]])
    tsv(g / "RTE" / "dev.tsv", PAIR_HEAD, [[0, "E.", "F.", "not_entailment"], [1, "G.", "H.", "entailment"]])
    code, _ = run_main([str(g), "RTE", "--vocab-dir", str(GPT2), "--dest", str(tmp_path / "out"), "--no-download",
                        "--skip-bad-rows"], capsys)
    assert code == 0
    manifest = json.loads((tmp_path / "out" / "RTE-bin" / "preprocess.json").read_text())
    assert manifest["splits"]["valid"]["skipped"] == {"label not in train": 1}
    assert manifest["splits"]["valid"]["dropped_indices"] == [0]
    assert manifest["num_classes"] == 1  # what the label dictionary holds, not RTE's 2
    # every dev row dropped: an empty split, an error
    tsv(g / "RTE" / "dev.tsv", PAIR_HEAD, [[0, "E.", "F.", "not_entailment"]])
    code, errors = run_main([str(g), "RTE", "--vocab-dir", str(GPT2), "--dest", str(tmp_path / "out"),
                             "--no-download", "--skip-bad-rows"], capsys)
    assert (code, errors) == (2, [f"error: {g}/RTE/dev.tsv: none of its 1 data rows was kept (1 label not in "
                                  "train); the valid split would be empty"])


def _vocab(tmp_path: Path, **replace) -> Path:
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):
        if name in replace:
            (vocab / name).write_bytes(replace[name])
        else:
            shutil.copyfile(GPT2 / name, vocab / name)
    return vocab


def test_encoder_json_that_is_not_gpt2s(tmp_path, capsys):
    g = sst2(tmp_path / "glue")
    vocab = _vocab(tmp_path, **{"encoder.json": b'{"a": 1}'})  # valid JSON (was: KeyError 'Ġgood' traceback)
    code, errors = run_main([str(g), "SST-2", "--vocab-dir", str(vocab), "--no-download",
                             "--dest", str(tmp_path / "out")], capsys)
    assert (code, errors) == (2, [f"error: {vocab}/encoder.json: not GPT-2's encoder.json (no id for 255 of the "
                                  "256 byte symbols, e.g. '!')"])
    (vocab / "encoder.json").write_text("[1, 2]")
    code, errors = run_main([str(g), "SST-2", "--vocab-dir", str(vocab), "--no-download",
                             "--dest", str(tmp_path / "out")], capsys)
    assert (code, errors) == (2, [f"error: {vocab}/encoder.json: not GPT-2's encoder.json (expected a JSON object "
                                  "of token -> integer id)"])
    assert not (tmp_path / "out" / "SST-2-bin").exists()


def test_binary_dict_txt(tmp_path, capsys):
    g = sst2(tmp_path / "glue")
    vocab = _vocab(tmp_path, **{"dict.txt": b"13 850314647\n\x80\x81\x00\xff binary\n"})
    code, errors = run_main([str(g), "SST-2", "--vocab-dir", str(vocab), "--no-download",
                             "--dest", str(tmp_path / "out")], capsys)
    assert (code, errors) == (2, [f"error: {vocab}/dict.txt:2: not a fairseq dict.txt (byte 0x80 is not UTF-8 "
                                  "text)"])


def _main_as_nobody(argv):
    """glue.main(argv) in a forked child running as user nobody (root may write anywhere); (exit code, errors)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 3
        try:
            os.close(read)
            os.setgid(65534)
            os.setuid(65534)
            sys.stderr = os.fdopen(write, "w")
            code = glue.main(argv)
            sys.stderr.flush()
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as f:
        err = f.read()
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), [line for line in err.splitlines() if line.startswith("error:")]


def test_unwritable_dest(tmp_path, capsys):
    g = sst2(tmp_path / "glue")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, errors = run_main([str(g), "SST-2", "--vocab-dir", str(GPT2), "--no-download",
                             "--dest", str(blocker / "out")], capsys)
    assert (code, errors) == (2, [f"error: --dest {blocker}/out: cannot write there (Not a directory)"])
    shared = Path(tempfile.mkdtemp())  # readable by every user, unlike pytest's tmp_path
    try:
        shared.chmod(0o755)
        g = sst2(shared / "glue")
        read_only = shared / "read_only"
        read_only.mkdir(mode=0o555)
        read_only.chmod(0o555)
        argv = [str(g), "SST-2", "--vocab-dir", str(GPT2), "--no-download", "--dest", str(read_only)]
        expected = (2, [f"error: --dest {read_only}: cannot write there (Permission denied)"])
        if os.geteuid() == 0:
            assert _main_as_nobody(argv) == expected
        else:
            assert run_main(argv, capsys) == expected
        assert list(read_only.iterdir()) == []
    finally:
        shutil.rmtree(shared)
