"""The Hugging Face column: a plain torch training loop around ``transformers``' RobertaForSequenceClassification /
AlbertForSequenceClassification, same sizes, data and batch size as the fairseq runs.

It is what a ``Trainer`` run does per step, without the Trainer's bookkeeping: random batches, each padded to its
longest sentence (``DataCollatorWithPadding``), forward, backward, ``torch.optim.AdamW`` step. ``--group-by-length``
and ``--bf16`` give the loop the same two tricks as the plugin's best settings, for a like-for-like comparison.
Prints one JSON line with samples/s measured after the warm-up steps.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BASE_SIZES, SIZES  # noqa: E402

PAD, BOS = 1, 0  # fairseq ids; the data starts each sentence with the init token 0 (<s> / [CLS]) like the task


def load_split(data: Path, split: str):
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    tokens = MMapIndexedDataset(str(data / "input0" / split))
    labels = MMapIndexedDataset(str(data / "label" / split))
    sents = [np.concatenate([[BOS], tokens[i].numpy()]) for i in range(len(tokens))]
    nspecial = 4  # the label dictionary's <s> <pad> </s> <unk>
    targets = np.array([int(labels[i][0]) - nspecial for i in range(len(labels))])
    return sents, targets


def build_model(model: str, vocab: int, num_labels: int, sizes=None):
    s = (sizes or SIZES)[model]
    common = dict(vocab_size=vocab, hidden_size=s["dim"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], intermediate_size=s["ffn"], num_labels=num_labels, pad_token_id=PAD)
    if model == "roberta":
        from transformers import RobertaConfig, RobertaForSequenceClassification

        cfg = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, hidden_dropout_prob=0.1,
                            attention_probs_dropout_prob=0.1, **common)
        return RobertaForSequenceClassification(cfg)
    from transformers import AlbertConfig, AlbertForSequenceClassification

    cfg = AlbertConfig(embedding_size=s["embedding_dim"], max_position_embeddings=512, hidden_dropout_prob=0.1,
                       attention_probs_dropout_prob=0.1, classifier_dropout_prob=0.1, **common)
    return AlbertForSequenceClassification(cfg)


def batches(sents, bsz: int, group_by_length: bool, rng: np.random.Generator):
    order = rng.permutation(len(sents))
    if group_by_length:
        lengths = np.array([len(s) for s in sents])
        order = order[np.argsort(lengths[order], kind="stable")]
        chunks = [order[i : i + bsz] for i in range(0, len(order), bsz)]
        rng.shuffle(chunks)
        return chunks
    return [order[i : i + bsz] for i in range(0, len(order), bsz)]


def collate(sents, targets, idx):
    longest = max(len(sents[i]) for i in idx)
    ids = torch.full((len(idx), longest), PAD, dtype=torch.long)
    for row, i in enumerate(idx):
        ids[row, : len(sents[i])] = torch.from_numpy(sents[i].astype(np.int64))
    return ids, (ids != PAD).long(), torch.from_numpy(targets[idx])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(SIZES), required=True)
    p.add_argument("--data", type=Path, required=True, help="TASK-bin directory (SST-2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--updates", type=int, default=60, help="measured steps after the warm-up")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--group-by-length", action="store_true")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast of the forward pass")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--size", choices=("reduced", "base"), default="reduced")
    a = p.parse_args(argv)
    dev = torch.device(a.device)

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    torch.manual_seed(a.seed)
    sents, targets = load_split(a.data, "train")
    vocab = sum(1 for _ in open(a.data / "input0" / "dict.txt", encoding="utf-8")) + 4 + 1  # specials, <mask>
    model = build_model(a.model, vocab, int(targets.max()) + 1, BASE_SIZES if a.size == "base" else SIZES).to(dev)
    model.train()
    # torch's default AdamW kernel (foreach), as a Trainer run uses it
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    plan = batches(sents, a.batch_size, a.group_by_length, np.random.default_rng(a.seed))
    total = a.warmup + a.updates
    if total > len(plan):
        raise SystemExit(f"--warmup + --updates = {total} exceeds the {len(plan)} batches of one epoch")
    samples = real = padded = 0
    t0 = None
    cpu = 0.0
    for step, idx in enumerate(plan[:total]):
        if step == a.warmup:
            sync()
            t0 = time.perf_counter()
        ids, mask, y = (t.to(dev, non_blocking=True) for t in collate(sents, targets, idx))
        c0 = time.process_time()
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=a.bf16):
            loss = model(input_ids=ids, attention_mask=mask, labels=y).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step >= a.warmup:
            cpu += time.process_time() - c0
            samples += len(idx)
            real += sum(len(sents[i]) for i in idx)  # from the host-side lengths: no device sync per step
            padded += mask.numel()
    sync()
    seconds = time.perf_counter() - t0
    print(json.dumps(dict(samples_per_s=samples / seconds, updates_per_s=a.updates / seconds,
                          measured_updates=a.updates, measured_seconds=seconds,
                          real_tokens_per_batch=real / a.updates, pad_ratio=1 - real / padded,
                          samples_per_cpu_s=samples / cpu,
                          loss=float(loss))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
