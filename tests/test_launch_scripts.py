"""test/*.sh end to end on cpu: tiny RoBERTa and ALBERT on a tiny learnable task, 1 and 2 gloo processes.

The 2-process run must equal, parameter for parameter, a 1-process run with --update-freq 2: rank r takes batches
r, r+2, ... of the same shuffled list, so update k sees batches 2k and 2k+1 in both runs, and only gradients
all-reduced across the two ranks give the same weights (dropout is off so both runs compute the same thing).
"""

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from fairseq_npu.launch import summary

REPO = Path(__file__).resolve().parents[1]
TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "2", "--max-positions", "64", "--dropout", "0", "--attention-dropout", "0",
        "--pooler-dropout", "0", "--log-interval", "2", "--num-workers", "0"]
TINY_ALBERT = TINY + ["--embedding-dim", "32"]
# fp32: the fast preset's bf16 (where the cpu has it) would make the 2-process vs 1-process check a tolerance game
COMMON = ["--device=cpu", "--task=SST-2", "--batch-size=16", "--lr=1e-3", "--precision=fp32"]


def _write_task(dest: Path, first_symbols, n_train=256, n_valid=64):
    """Binarize a task whose label is which of two word sets the sentence holds (fairseq's own binarizer)."""
    from fairseq.data import Dictionary, indexed_dataset

    rng = random.Random(0)
    filler, pos, neg = [f"w{i}" for i in range(40)], ["good", "great"], ["bad", "awful"]

    def rows(n):
        out = []
        for _ in range(n):
            label = rng.randint(0, 1)
            words = [rng.choice(filler) for _ in range(rng.randint(3, 12))]
            words.insert(rng.randint(0, len(words)), rng.choice(pos if label else neg))
            out.append((" ".join(words), str(label)))
        return out

    splits = {"train": rows(n_train), "valid": rows(n_valid)}
    words = Dictionary()
    for symbol in list(first_symbols) + filler + pos + neg:
        words.add_symbol(symbol)
    labels = Dictionary()
    for label in ("1", "0"):
        labels.add_symbol(label)
    for sub, dictionary, column in (("input0", words, 0), ("label", labels, 1)):
        (dest / sub).mkdir(parents=True)
        dictionary.save(str(dest / sub / "dict.txt"))
        for split, split_rows in splits.items():
            builder = indexed_dataset.make_builder(str(dest / sub / f"{split}.bin"), impl="mmap",
                                                   vocab_size=len(dictionary))
            for row in split_rows:
                builder.add_item(dictionary.encode_line(row[column], add_if_not_exist=False, append_eos=True))
            builder.finalize(str(dest / sub / f"{split}.idx"))
    return dest


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("launch")
    return {
        "roberta": _write_task(root / "roberta" / "SST-2-bin", []),
        # ALBERT layout (fairseq_npu/albert_vocab.py): [MASK] is fairseq id 4, the first line of dict.txt
        "albert": _write_task(root / "albert" / "SST-2-bin", ["[MASK]"]),
        "out": root / "out",
    }


def run_script(name, *args):
    run = subprocess.run(["bash", str(REPO / "test" / name), *map(str, args)], capture_output=True, text=True,
                         timeout=300, cwd=REPO, env=dict(os.environ, PYTHON=sys.executable))
    assert run.returncode == 0, f"{name} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    return run


def final_lines(run, n):
    return run.stdout.strip().splitlines()[-n:]


def load_summary(out: Path):
    return json.loads((out / "summary.json").read_text())


def model_state(path: Path):
    from fairseq import checkpoint_utils

    import fairseq_npu  # noqa: F401  (safe checkpoint loading)

    return checkpoint_utils.load_checkpoint_to_cpu(str(path))["model"]


@pytest.fixture(scope="module")
def full_1p_roberta(data):
    out = data["out"] / "full_1p_roberta"
    run = run_script("train_full_1p.sh", f"--data_path={data['roberta']}", "--model=roberta", *COMMON,
                     "--max-epoch=3", f"--output_dir={out}", *TINY, "--update-freq", "2")
    return run, out


def test_full_1p_roberta(full_1p_roberta):
    run, out = full_1p_roberta
    s = load_summary(out)
    assert final_lines(run, 2) == summary.final_lines(s) and s["fps"] > 0
    assert (s["mode"], s["model"], s["arch"], s["task"], s["device_type"]) == ("full", "roberta", "roberta_base",
                                                                               "SST-2", "cpu")
    assert (s["device_count"], s["global_batch_size"], s["update_freq"], s["epochs"], s["updates"]) == (1, 32, 2, 3, 24)
    assert (s["metric_name"], s["official_metric"], s["amp_type"], s["status"]) == ("glue", "accuracy", "-", "ok")
    assert s["best_metric"] >= 75  # the task is learnable: a run that does not learn it is broken
    assert s["total_num_update"] == 24 and s["warmup_updates"] == 1  # 3 epochs of 8 updates, 6% warm-up
    assert s["fps_window"]["intervals"] >= 4 and s["e2e_seconds"] > 0
    assert (out / "checkpoints" / "checkpoint_best.pt").is_file() and (out / "train.log").is_file()


def test_full_1p_with_the_shipped_defaults_learns_with_the_fast_settings(data):
    """What a user gets without flags: the fast preset for this cpu (bf16 autocast only where torch reports native
    bf16), and the run still learns the task."""
    from fairseq_npu import precision

    out = data["out"] / "full_1p_defaults"
    run_script("train_full_1p.sh", f"--data_path={data['roberta']}", "--model=roberta", "--device=cpu",
               "--task=SST-2", "--batch-size=16", "--lr=1e-3", "--max-epoch=3", f"--output_dir={out}", *TINY)
    s = load_summary(out)
    assert (s["preset"], s["optimizer"], s["status"]) == ("fast", "fused_adamw", "ok")
    assert s["fast_settings"][0] == "--group-by-length" and "--group-by-length" in s["command"]
    native = precision.native_bf16("cpu")
    assert s["native_bf16"] is native
    assert (s["amp_type"], s["amp_dtype"]) == (("O1", "bf16") if native else ("-", s["amp_dtype"]))
    assert ("--amp" in s["command"]) is native
    assert s["best_metric"] >= 75


def test_full_8p_two_gloo_processes_all_reduce_gradients(data, full_1p_roberta):
    out = data["out"] / "full_2p_roberta"
    run = run_script("train_full_8p.sh", f"--data_path={data['roberta']}", "--model=roberta", *COMMON,
                     "--max-epoch=3", "--nproc=2", f"--output_dir={out}", *TINY)
    s = load_summary(out)
    assert final_lines(run, 2)[0].startswith("ActualFPS: ") and final_lines(run, 1)[0].startswith("Accuracy: ")
    assert (s["device_count"], s["world_size"], s["global_batch_size"], s["updates"]) == (2, 2, 32, 24)
    assert "distributed init (rank 1)" in (out / "train.log").read_text()
    two = model_state(out / "checkpoints" / "checkpoint_last.pt")
    one = model_state(full_1p_roberta[1] / "checkpoints" / "checkpoint_last.pt")
    assert two.keys() == one.keys()
    worst = max((two[k].float() - one[k].float()).abs().max().item() for k in two)
    assert worst < 1e-5, f"2-process weights differ from the 1-process --update-freq 2 run by {worst}"
    assert s["best_metric"] == load_summary(full_1p_roberta[1])["best_metric"]


def test_eval_8p_on_the_best_checkpoint(data, full_1p_roberta):
    """Into the training run's own folder (docs/launch.md's example): evaluation writes its own eval_* files and
    leaves the training run's record as it was."""
    out = full_1p_roberta[1]
    kept = ("summary.json", "plan.json", "command.sh", "fairseq_args", "train.log")
    before = {name: (out / name).read_bytes() for name in kept}
    trained = load_summary(out)
    run = run_script("train_eval_8p.sh", f"--data_path={data['roberta']}", "--device=cpu", "--task=SST-2",
                     "--nproc=1", "--batch-size=16", f"--output_dir={out}")
    assert {name: (out / name).read_bytes() for name in kept} == before
    s = json.loads((out / "eval_summary.json").read_text())
    assert (s["mode"], s["samples"], s["device_count"], s["status"]) == ("eval", 64, 1, "ok")
    assert s["checkpoint"] == str(out / "checkpoints" / "checkpoint_best.pt")
    assert s["best_metric"] == trained["best_metric"]  # the checkpoint kept is the best validation
    assert final_lines(run, 2) == summary.final_lines(s) and final_lines(run, 1) == summary.final_lines(trained)[1:]
    assert s["fps"] > 0
    assert json.loads((out / "eval_plan.json").read_text())["mode"] == "eval"
    assert "fairseq_npu.cli.evaluate" in (out / "eval_command.sh").read_text()


def test_eval_on_two_processes_scores_the_whole_split(data, full_1p_roberta):
    out = data["out"] / "eval_roberta_2p"
    trained = load_summary(full_1p_roberta[1])
    run_script("train_eval_8p.sh", f"--data_path={data['roberta']}", "--device=cpu", "--task=SST-2", "--nproc=2",
               f"--restore-file={full_1p_roberta[1] / 'checkpoints' / 'checkpoint_best.pt'}", "--batch-size=16",
               f"--output_dir={out}")
    s = json.loads((out / "eval_summary.json").read_text())
    # each rank scored its shard; rank 0 reports the metric of all 64 sentences, as one process does
    assert (s["samples"], s["device_count"], s["best_metric"]) == (64, 2, trained["best_metric"])


def _albert_registered():
    import fairseq_npu  # noqa: F401
    from fairseq.models import ARCH_MODEL_REGISTRY

    return "albert_base" in ARCH_MODEL_REGISTRY


@pytest.mark.parametrize("script,nproc", [("train_performance_1p.sh", 1), ("train_performance_8p.sh", 2)])
def test_performance_albert(data, script, nproc):
    if not _albert_registered():
        pytest.skip("--arch albert_base is not registered (fairseq_npu/models/albert missing)")
    out = data["out"] / f"perf_{nproc}p_albert"
    run = run_script(script, f"--data_path={data['albert']}", "--model=albert", *COMMON, f"--nproc={nproc}",
                     "--max-update=12", f"--output_dir={out}", *TINY_ALBERT)
    s = load_summary(out)
    assert final_lines(run, 1) == summary.final_lines(s)
    assert "Accuracy:" not in run.stdout
    assert (s["mode"], s["arch"], s["device_count"], s["updates"]) == ("performance", "albert_base", nproc, 12)
    assert s["global_batch_size"] == 16 * nproc and s["best_metric"] is None and s["fps"] > 0
    log = (out / "train.log").read_text()
    assert '| valid |' not in log and "Saving checkpoint" not in log
    assert not list((out / "checkpoints").glob("*.pt"))
