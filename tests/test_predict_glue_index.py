"""A submission keeps GLUE's row indices when preprocessing dropped rows (--skip-bad-rows), or is refused.

The real commands end to end on a tiny SST-2 folder: fairseq-npu-preprocess-glue --skip-bad-rows, fairseq-train
(one update of a tiny RoBERTa with the real GPT-2 vocabulary), fairseq-npu-predict.
"""

import logging
import os
from pathlib import Path

import pytest

from glue_tiny_data import tiny_roberta_args, train_in_process

SHARED = Path(os.environ.get("FAIRSEQ_NPU_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
GPT2 = SHARED / "vocab" / "gpt2_bpe"
TEST_ROWS = 10
BAD_ROWS = (3, 7)  # GLUE indices of test rows with an empty sentence: dropped by --skip-bad-rows


def _tsv(path: Path, header, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(map(str, r)) + "\n" for r in [header] + rows), encoding="utf-8")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    if not (GPT2 / "encoder.json").is_file():
        pytest.skip(f"GPT-2 BPE files not found at {GPT2}")
    from fairseq_npu.preprocess import glue

    root = tmp_path_factory.mktemp("glue_index")
    task = root / "glue" / "SST-2"
    words = ["good", "bad", "fine", "awful", "great", "dull", "nice", "poor"]
    _tsv(task / "train.tsv", ["sentence", "label"], [[f"a {w} movie", i % 2] for i, w in enumerate(words * 2)])
    _tsv(task / "dev.tsv", ["sentence", "label"], [[f"the {w} film", i % 2] for i, w in enumerate(words)])
    _tsv(task / "test.tsv", ["index", "sentence"],
         [[i, " " if i in BAD_ROWS else f"test sentence number {i} {words[i % 8]}"] for i in range(TEST_ROWS)])
    assert glue.main([str(root / "glue"), "SST-2", "--vocab-dir", str(GPT2), "--dest", str(root), "--workers", "1",
                      "--no-download", "--skip-bad-rows"]) == 0
    data = root / "SST-2-bin"
    args = tiny_roberta_args(data, "sentence_prediction_npu", ["--max-update", "1", "--save-dir", str(root / "ckpt")])
    train_in_process([a for a in args if a != "--no-save"])
    return data, root / "ckpt" / "checkpoint_last.pt"


def _predict(argv, capsys):
    from fairseq_npu.cli.predict import cli_main

    level = logging.getLogger().level
    try:
        code = cli_main(argv)
    finally:
        logging.getLogger().setLevel(level)
    out, err = capsys.readouterr()
    return code, out.strip(), err.strip()


def _positions_in_order(data, checkpoint):
    """The label the model gives each binarized test row, by dataset position (one sentence at a time)."""
    import torch
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task([str(checkpoint)],
                                                                       arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset("test")
    ds, labels = task.dataset("test"), task.label_dictionary
    with torch.no_grad():
        out = [model(ds[i]["net_input.src_tokens"][None], features_only=True,
                     classification_head_name="sentence_classification_head")[0][0] for i in range(len(ds))]
    return [labels[int(o.argmax()) + labels.nspecial] for o in out]


def test_dropped_test_rows_refuse_the_submission(trained, tmp_path, capsys):
    data, checkpoint = trained
    code, out, err = _predict([str(data), "--path", str(checkpoint), "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err.splitlines()[-1] == (
        f"fairseq-npu-predict: error: {data} test: 2 of 10 GLUE rows have no prediction, preprocessing dropped "
        "them (indices 3, 7); fix them and preprocess again, or pass --allow-missing-rows to write the file without "
        "them")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_allow_missing_rows_keeps_the_glue_indices(trained, tmp_path, capsys):
    data, checkpoint = trained
    code, out, err = _predict([str(data), "--path", str(checkpoint), "--output-dir", str(tmp_path),
                               "--allow-missing-rows"], capsys)
    path = tmp_path / "SST-2.tsv"
    assert code == 0 and out == f"wrote 8 predictions to {path}"
    assert err.splitlines()[-1] == (f"fairseq-npu-predict: warning: {path} lacks 2 of 10 GLUE rows, dropped at "
                                    "preprocessing (indices 3, 7)")
    lines = path.read_text().splitlines()
    assert lines[0] == "index\tprediction"
    body = [line.split("\t") for line in lines[1:]]
    kept = [i for i in range(TEST_ROWS) if i not in BAD_ROWS]
    assert [int(i) for i, _ in body] == kept  # 0 1 2 4 5 6 8 9: not renumbered 0..7
    assert [p for _, p in body] == _positions_in_order(data, checkpoint)  # row k is GLUE row k's prediction


def test_split_skipped_at_preprocessing_is_named(trained, tmp_path, capsys):
    """A GLUE folder without test.tsv is preprocessed without its test split; predicting it says why it is absent."""
    from fairseq_npu.preprocess import glue

    data, checkpoint = trained
    source = data.parent / "glue"
    partial = tmp_path / "glue"
    (partial / "SST-2").mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (partial / "SST-2" / name).write_bytes((source / "SST-2" / name).read_bytes())
    assert glue.main([str(partial), "SST-2", "--vocab-dir", str(GPT2), "--dest", str(tmp_path), "--workers", "1",
                      "--no-download"]) == 0
    code, out, err = _predict([str(tmp_path / "SST-2-bin"), "--path", str(checkpoint), "--output-dir",
                               str(tmp_path / "sub")], capsys)
    assert (code, err.splitlines()[-1]) == (
        2, f"fairseq-npu-predict: error: {tmp_path}/SST-2-bin: no test split: test.tsv was missing when the task "
           "was preprocessed")
    assert not (tmp_path / "sub").exists()


def test_manifest_without_row_indices(tmp_path):
    """Folders from fairseq's script (no manifest) map row i to index i; an older manifest that lost rows is refused."""
    import json

    from fairseq_npu.preprocess.manifest import glue_indices

    assert glue_indices(tmp_path, "test", 3) == ([0, 1, 2], 3, [])
    manifest = {"splits": {"test": {"rows": 3, "skipped": {}, "dropped_malformed": 0}}}
    (tmp_path / "preprocess.json").write_text(json.dumps(manifest))
    assert glue_indices(tmp_path, "test", 3) == ([0, 1, 2], 3, [])
    manifest["splits"]["test"]["skipped"] = {"empty sentence": 1}
    (tmp_path / "preprocess.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError) as err:
        glue_indices(tmp_path, "test", 3)
    assert str(err.value) == (f"{tmp_path}/preprocess.json: 1 rows of split 'test' were dropped at preprocessing "
                              "and this manifest does not say which; preprocess the task again")
    manifest["splits"]["test"].update(source_rows=4, dropped_indices=[2])
    (tmp_path / "preprocess.json").write_text(json.dumps(manifest))
    assert glue_indices(tmp_path, "test", 3) == ([0, 1, 3], 4, [2])
    with pytest.raises(ValueError, match="has 3 rows there but 5 in the dataset"):
        glue_indices(tmp_path, "test", 5)


def _preprocess_test_rows(root: Path, source: Path, rows, capsys):
    """The trained task's train/dev with another test.tsv (header ``index sentence``); (exit code, error line)."""
    from fairseq_npu.preprocess import glue

    task = root / "glue" / "SST-2"
    task.mkdir(parents=True)
    for name in ("train.tsv", "dev.tsv"):
        (task / name).write_bytes((source / "SST-2" / name).read_bytes())
    _tsv(task / "test.tsv", ["index", "sentence"], rows)
    capsys.readouterr()
    code = glue.main([str(root / "glue"), "SST-2", "--vocab-dir", str(GPT2), "--dest", str(root), "--workers", "1",
                      "--no-download"])
    err = capsys.readouterr().err.strip()
    return code, err.splitlines()[-1] if err else "", root / "SST-2-bin", task / "test.tsv"


def test_test_rows_out_of_order_are_written_in_index_order(trained, tmp_path, capsys, monkeypatch):
    """The file's rows in another order, each keeping its index: the submission follows the index column. Each
    prediction is replaced by its dataset position (a one-update model predicts one class for every row), so the
    file shows which row each index got."""
    from fairseq_npu.cli import predict

    data, checkpoint = trained
    order = [4, 0, 7, 2, 9, 1, 6, 3, 8, 5]
    code, _, shuffled, _ = _preprocess_test_rows(tmp_path, data.parent / "glue",
                                                 [[i, f"test sentence number {i} good"] for i in order], capsys)
    assert code == 0
    real = predict.predictions
    monkeypatch.setattr(predict, "predictions", lambda *a: {pos: f"row{pos}" for pos in real(*a)})
    code, out, err = _predict([str(shuffled), "--path", str(checkpoint), "--output-dir", str(tmp_path / "sub")],
                              capsys)
    assert code == 0, err
    lines = (tmp_path / "sub" / "SST-2.tsv").read_text().splitlines()
    assert lines[1:] == [f"{i}\trow{order.index(i)}" for i in range(TEST_ROWS)]


def test_a_test_row_deleted_by_hand_is_missing_not_renumbered(trained, tmp_path, capsys):
    data, checkpoint = trained
    rows = [[i, f"test sentence number {i} good"] for i in range(TEST_ROWS) if i != 5]
    code, _, gap, tsv = _preprocess_test_rows(tmp_path, data.parent / "glue", rows, capsys)
    assert code == 0
    code, out, err = _predict([str(gap), "--path", str(checkpoint), "--output-dir", str(tmp_path / "sub")], capsys)
    assert (code, out) == (2, "")
    assert err.splitlines()[-1] == (
        f"fairseq-npu-predict: error: {gap} test: 1 of 10 GLUE rows have no prediction, the index column of "
        f"{tsv.resolve()} lacks indices 5; fix them and preprocess again, or pass --allow-missing-rows to write the "
        "file without them")
    assert not (tmp_path / "sub").exists()


@pytest.mark.parametrize("rows,line", [
    ([[0, "a good one"], [1, "a bad one"], [1, "a fine one"]],
     "test.tsv:4: index 1 in column 1 again (first on line 3); GLUE's index column numbers each row once"),
    ([[0, "a good one"], ["", "a bad one"]],
     "test.tsv:3: index '' in column 1 is not a whole number >= 0; GLUE's submission is numbered by this column"),
    ([[0, "a good one"], ["x7", "a bad one"]],
     "test.tsv:3: index 'x7' in column 1 is not a whole number >= 0; GLUE's submission is numbered by this column"),
])
def test_an_index_column_with_duplicates_or_holes_is_refused(trained, tmp_path, capsys, rows, line):
    data, _ = trained
    code, err, _, tsv = _preprocess_test_rows(tmp_path, data.parent / "glue", rows, capsys)
    assert (code, err) == (2, f"error: {tsv.parent}/{line}")
