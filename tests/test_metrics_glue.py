"""GLUE metrics equal scikit-learn / scipy: on known inputs, across batches, and across 2 gloo workers."""

import json
import math
import socket

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from fairseq_npu import glue_tasks
from fairseq_npu.metrics import glue


def test_classification_metrics_equal_sklearn():
    rng = np.random.RandomState(0)
    for k, positive in ((2, 1), (2, 0), (3, None)):
        y_true, y_pred = rng.randint(0, k, 500), rng.randint(0, k, 500)
        y_pred[:300] = y_true[:300]
        # counts of batches sum to the counts of the whole
        cm = sum(glue.confusion_counts(y_pred[i:i + 64], y_true[i:i + 64], k) for i in range(0, 500, 64))
        got = glue.classification_metrics(cm, positive)
        assert got["accuracy"] == pytest.approx(100 * accuracy_score(y_true, y_pred), abs=1e-12)
        assert got["mcc"] == pytest.approx(100 * matthews_corrcoef(y_true, y_pred), abs=1e-12)
        if positive is None:
            assert "f1" not in got
        else:
            assert got["f1"] == pytest.approx(100 * f1_score(y_true, y_pred, pos_label=positive), abs=1e-12)
    # known values: 3 TP, 1 FP, 1 FN, 3 TN
    cm = glue.confusion_counts([1, 1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 1, 0, 0, 0], 2)
    assert cm.tolist() == [3, 1, 1, 3]
    assert glue.classification_metrics(cm, 1) == pytest.approx({"accuracy": 75.0, "mcc": 50.0, "f1": 75.0})


def test_correlation_metrics_equal_scipy():
    rng = np.random.RandomState(1)
    t = rng.rand(300)
    p = t + 0.3 * rng.randn(300)
    got = glue.correlation_metrics(p, t)
    assert got["pearson"] == pytest.approx(100 * pearsonr(p, t)[0], abs=1e-10)
    assert got["spearman"] == pytest.approx(100 * spearmanr(p, t)[0], abs=1e-10)
    assert glue.correlation_metrics([1.0, 2.0, 3.0], [1.0, 4.0, 9.0]) == pytest.approx(
        {"pearson": 100 * pearsonr([1, 2, 3], [1, 4, 9])[0], "spearman": 100.0})
    assert all(math.isnan(v) for v in glue.correlation_metrics([0.5], [0.2]).values())
    assert all(math.isnan(v) for v in glue.correlation_metrics([1.0, 1.0, 1.0], [0.1, 0.2, 0.3]).values())


def test_glue_task_names_and_scores():
    assert glue_tasks.infer_glue_task("/x/SST-2-bin/").name == "SST-2"
    assert glue_tasks.infer_glue_task("glue/sts_b").name == "STS-B"
    assert glue_tasks.infer_glue_task("MNLI-bin").name == "MNLI"
    assert glue_tasks.infer_glue_task("data/my-task") is None
    assert glue_tasks.glue_task("cola").name == "CoLA"
    with pytest.raises(ValueError, match="unknown GLUE task 'SST3'; expected one of: CoLA, SST-2"):
        glue_tasks.glue_task("SST3")
    mrpc = glue_tasks.GLUE_TASKS["MRPC"]
    assert glue.glue_score(mrpc, {"accuracy": 80.0, "f1": 90.0, "mcc": 1.0}, False) == 85.0
    assert glue.glue_score(None, {"accuracy": 80.0}, False) == 80.0
    assert glue_tasks.GLUE_TASKS["MNLI"].submission_file("test1") == "MNLI-mm.tsv"
    assert glue_tasks.GLUE_TASKS["SST-2"].submission_file("test") == "SST-2.tsv"
    assert glue_tasks.GLUE_TASKS["SST-2"].submission_file("valid") == "SST-2.valid.tsv"


# ----------------------------------------------------------------------------------------------------------------
# the task's metrics through fairseq's trainer, 2 gloo workers each validating half of the split


def _worker(rank, port, configs, out_dir):
    import torch
    from fairseq import options, tasks
    from fairseq.dataclass.utils import convert_namespace_to_omegaconf
    from fairseq.distributed import utils as distributed_utils
    from fairseq.logging import metrics
    from fairseq.trainer import Trainer

    from glue_tiny_data import tiny_roberta_args

    torch.set_num_threads(1)
    initialised = False
    for name, (data, extra) in configs.items():
        argv = tiny_roberta_args(data, "sentence_prediction_npu", [
            "--distributed-world-size", "2", "--distributed-rank", str(rank), "--device-id", str(rank),
            "--distributed-init-method", f"tcp://127.0.0.1:{port}", "--distributed-no-spawn",
            "--distributed-backend", "gloo", "--save-dir", out_dir, *extra])
        cfg = convert_namespace_to_omegaconf(options.parse_args_and_arch(options.get_training_parser(), argv))
        if not initialised:
            cfg.distributed_training.distributed_rank = distributed_utils.distributed_init(cfg)
            initialised = True
        task = tasks.setup_task(cfg.task)
        task.load_dataset("valid")
        model, criterion = task.build_model(cfg.model), task.build_criterion(cfg.criterion)
        trainer = Trainer(cfg, task, model, criterion)
        task.begin_valid_epoch(1, model)
        mine = {"ids": [], "out": [], "target": []}
        with metrics.aggregate(new_root=True) as agg:
            for sample in trainer.get_valid_iterator("valid").next_epoch_itr(shuffle=False):
                trainer.valid_step(sample)
                if sample:  # this worker's own predictions, for the reference computed by the test
                    with torch.no_grad():
                        out, _ = model(**sample["net_input"], features_only=True,
                                       classification_head_name="sentence_classification_head")
                    mine["ids"] += sample["id"].tolist()
                    mine["out"] += out.float().tolist()
                    mine["target"] += sample["target"].tolist()
            stats = {k: v for k, v in agg.get_smoothed_values().items() if isinstance(v, (int, float))}
        with open(f"{out_dir}/{name}.{rank}.json", "w") as f:
            json.dump({"stats": stats, **mine}, f)


@pytest.fixture(scope="module")
def two_worker_results(tmp_path_factory):
    import torch.multiprocessing as mp

    from glue_tiny_data import make_glue_dir

    root = tmp_path_factory.mktemp("dist")
    # 68 sentences / 8 = 9 batches: one worker also runs a dummy batch, which must not count
    mrpc = make_glue_dir(root / "MRPC-bin", {"train": 8, "valid": 68}, pair=True, labels=("1", "0"), seed=5)
    stsb = make_glue_dir(root / "STS-B-bin", {"train": 8, "valid": 68}, pair=True, regression=True, seed=6)
    configs = {"mrpc": (str(mrpc), []), "stsb": (str(stsb), ["--regression-target", "--num-classes", "1"])}
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # fork: the workers inherit the imported fairseq instead of importing it again (seconds each on 2 cores)
    mp.start_processes(_worker, args=(port, configs, str(root)), nprocs=2, join=True, start_method="fork")
    results = {name: [json.loads((root / f"{name}.{r}.json").read_text()) for r in (0, 1)] for name in configs}
    results["dirs"] = {"mrpc": mrpc, "stsb": stsb}
    return results


def _union(results):
    ids = results[0]["ids"] + results[1]["ids"]
    assert sorted(ids) == list(range(68))  # each worker saw its part, together all of it, once
    assert results[0]["ids"] and results[1]["ids"]
    return results[0]["out"] + results[1]["out"], results[0]["target"] + results[1]["target"]


def test_two_workers_classification_equals_sklearn(two_worker_results):
    from fairseq.data import Dictionary

    results = two_worker_results["mrpc"]
    out, target = _union(results)
    pred, target = np.argmax(np.array(out), axis=1), np.array(target)
    labels = Dictionary.load(str(two_worker_results["dirs"]["mrpc"] / "label" / "dict.txt"))
    positive = labels.index("1") - labels.nspecial  # F1's positive class is label "1", wherever it is indexed
    accuracy = 100 * accuracy_score(target, pred)
    for r in results:  # every worker logs the same, global values
        s = r["stats"]
        assert s["accuracy"] == pytest.approx(accuracy, abs=0.05)  # the criterion logs it rounded to .1
        assert s["mcc"] == pytest.approx(100 * matthews_corrcoef(target, pred), abs=1e-9)
        assert s["f1"] == pytest.approx(100 * f1_score(target, pred, pos_label=positive), abs=1e-9)
        assert s["glue"] == pytest.approx((s["f1"] + accuracy) / 2, abs=1e-9)


def test_two_workers_regression_equals_scipy(two_worker_results):
    results = two_worker_results["stsb"]
    out, target = _union(results)
    p = np.array(out, dtype=np.float64).reshape(-1)  # float32 values, correlated in float64 as the task does
    t = np.array(target, dtype=np.float64).reshape(-1)
    for r in results:
        s = r["stats"]
        assert s["pearson"] == pytest.approx(100 * pearsonr(p, t)[0], abs=1e-9)
        assert s["spearman"] == pytest.approx(100 * spearmanr(p, t)[0], abs=1e-9)
        assert s["glue"] == pytest.approx((s["pearson"] + s["spearman"]) / 2, abs=1e-9)
