"""One small fairseq-train run on the demo data, and what it leaves behind: a quiet stderr, TensorBoard event files
with the logged losses, and a checkpoint that fairseq-npu-export turns into a Hugging Face directory whose
tokenizer and model reproduce fairseq's ids and logits on the real dev sentences."""

import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from fairseq_npu import albert_vocab, quiet_logs, synthetic
from fairseq_npu.preprocess.glue import preprocess_task

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    raw = synthetic.write_task(root / "glue" / "SST-2", n_train=256, n_dev=48, n_test=8)
    data = preprocess_task(root / "glue", "SST-2", dest=root / "data", model="albert", task_dir=raw,
                           train_spm_vocab_size=300)
    command = [
        sys.executable, "-m", "fairseq_cli.train", str(data), "--user-dir", str(REPO / "fairseq_npu"),
        "--task", "sentence_prediction_npu", "--criterion", "sentence_prediction", "--arch", "albert_base",
        "--num-classes", "2", "--init-token", "0", "--max-positions", "64", "--encoder-layers", "2",
        "--encoder-embed-dim", "32", "--encoder-ffn-embed-dim", "64", "--encoder-attention-heads", "4",
        "--embedding-dim", "16", "--optimizer", "fused_adamw", "--lr", "1e-3", "--batch-size", "32",
        "--max-epoch", "2", "--save-dir", str(root / "checkpoints"), "--tensorboard-logdir", str(root / "tb"),
        "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric", "--log-format", "simple",
        "--log-interval", "4", "--num-workers", "0", "--cpu", "--seed", "3",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("FAIRSEQ_NPU_DEVICE", None)
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return root, data, done


def test_a_demo_run_prints_no_warning_a_user_cannot_act_on(run):
    _, _, done = run
    assert done.stderr == ""  # fairseq logs to stdout; Hydra's deprecations and pin_memory went to stderr
    assert [line for line in done.stdout.splitlines() if "| WARNING |" in line] == []
    assert "Please install tensorboardX" not in done.stdout


def test_the_filters_are_narrow():
    """The pin_memory and Hydra messages are dropped; another warning from the same module still shows."""

    def shown(message, module):
        with warnings.catch_warnings(record=True) as caught:  # restores the filters afterwards
            warnings.simplefilter("default")
            quiet_logs._installed = False  # install again on top of the clean filters
            quiet_logs.install()
            warnings.warn_explicit(message, UserWarning, f"{module.replace('.', '/')}.py", 1, module=module)
        return [str(w.message) for w in caught]

    loader = "torch.utils.data.dataloader"
    assert shown("'pin_memory' argument is set as true but no accelerator is found, then device pinned memory "
                 "won't be used.", loader) == []
    assert shown("This DataLoader will create 8 worker processes", loader) == ["This DataLoader will create 8 "
                                                                               "worker processes"]
    assert shown("hydra.experimental.compose() is no longer experimental. Use hydra.compose()",
                 "hydra.experimental.compose") == []
    assert shown("some other hydra warning", "hydra.experimental.compose") == ["some other hydra warning"]


def read_events(path: Path):
    """(tag, step, value) of every scalar in a TensorBoard event file (TFRecord framing, Event protos)."""
    from tensorboardX.proto import event_pb2

    scalars, data = [], path.read_bytes()
    offset = 0
    while offset < len(data):
        (length,) = struct.unpack("<Q", data[offset:offset + 8])
        record = data[offset + 12:offset + 12 + length]  # 8 bytes length, 4 bytes its CRC, then the record
        offset += 12 + length + 4  # and the record's CRC
        event = event_pb2.Event.FromString(record)
        for value in event.summary.value:
            scalars.append((value.tag, event.step, value.simple_value))
    return scalars


def test_tensorboard_event_files_hold_the_logged_losses(run):
    root, _, done = run
    files = {p.parent.name: p for p in (root / "tb").glob("*/events.out.tfevents.*")}
    assert {"train", "train_inner", "valid"} <= set(files)
    train = read_events(files["train"])
    # fairseq's end-of-epoch line, e.g. "epoch 002 | loss 0.683 | ... | num_updates 16": the same loss per epoch
    logged = re.findall(r"\| INFO \| train \| epoch (\d+) \| loss ([\d.]+) \|.*?\| num_updates (\d+)", done.stdout)
    assert len(logged) == 2
    losses = {step: value for tag, step, value in train if tag == "loss"}
    for _, loss, updates in logged:
        assert abs(losses[int(updates)] - float(loss)) < 5e-4
    assert any(tag == "accuracy" for tag, _, _ in read_events(files["valid"]))


def test_the_trained_checkpoint_exports_with_its_tokenizer(run, tmp_path):
    """The exported tokenizer gives the binarized dev ids; the exported model gives fairseq's logits and labels."""
    transformers = pytest.importorskip("transformers")
    from fairseq import checkpoint_utils
    from fairseq.data import data_utils

    from fairseq_npu.convert.export import cli_main

    root, data, _ = run
    assert cli_main([str(root / "checkpoints" / "checkpoint_best.pt"), str(tmp_path / "hf")]) == 0
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "hf"))
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "hf")).eval()
    models, _, task = checkpoint_utils.load_model_ensemble_and_task([str(root / "checkpoints" / "checkpoint_best.pt")])
    model = models[0].eval()
    task.load_dataset("valid")
    dev = task.datasets["valid"]
    sentences = [line.split("\t")[0] for line in (root / "glue" / "SST-2" / "dev.tsv").read_text().splitlines()[1:9]]
    rows = [dev[i]["net_input.src_tokens"] for i in range(len(sentences))]
    encoded = tokenizer(sentences, padding=True, return_tensors="pt")
    for i, tokens in enumerate(rows):  # SentencePiece ids of the tokenizer == the preprocessor's fairseq ids
        spm_ids = encoded["input_ids"][i][encoded["attention_mask"][i].bool()]
        assert albert_vocab.spm_to_fairseq_ids(spm_ids).tolist() == tokens.tolist()
    batch = data_utils.collate_tokens(rows, pad_idx=task.source_dictionary.pad())
    with torch.no_grad():
        ours, _ = model(batch, classification_head_name="sentence_classification_head")
        theirs = hf(**encoded).logits
    assert (ours - theirs).abs().max().item() < 1e-4
    labels = task.label_dictionary
    assert [hf.config.id2label[i] for i in theirs.argmax(-1).tolist()] == \
        [labels[i + labels.nspecial] for i in ours.argmax(-1).tolist()]
