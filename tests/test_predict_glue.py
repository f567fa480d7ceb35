"""fairseq-npu-predict and fairseq-npu-evaluate on SST-2- and STS-B-shaped checkpoints: rows, order, format."""

import logging

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score

from glue_tiny_data import label_strings, make_glue_dir, tiny_roberta_args, train_in_process


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("predict")
    sst2 = make_glue_dir(root / "SST-2-bin", {"train": 48, "valid": 37, "test": 29}, seed=1)
    stsb = make_glue_dir(root / "STS-B-bin", {"train": 48, "valid": 41, "test": 23}, pair=True, regression=True,
                         seed=2)
    for data, extra in ((sst2, []), (stsb, ["--regression-target", "--num-classes", "1"])):
        args = tiny_roberta_args(data, "sentence_prediction_npu", [
            "--max-epoch", "2", "--save-dir", str(data / "ckpt"), "--no-epoch-checkpoints", *extra])
        train_in_process([a for a in args if a != "--no-save"])  # these runs keep their checkpoints
    return {"SST-2": sst2, "STS-B": stsb}


def _cli(main, argv, capsys):
    root = logging.getLogger()
    level = root.level
    try:
        code = main(argv)
    finally:
        root.setLevel(level)  # the commands quiet the root logger
    out, err = capsys.readouterr()
    return code, out, err


def _one_by_one(data, split):
    """Model output for each sentence of ``split`` run alone (batch of 1), in line order."""
    from fairseq import checkpoint_utils

    models, _cfg, task = checkpoint_utils.load_model_ensemble_and_task(
        [str(data / "ckpt" / "checkpoint_last.pt")], arg_overrides={"data": str(data)})
    model = models[0].eval()
    task.load_dataset(split)
    ds = task.dataset(split)
    outs = []
    with torch.no_grad():
        for i in range(len(ds)):
            tokens = ds[i]["net_input.src_tokens"][None]
            out, _ = model(tokens, features_only=True, classification_head_name="sentence_classification_head")
            outs.append(out[0])
    return torch.stack(outs), task


@pytest.mark.parametrize("split,rows", [("valid", 37), ("test", 29)])
def test_sst2_prediction_file(checkpoints, tmp_path, capsys, split, rows):
    from fairseq_npu.cli.predict import cli_main

    data = checkpoints["SST-2"]
    code, out, err = _cli(cli_main, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt"), "--split",
                                     split, "--output-dir", str(tmp_path), "--batch-size", "4"], capsys)
    assert code == 0, err
    name = "SST-2.tsv" if split == "test" else "SST-2.valid.tsv"
    path = tmp_path / name
    assert out.strip() == f"wrote {rows} predictions to {path}"
    lines = path.read_text().split("\n")
    assert lines[0] == "index\tprediction" and lines[-1] == ""
    body = [line.split("\t") for line in lines[1:-1]]
    assert [int(i) for i, _ in body] == list(range(rows))
    outputs, task = _one_by_one(data, split)
    labels = task.label_dictionary
    expected = [labels[int(c) + labels.nspecial] for c in outputs.argmax(-1)]
    assert [p for _, p in body] == expected  # row i is sentence i, as a label string
    assert set(expected) <= {"0", "1"}


@pytest.mark.parametrize("split,rows", [("valid", 41), ("test", 23)])
def test_stsb_prediction_file_is_scaled_by_5(checkpoints, tmp_path, capsys, split, rows):
    from fairseq_npu.cli.predict import cli_main

    data = checkpoints["STS-B"]
    out_file = tmp_path / "sub" / "stsb.tsv"
    code, _out, err = _cli(cli_main, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt"), "--split",
                                      split, "--output-file", str(out_file)], capsys)
    assert code == 0, err
    lines = out_file.read_text().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == rows + 1
    assert [int(line.split("\t")[0]) for line in lines[1:]] == list(range(rows))
    got = np.array([float(line.split("\t")[1]) for line in lines[1:]])
    outputs, _ = _one_by_one(data, split)
    np.testing.assert_allclose(got, 5 * outputs[:, 0].numpy(), atol=5e-4)  # written with 3 decimals


def test_evaluate_prints_official_metrics(checkpoints, capsys):
    from fairseq_npu.cli.evaluate import cli_main

    data = checkpoints["STS-B"]
    code, out, err = _cli(cli_main, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt")], capsys)
    assert code == 0, err
    outputs, _ = _one_by_one(data, "valid")
    targets = np.array([float(x) for x in label_strings(data, "valid")], dtype=np.float32).astype(np.float64)
    p = outputs[:, 0].numpy().astype(np.float64)
    pearson, spearman = 100 * pearsonr(p, targets)[0], 100 * spearmanr(p, targets)[0]
    lines = out.splitlines()
    assert lines[0] == "task STS-B, split valid, 41 sentences"
    # batched vs one-by-one forward passes differ in the last float32 bits
    assert lines[1].startswith("pearson ") and float(lines[1].split()[1]) == pytest.approx(pearson, abs=2e-3)
    assert lines[2].startswith("spearman ") and float(lines[2].split()[1]) == pytest.approx(spearman, abs=2e-3)
    assert lines[3].startswith("glue ") and lines[3].endswith(" (pearson/spearman)")
    assert float(lines[3].split()[1]) == pytest.approx((pearson + spearman) / 2, abs=2e-3)

    data = checkpoints["SST-2"]
    code, out, err = _cli(cli_main, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt"), "--json"],
                          capsys)
    assert code == 0, err
    import json

    result = json.loads(out)
    outputs, task = _one_by_one(data, "valid")
    labels = task.label_dictionary
    preds = [labels[int(c) + labels.nspecial] for c in outputs.argmax(-1)]
    assert result["task"] == "SST-2" and result["metric"] == "accuracy" and result["sentences"] == 37
    assert result["glue"] == pytest.approx(100 * accuracy_score(label_strings(data, "valid"), preds), abs=1e-9)


def test_clear_errors(checkpoints, tmp_path, capsys):
    from fairseq_npu.cli.evaluate import cli_main as evaluate
    from fairseq_npu.cli.predict import cli_main as predict

    data = checkpoints["SST-2"]
    code, _, err = _cli(evaluate, [str(data), "--path", str(tmp_path / "nope.pt")], capsys)
    assert code == 2 and err.strip().endswith(f"fairseq-npu-evaluate: error: --path: no checkpoint at {tmp_path}/nope.pt")
    code, _, err = _cli(evaluate, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt"), "--split", "test"],
                        capsys)
    assert code == 2 and f"{data}: split 'test' has no labels; evaluate a labelled split" in err
    code, _, err = _cli(predict, [str(data), "--path", str(data / "ckpt" / "checkpoint_last.pt"), "--glue-task",
                                  "SST3", "--output-dir", str(tmp_path)], capsys)
    assert code == 2 and "fairseq-npu-predict: error: unknown GLUE task 'SST3'" in err
    assert list(tmp_path.iterdir()) == []  # nothing written, no temp file left behind
