"""GLUE preprocessing: task layouts (MNLI, QQP, QNLI, AX by hand-written files), bad input, atomic output, CLI.

RoBERTa cases use the real GPT-2 BPE files from ../shared/data and read their output back through fairseq's own
dataset and GPT-2 decoder, so a sentence in the wrong split, column or order fails.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fairseq_npu.preprocess import GlueInputError, glue, preprocess_task

SHARED = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GPT2 = SHARED / "vocab" / "gpt2_bpe"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def gpt2():
    if not (GPT2 / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2}")
    from fairseq.data.encoders.gpt2_bpe_utils import get_encoder

    return get_encoder(str(GPT2 / "encoder.json"), str(GPT2 / "vocab.bpe"))


def write_tsv(path: Path, rows, header=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = (["\t".join(header)] if header else []) + ["\t".join(map(str, r)) for r in rows]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def read_back(bin_dir: Path, sub: str, split: str, gpt2=None):
    """Sentences (decoded with the GPT-2 encoder) or symbols of one binarized split, via fairseq's reader."""
    from fairseq.data import Dictionary
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    d = Dictionary.load(str(bin_dir / sub / "dict.txt"))
    data = MMapIndexedDataset(str(bin_dir / sub / split))
    out = []
    for i in range(len(data)):
        ids = data[i].tolist()
        assert ids[-1] == d.eos()
        symbols = [d[t] for t in ids[:-1]]
        out.append(gpt2.decode([int(s) for s in symbols]) if gpt2 else " ".join(symbols))
    return out


# ---------------------------------------------------------------------------------------------------------------
# hand-written files in the layouts of the tasks missing from ../shared/data

MNLI_TRAIN_HEAD = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
                   "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]
MNLI_DEV_HEAD = MNLI_TRAIN_HEAD[:11] + ["label2", "label3", "label4", "label5", "gold_label"]


def mnli_row(i, a, b, *labels):
    return [i, 100 + i, f"{i}e", "fiction", "( x )", "( y )", "(ROOT x)", "(ROOT y)", a, b, *labels]


@pytest.fixture(scope="module")
def handwritten(tmp_path_factory, gpt2):
    root = tmp_path_factory.mktemp("layouts")
    g = root / "glue"
    write_tsv(g / "MNLI" / "train.tsv", [
        mnli_row(0, "The cat sat on the mat.", "A cat is sitting.", "entailment", "entailment"),
        mnli_row(1, "Héllo wörld — naïve café", "Nobody said hello.", "contradiction", "contradiction"),
        mnli_row(2, "It rained all day.", "The ground may be wet.", "neutral", "neutral"),
        mnli_row(3, "Two dogs run.", "Animals move.", "entailment", "entailment"),
    ], MNLI_TRAIN_HEAD)
    # label1 (column 11) disagrees with gold_label (column 16): the gold one must be used
    dev = [mnli_row(0, "Dev premise one.", "Dev hypothesis one.", "neutral", "neutral", "neutral", "neutral",
                    "neutral", "contradiction")]
    write_tsv(g / "MNLI" / "dev_matched.tsv", dev, MNLI_DEV_HEAD)
    write_tsv(g / "MNLI" / "dev_mismatched.tsv", [
        mnli_row(5, "Mismatched premise.", "Mismatched hypothesis.", "entailment", *["entailment"] * 5)], MNLI_DEV_HEAD)
    write_tsv(g / "MNLI" / "test_matched.tsv", [mnli_row(0, "Test m premise.", "Test m hypothesis.")],
              MNLI_TRAIN_HEAD[:10])
    write_tsv(g / "MNLI" / "test_mismatched.tsv", [mnli_row(0, "Test mm premise.", "Test mm hypothesis."),
                                                    mnli_row(1, "Second mm.", "Yes.")], MNLI_TRAIN_HEAD[:10])

    qqp_head = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(g / "QQP" / "train.tsv", [
        [0, 1, 2, "How do I learn Python?", "What is the best way to learn Python?", 1],
        [1, 3, 4, "Why is the sky blue?", "How far is the moon?", 0],
        [2, 5, 6, "A question with a tab", "split", "over", 0],  # 7 fields: dropped by fairseq's QQP rule
        [3, 7, 8, "Is this a duplicate?", "Is this one a duplicate?", 1],
    ], qqp_head)
    write_tsv(g / "QQP" / "dev.tsv", [[0, 1, 2, "Dev q1?", "Dev q2?", 0], [1, 2, 3, "only five fields", 1]], qqp_head)
    write_tsv(g / "QQP" / "test.tsv", [[0, "Test q1?", "Test q2?"]], ["id", "question1", "question2"])

    qnli_head = ["index", "question", "sentence", "label"]
    write_tsv(g / "QNLI" / "train.tsv", [[0, "What is it?", "It is a test.", "entailment"],
                                         [1, "Who wrote it?", "Nobody knows when.", "not_entailment"]], qnli_head)
    write_tsv(g / "QNLI" / "dev.tsv", [[0, "Dev question?", "Dev sentence.", "not_entailment"]], qnli_head)
    write_tsv(g / "QNLI" / "test.tsv", [[0, "Test question?", "Test sentence."]], qnli_head[:3])

    write_tsv(g / "diagnostic" / "diagnostic.tsv", [[0, "The diagnostic premise.", "Its hypothesis."]],
              ["index", "sentence1", "sentence2"])
    out = root / "out"
    bins = {t: preprocess_task(g, t, dest=out, vocab_dir=GPT2, workers=1, download=False)
            for t in ("QQP", "MNLI", "QNLI", "AX")}
    return bins


def test_mnli_layout(handwritten, gpt2):
    b = handwritten["MNLI"]
    assert read_back(b, "input0", "train", gpt2) == ["The cat sat on the mat.", "Héllo wörld — naïve café",
                                                      "It rained all day.", "Two dogs run."]
    assert read_back(b, "input1", "train", gpt2)[2] == "The ground may be wet."
    assert read_back(b, "input0", "valid", gpt2) == ["Dev premise one."]
    assert read_back(b, "input1", "valid1", gpt2) == ["Mismatched hypothesis."]
    assert read_back(b, "input0", "test", gpt2) == ["Test m premise."]
    assert read_back(b, "input1", "test1", gpt2) == ["Test mm hypothesis.", "Yes."]
    # label dictionary by train frequency (entailment 2, then ties alphabetical), padded to 8 as fairseq does
    assert (b / "label" / "dict.txt").read_text().splitlines()[:3] == ["entailment 2", "contradiction 1", "neutral 1"]
    assert read_back(b, "label", "train") == ["entailment", "contradiction", "neutral", "entailment"]
    assert read_back(b, "label", "valid") == ["contradiction"]  # gold_label (column 16), not label1
    assert read_back(b, "label", "valid1") == ["entailment"]
    assert not (b / "label" / "test.bin").exists()


def test_qqp_layout_and_malformed_rows(handwritten, gpt2):
    b = handwritten["QQP"]
    assert read_back(b, "input0", "train", gpt2) == ["How do I learn Python?", "Why is the sky blue?",
                                                      "Is this a duplicate?"]
    assert read_back(b, "input1", "train", gpt2)[2] == "Is this one a duplicate?"
    assert read_back(b, "label", "train") == ["1", "0", "1"]
    assert read_back(b, "input0", "valid", gpt2) == ["Dev q1?"]
    assert read_back(b, "input1", "test", gpt2) == ["Test q2?"]  # test columns 2, 3
    manifest = json.loads((b / "preprocess.json").read_text())
    assert manifest["splits"]["train"]["dropped_malformed"] == 1
    assert manifest["splits"]["valid"]["dropped_malformed"] == 1
    assert manifest["fairseq_train_args"] == "--init-token 0 --separator-token 2"


def test_qnli_and_ax_layouts(handwritten, gpt2):
    b = handwritten["QNLI"]
    assert read_back(b, "input0", "train", gpt2) == ["What is it?", "Who wrote it?"]
    assert read_back(b, "input1", "valid", gpt2) == ["Dev sentence."]
    assert read_back(b, "label", "valid") == ["not_entailment"]
    ax = handwritten["AX"]
    assert read_back(ax, "input0", "test", gpt2) == ["The diagnostic premise."]
    assert read_back(ax, "input1", "test", gpt2) == ["Its hypothesis."]
    # AX is predicted by an MNLI model: it gets MNLI's label dictionary (MNLI-bin was written first)
    assert (ax / "label" / "dict.txt").read_bytes() == (handwritten["MNLI"] / "label" / "dict.txt").read_bytes()
    assert sorted(p.name for p in ax.iterdir()) == ["input0", "input1", "label", "preprocess.json"]


def test_sentence_prediction_loads_the_output(handwritten):
    """Stock fairseq's sentence_prediction task reads the folder: <s> A </s> </s> B </s>, gold labels."""
    from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask

    cfg = SentencePredictionConfig(data=str(handwritten["MNLI"]), num_classes=3, init_token=0, separator_token=2,
                                   seed=1, regression_target=False, classification_head_name="head")
    task = SentencePredictionTask.setup_task(cfg)
    task.load_dataset("valid1")
    sample = task.dataset("valid1")[0]
    tokens = sample["net_input.src_tokens"].tolist()
    assert tokens[0] == 0 and tokens[-1] == 2 and tokens.count(2) == 3
    assert task.label_dictionary.string([sample["target"] + task.label_dictionary.nspecial]) == "entailment"


# ---------------------------------------------------------------------------------------------------------------
# bad input: clear message naming file and line, nothing that looks complete left behind


SST2_HEAD = ["sentence", "label"]


def sst2(root: Path, train_rows, raw_train: bytes = None):
    task = root / "glue" / "SST-2"
    if raw_train is None:
        write_tsv(task / "train.tsv", train_rows, SST2_HEAD)
    else:
        task.mkdir(parents=True)
        (task / "train.tsv").write_bytes(raw_train)
    write_tsv(task / "dev.tsv", [["a fine dev sentence", 1]], SST2_HEAD)
    write_tsv(task / "test.tsv", [[0, "a test sentence"]], ["index", "sentence"])
    return root / "glue"


GOOD = [["a good movie", 1], ["a bad movie", 0]]
BAD_CASES = {
    "wrong field count": (GOOD + [["an extra", "field", 1]], None, "train.tsv:4: expected 2 tab-separated fields, found 3"),
    "unknown label": (GOOD + [["a movie", "positive"]], None,
                      "train.tsv:4: unknown label 'positive' in column 2 (SST-2 labels: 0, 1)"),
    "missing label": (GOOD + [["a movie", ""]], None, "train.tsv:4: missing label in column 2"),
    "empty sentence": (GOOD + [["   ", 1]], None, "train.tsv:4: empty sentence in column 1"),
    "not UTF-8": (None, b"sentence\tlabel\na good movie\t1\nbad \xff movie\t0\nfine\t1\n",
                  "train.tsv:3: not UTF-8 (byte 0xff at column 5); fix the file or pass --skip-bad-rows"),
}


def assert_nothing_complete(dest: Path):
    assert not (dest / "SST-2-bin").exists()
    assert [p.name for p in dest.iterdir()] == [] if dest.exists() else True


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_row_is_an_error_naming_file_and_line(tmp_path, gpt2, case):
    rows, raw, message = BAD_CASES[case]
    glue_dir = sst2(tmp_path, rows, raw)
    dest = tmp_path / "out"
    with pytest.raises(GlueInputError) as err:
        preprocess_task(glue_dir, "SST-2", dest=dest, vocab_dir=GPT2, download=False)
    assert str(err.value) == f"{glue_dir / 'SST-2'}/{message}"
    assert_nothing_complete(dest)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_skip_bad_rows_skips_and_counts(tmp_path, gpt2, case):
    rows, raw, _ = BAD_CASES[case]
    glue_dir = sst2(tmp_path, rows, raw)
    out = preprocess_task(glue_dir, "SST-2", dest=tmp_path / "out", vocab_dir=GPT2, download=False,
                          skip_bad_rows=True)
    kept = read_back(out, "input0", "train", gpt2)
    assert kept == (["a good movie", "bad movie"][:1] + (["fine"] if raw else ["a bad movie"]))
    assert json.loads((out / "preprocess.json").read_text())["splits"]["train"]["skipped"] == {case: 1}


def test_stsb_score_out_of_range_and_regression_labels(tmp_path, gpt2):
    head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2", "score"]
    task = tmp_path / "glue" / "STS-B"
    row = lambda i, score: [i, "g", "f", "y", i, "s", "s", f"first {i}", f"second {i}", score]  # noqa: E731
    write_tsv(task / "train.tsv", [row(0, "5.000"), row(1, "3.800"), row(2, "0.000"), row(3, "1.667")], head)
    write_tsv(task / "dev.tsv", [row(0, "2.5")], head)
    write_tsv(task / "test.tsv", [row(0, "")[:9]], head[:9])
    out = preprocess_task(tmp_path / "glue", "STS-B", dest=tmp_path / "out", vocab_dir=GPT2, download=False)
    assert (out / "label" / "train.label").read_text() == "1\n0.76\n0\n0.3334\n"  # awk's print $1 / 5.0
    assert (out / "label" / "valid.label").read_text() == "0.5\n"
    write_tsv(task / "dev.tsv", [row(0, "5.5")], head)
    with pytest.raises(GlueInputError, match=r"dev.tsv:2: label '5.5' in column 10 is not a score in \[0, 5\]$"):
        preprocess_task(tmp_path / "glue", "STS-B", dest=tmp_path / "out", vocab_dir=GPT2, download=False)
    assert (out / "label" / "train.label").read_text() == "1\n0.76\n0\n0.3334\n"  # the earlier result is kept


def test_missing_split_and_missing_vocab_file(tmp_path, gpt2):
    glue_dir = sst2(tmp_path, GOOD)
    (glue_dir / "SST-2" / "dev.tsv").unlink()
    with pytest.raises(GlueInputError) as err:
        preprocess_task(glue_dir, "SST-2", dest=tmp_path / "out", vocab_dir=GPT2, download=False)
    assert str(err.value) == f"{glue_dir / 'SST-2' / 'dev.tsv'}: missing SST-2 split 'dev.tsv'"
    glue_dir = sst2(tmp_path / "b", GOOD)
    vocab = tmp_path / "vocab"
    vocab.mkdir()
    for name in ("encoder.json", "dict.txt"):
        (vocab / name).symlink_to(GPT2 / name)
    with pytest.raises(GlueInputError) as err:
        preprocess_task(glue_dir, "SST-2", dest=tmp_path / "out", vocab_dir=vocab, download=False)
    assert str(err.value) == (f"{vocab / 'vocab.bpe'}: missing GPT-2 BPE file (--vocab-dir needs encoder.json, "
                              "vocab.bpe, dict.txt; download disabled)")
    with pytest.raises(GlueInputError, match=r"missing SentencePiece model \(--spm-model\)$"):
        preprocess_task(glue_dir, "SST-2", dest=tmp_path / "out", model="albert", spm_model=vocab / "none.model")
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def test_failure_while_writing_keeps_the_previous_result(tmp_path, gpt2, monkeypatch):
    glue_dir = sst2(tmp_path, GOOD)
    dest = tmp_path / "out"
    first = preprocess_task(glue_dir, "SST-2", dest=dest, vocab_dir=GPT2, download=False)
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    write_tsv(glue_dir / "SST-2" / "train.tsv", GOOD + [["another movie", 1]], SST2_HEAD)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise KeyboardInterrupt  # as if the run was stopped half-way through writing
        return real(*args, **kwargs)

    real = glue.write_dataset
    monkeypatch.setattr(glue, "write_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        preprocess_task(glue_dir, "SST-2", dest=dest, vocab_dir=GPT2, download=False)
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]  # no half-written folder beside it
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before
    monkeypatch.setattr(glue, "write_dataset", real)
    preprocess_task(glue_dir, "SST-2", dest=dest, vocab_dir=GPT2, download=False)
    assert read_back(first, "input0", "train", gpt2)[-1] == "another movie"
    assert sorted(p.name for p in dest.iterdir()) == ["SST-2-bin"]


def test_cli_reports_errors_per_task_and_exit_status(tmp_path, capsys, gpt2):
    glue_dir = sst2(tmp_path, GOOD + [["x", "y", "z"]])
    write_tsv(glue_dir / "RTE" / "train.tsv", [[0, "A.", "B.", "entailment"], [1, "G.", "H.", "not_entailment"]],
              ["index", "sentence1", "sentence2", "label"])
    write_tsv(glue_dir / "RTE" / "dev.tsv", [[0, "C.", "D.", "not_entailment"]], ["index", "sentence1", "sentence2", "label"])
    write_tsv(glue_dir / "RTE" / "test.tsv", [[0, "E.", "F."]], ["index", "sentence1", "sentence2"])
    dest = tmp_path / "out"
    status = glue.main([str(glue_dir), "ALL", "--vocab-dir", str(GPT2), "--dest", str(dest), "--no-download"])
    captured = capsys.readouterr().err
    assert "Traceback" not in captured
    # only the command's own lines: log records of earlier tests' handlers may land in the same capture
    err = [line for line in captured.splitlines() if line.startswith("error:")]
    assert status == 2
    assert err == [f"error: {glue_dir / 'SST-2' / 'train.tsv'}:4: expected 2 tab-separated fields, found 3",
                   "error: 1 of 2 tasks failed: SST-2"]
    assert sorted(p.name for p in dest.iterdir()) == ["RTE-bin"]
    assert glue.main([str(glue_dir), "SST2", "--dest", str(dest), "--vocab-dir", str(GPT2), "--skip-bad-rows",
                      "--no-download"]) == 0
    assert glue.main([str(glue_dir), "MNLX", "--dest", str(dest)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: TASK: unknown GLUE task 'MNLX'")


def test_shell_script(tmp_path, gpt2):
    glue_dir = sst2(tmp_path, GOOD)
    proc = subprocess.run(["bash", str(REPO / "glue_scripts" / "preprocess_GLUE_tasks.sh"), str(glue_dir), "SST-2",
                           "--vocab-dir", str(GPT2), "--dest", str(tmp_path / "out"), "--workers", "1",
                           "--no-download"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHON=sys.executable))
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in (tmp_path / "out" / "SST-2-bin").iterdir()) == [
        "input0", "label", "preprocess.json"]
    proc = subprocess.run(["bash", str(REPO / "glue_scripts" / "preprocess_GLUE_tasks.sh")], capture_output=True,
                          text=True)
    assert proc.returncode == 2 and "GLUE_DIR TASK|ALL" in proc.stderr


# ---------------------------------------------------------------------------------------------------------------
# the fast GPT-2 BPE backend against fairseq's encoder


def test_tiktoken_backend_matches_fairseq_encoder(gpt2):
    """Every sentence of the real tasks the parity test does not cover, plus awkward hand-made text."""
    from fairseq.data import Dictionary

    from fairseq_npu.preprocess.gpt2_bpe import Gpt2BpeEncoder

    sentences = []
    for rel in ("WNLI/train.tsv", "WNLI/dev.tsv", "WNLI/test.tsv", "diagnostic/diagnostic.tsv", "QNLI/dev.tsv"):
        for line in (SHARED / "glue" / rel).read_text(encoding="utf-8").split("\n")[1:]:
            sentences += [f.strip() for f in line.split("\t")[1:3] if f.strip()]
    sentences += ["don't 'll 're've  spaced   out", "tabs\tand\u00a0nbsp\u2003em", "emoji 😀 and 中文 and العربية",
                  "numbers 1,000.5 and 3.14e10", "<|endoftext|> is plain text", "x\ry", "trailing dots...",
                  "\u0301combining first", "\x1ccontrol\x1f"]
    assert len(sentences) > 6000
    d = Dictionary.load(str(GPT2 / "dict.txt"))
    fast = Gpt2BpeEncoder(GPT2 / "encoder.json", GPT2 / "vocab.bpe", d, backend="tiktoken", workers=2)
    assert fast.backend == "tiktoken"
    ids, sizes = fast.encode(sentences)
    expected = [[d.index(str(t)) for t in gpt2.encode(s)] + [d.eos()] for s in sentences]
    assert sizes.tolist() == [len(e) for e in expected]
    assert ids.tolist() == [t for e in expected for t in e]
    ref = Gpt2BpeEncoder(GPT2 / "encoder.json", GPT2 / "vocab.bpe", d, backend="fairseq", workers=1)
    ref_ids, ref_sizes = ref.encode(sentences[:500])
    assert np.array_equal(ref_sizes, sizes[:500]) and np.array_equal(ref_ids, ids[: int(sizes[:500].sum())])
