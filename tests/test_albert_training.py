"""ALBERT end to end: SentencePiece data -> fairseq-train --arch albert_base (tiny) restored from a converted
Hugging Face checkpoint -> high accuracy; the hub interface on the result; masked_lm pretraining runs."""

import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fairseq_npu import albert_vocab

REPO = Path(__file__).resolve().parents[1]
PLUGIN = str(REPO / "fairseq_npu")
POSITIVE = ["splendid", "marvelous", "delightful", "wonderful"]
NEGATIVE = ["dreadful", "horrible", "miserable", "awful"]
FILLER = ("the a movie plot actor scene was is very quite rather story film music ending and but with "
          "of long short old new bright dark slow fast quiet loud").split()
TINY = ["--encoder-layers", "2", "--encoder-embed-dim", "64", "--encoder-ffn-embed-dim", "128",
        "--encoder-attention-heads", "4", "--embedding-dim", "32", "--max-positions", "64"]


def make_example(rng):
    """Pair task: the label is whether sentence A carries a positive or a negative word; B is noise."""
    label = rng.randrange(2)
    a = [rng.choice(FILLER) for _ in range(rng.randint(3, 8))]
    a.insert(rng.randrange(len(a) + 1), rng.choice(POSITIVE if label else NEGATIVE))
    b = [rng.choice(FILLER) for _ in range(rng.randint(2, 6))]
    return " ".join(a).capitalize() + ".", " ".join(b) + ".", label


def train_spm(sentences, prefix):
    import sentencepiece

    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences), model_prefix=str(prefix), vocab_size=120, model_type="unigram",
        pad_id=0, unk_id=1, bos_id=-1, eos_id=-1, control_symbols=["[CLS]", "[SEP]", "[MASK]"],
        character_coverage=1.0, minloglevel=2,
    )
    return Path(f"{prefix}.model")


def write_split(path_prefix, token_lists, vocab_size):
    from fairseq.data import indexed_dataset

    builder = indexed_dataset.make_builder(f"{path_prefix}.bin", impl="mmap", vocab_size=vocab_size)
    for ids in token_lists:
        builder.add_item(torch.IntTensor(ids))
    builder.finalize(f"{path_prefix}.idx")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A binarized SentencePiece pair task (fairseq layout) and a converted tiny HF ALBERT."""
    import sentencepiece
    import transformers

    from fairseq_npu.convert.cli import cli_main

    root = tmp_path_factory.mktemp("albert")
    rng = random.Random(0)
    examples = {"train": [make_example(rng) for _ in range(640)], "valid": [make_example(rng) for _ in range(128)]}
    spm_path = train_spm([s for ex in examples["train"] for s in ex[:2]], root / "spiece")
    sp = sentencepiece.SentencePieceProcessor(model_file=str(spm_path))
    vocab = sp.get_piece_size()

    data = root / "data-bin"
    for sub in ("input0", "input1", "label"):
        (data / sub).mkdir(parents=True)
    albert_vocab.write_fairseq_dict(spm_path, data / "input0" / "dict.txt")
    shutil.copy(data / "input0" / "dict.txt", data / "input1" / "dict.txt")
    (data / "label" / "dict.txt").write_text("0 1\n1 1\n")
    eos = albert_vocab.FAIRSEQ_EOS
    for split, rows in examples.items():
        write_split(data / "input0" / split, [albert_vocab.encode_text(sp, a) + [eos] for a, _, _ in rows], vocab + 1)
        write_split(data / "input1" / split, [albert_vocab.encode_text(sp, b) + [eos] for _, b, _ in rows], vocab + 1)
        # label symbols "0"/"1" are label-dictionary ids 4/5, each line ending with </s>, as fairseq-preprocess writes
        write_split(data / "label" / split, [[4 + y, eos] for _, _, y in rows], 6)

    # a tiny HF ALBERT with a 3-way head: the 2-way task must drop it and start a fresh head (roberta semantics)
    hf_dir = root / "hf"
    config = transformers.AlbertConfig(
        vocab_size=vocab, embedding_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=64, num_labels=3,
    )
    torch.manual_seed(0)
    transformers.AlbertForSequenceClassification(config).save_pretrained(hf_dir)
    shutil.copy(spm_path, hf_dir / "spiece.model")
    assert cli_main([str(hf_dir), str(root / "converted")]) == 0
    return {"root": root, "data": data, "converted": root / "converted", "examples": examples, "sp": sp}


def fairseq_train(args, cwd):
    cmd = [sys.executable, "-m", "fairseq_cli.train", "--user-dir", PLUGIN, "--cpu", "--log-format", "simple",
           "--log-interval", "10", "--seed", "1", *args]
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    return log


def test_converter_writes_contract_dict_and_checkpoint(workdir):
    conv = workdir["converted"]
    assert sorted(p.name for p in conv.iterdir()) == ["dict.txt", "model.pt", "spiece.model"]
    assert (conv / "dict.txt").read_bytes() == (workdir["data"] / "input0" / "dict.txt").read_bytes()
    from fairseq import checkpoint_utils

    state = checkpoint_utils.load_checkpoint_to_cpu(str(conv / "model.pt"))  # weights_only=True + allowlist
    assert state["cfg"].model._name == "albert" and state["cfg"].model.embedding_dim == 32
    assert state["model"]["classification_heads.sentence_classification_head.out_proj.weight"].shape == (3, 64)


def test_restore_converted_checkpoint_and_fine_tune_to_high_accuracy(workdir):
    save = workdir["root"] / "ckpt"
    log = fairseq_train(
        [str(workdir["data"]), "--task", "sentence_prediction", "--criterion", "sentence_prediction",
         "--arch", "albert_base", *TINY, "--num-classes", "2", "--init-token", "0",
         "--restore-file", str(workdir["converted"] / "model.pt"), "--reset-optimizer", "--reset-dataloader",
         "--reset-meters", "--optimizer", "adam", "--lr", "1e-3", "--lr-scheduler", "fixed", "--batch-size", "16",
         "--max-epoch", "2", "--save-dir", str(save), "--no-epoch-checkpoints", "--no-last-checkpoints",
         "--best-checkpoint-metric", "accuracy", "--maximize-best-checkpoint-metric"],
        cwd=REPO,
    )
    assert "deleting classification head (sentence_classification_head) from checkpoint with different dimensions" in log
    assert re.search(r"Loaded checkpoint .*converted/model\.pt \(epoch 1 @ 0 updates\)", log), log[-2000:]
    accuracies = [float(a) for a in re.findall(r"\| valid on 'valid' subset \|.*? accuracy ([\d.]+)", log)]
    assert len(accuracies) == 2 and max(accuracies) >= 95.0, accuracies
    workdir["trained"] = save


def test_hub_interface_encodes_and_predicts(workdir):
    if "trained" not in workdir:
        pytest.skip("needs the fine-tuned checkpoint of the previous test")
    from fairseq_npu.models.albert import AlbertModel

    hub = AlbertModel.from_pretrained(
        str(workdir["trained"]), "checkpoint_best.pt", data_name_or_path=str(workdir["data"]),
        sentencepiece_model=str(workdir["converted"] / "spiece.model"),
    ).eval()
    sp = workdir["sp"]
    tokens = hub.encode("A Wonderful film.", "the end.")
    expected = [0] + albert_vocab.encode_text(sp, "a wonderful film.") + [2] + albert_vocab.encode_text(sp, "the end.") + [2]
    assert tokens.tolist() == expected
    assert hub.decode(tokens) == ["a wonderful film.", "the end."]
    rows = workdir["examples"]["valid"][:64]
    encoded = [hub.encode(a, b) for a, b, _ in rows]
    with torch.no_grad():
        batch = hub.predict("sentence_classification_head", hub.pad_batch(encoded), return_logits=True)
        single = torch.cat([hub.predict("sentence_classification_head", t, return_logits=True) for t in encoded])
    assert (batch - single).abs().max().item() < 1e-4  # padding changes nothing
    accuracy = (batch.argmax(-1) == torch.tensor([y for _, _, y in rows])).float().mean().item()
    assert accuracy >= 0.95


def test_masked_lm_pretraining_runs_and_learns(workdir):
    log = fairseq_train(
        [str(workdir["data"] / "input0"), "--task", "masked_lm", "--criterion", "masked_lm", "--arch", "albert_base",
         *TINY, "--tokens-per-sample", "64", "--sample-break-mode", "complete", "--optimizer", "adam", "--lr", "2e-3",
         "--batch-size", "32", "--max-update", "24", "--save-dir", str(workdir["root"] / "mlm"),
         "--no-save", "--disable-validation"],
        cwd=REPO,
    )
    losses = [float(x) for x in re.findall(r"\| train \| epoch \d+ \| loss ([\d.]+)", log)]
    assert len(losses) >= 3 and losses[-1] < 0.85 * losses[0], losses
