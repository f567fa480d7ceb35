"""The Hugging Face column: ``transformers.Trainer`` fine-tuning RobertaForSequenceClassification /
AlbertForSequenceClassification on the same binarized data, sizes and batch size as the fairseq runs.

``--settings best`` is the Trainer as a user tuning it for speed would run it: the length-grouped sampler
(``train_sampling_strategy="group_by_length"``; ``group_by_length=True`` before transformers 5), the fused AdamW
kernel (``adamw_torch_fused``; ``adamw_torch_npu_fused`` on Ascend) and the faster precision for the device
(``--precision auto``: bf16 on a GPU that has it, else fp16; bf16 on a CPU with native bf16 instructions, else
fp32). ``--settings default`` leaves the sampler and optimizer at the Trainer's defaults. ``--torch-compile`` adds
the Trainer's remaining speed option, ``torch_compile=True`` (``torch.compile`` of the model, inductor unless
``--compile-backend`` says otherwise); with ``--pad-to-multiple-of 32`` the collator pads each batch to a multiple
of 32 (what ``DataCollatorWithPadding(pad_to_multiple_of=...)`` does), so that it compiles few shapes. All use
the fairseq recipe's optimizer hyper-parameters (betas 0.9/0.98, eps 1e-6, weight decay 0.1, no gradient
clipping), a linear schedule, no evaluation, no checkpoints, no logging integrations.

Prints one JSON line: samples/s over the steps after ``--warmup`` (timed by a callback, device synchronised),
the settings used and the padding share of the batches.
"""

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import SIZE_TABLES, SIZES, WORK

PAD, BOS = 1, 0  # fairseq ids; the data starts each sentence with the init token 0 (<s> / [CLS]) like the task


def load_split(data: Path, split: str):
    """Token ids (init token prepended, as sentence_prediction does) and 0-based labels of a fairseq GLUE split."""
    from fairseq.data.indexed_dataset import MMapIndexedDataset

    tokens = MMapIndexedDataset(str(data / "input0" / split))
    labels = MMapIndexedDataset(str(data / "label" / split))
    sents = [np.concatenate([[BOS], tokens[i].numpy()]).astype(np.int64) for i in range(len(tokens))]
    nspecial = 4  # the label dictionary's <s> <pad> </s> <unk>
    targets = np.array([int(labels[i][0]) - nspecial for i in range(len(labels))])
    return sents, targets


def build_model(model: str, vocab: int, num_labels: int, sizes: dict):
    s = sizes[model]
    shared = dict(vocab_size=vocab, hidden_size=s["dim"], num_hidden_layers=s["layers"],
                  num_attention_heads=s["heads"], intermediate_size=s["ffn"], num_labels=num_labels, pad_token_id=PAD)
    if model == "roberta":
        from transformers import RobertaConfig, RobertaForSequenceClassification

        cfg = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, hidden_dropout_prob=0.1,
                            attention_probs_dropout_prob=0.1, **shared)
        return RobertaForSequenceClassification(cfg)
    from transformers import AlbertConfig, AlbertForSequenceClassification

    cfg = AlbertConfig(embedding_size=s["embedding_dim"], max_position_embeddings=512, hidden_dropout_prob=0.1,
                       attention_probs_dropout_prob=0.1, classifier_dropout_prob=0.1, **shared)
    return AlbertForSequenceClassification(cfg)


class SentenceDataset(torch.utils.data.Dataset):
    """Items as the Trainer's length-grouped sampler reads them: dicts with ``input_ids``."""

    def __init__(self, sents, targets):
        self.sents, self.targets = sents, targets

    def __len__(self):
        return len(self.sents)

    def __getitem__(self, i):
        return {"input_ids": self.sents[i], "labels": int(self.targets[i])}


class PadCollator:
    """Pads each batch to its longest sentence, rounded up to ``multiple`` (what ``DataCollatorWithPadding`` does
    with ``pad_to_multiple_of``), counting the padding."""

    def __init__(self, multiple: int = 1):
        self.multiple = multiple
        self.real = self.positions = self.batches = 0

    def __call__(self, items):
        longest = max(len(it["input_ids"]) for it in items)
        longest = -(-longest // self.multiple) * self.multiple
        ids = torch.full((len(items), longest), PAD, dtype=torch.long)
        for row, it in enumerate(items):
            ids[row, : len(it["input_ids"])] = torch.from_numpy(it["input_ids"])
        self.real += sum(len(it["input_ids"]) for it in items)
        self.positions += ids.numel()
        self.batches += 1
        return {"input_ids": ids, "attention_mask": (ids != PAD).long(),
                "labels": torch.tensor([it["labels"] for it in items])}


def device_precision(device: str) -> str:
    """The faster training precision of the device, by the plugin's own test of native bf16 arithmetic
    (fairseq_npu.precision.native_bf16): bf16 where the device has it, else fp16 on an accelerator and fp32 on a
    CPU (whose emulated bf16 is slower than fp32)."""
    from fairseq_npu.precision import native_bf16

    if native_bf16(device):
        return "bf16"
    return "fp32" if device == "cpu" else "fp16"


def training_arguments(a, out_dir: Path):
    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    kwargs = dict(output_dir=str(out_dir), max_steps=a.warmup + a.updates, per_device_train_batch_size=a.batch_size,
                  learning_rate=a.lr, weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.98, adam_epsilon=1e-6,
                  max_grad_norm=0.0, lr_scheduler_type="linear", warmup_steps=max(1, (a.warmup + a.updates) // 16),
                  seed=a.seed, save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
                  dataloader_drop_last=True, use_cpu=a.device == "cpu")
    if a.settings == "best":
        kwargs["optim"] = "adamw_torch_npu_fused" if a.device == "npu" else "adamw_torch_fused"
        if "train_sampling_strategy" in names:
            kwargs["train_sampling_strategy"] = "group_by_length"
        else:  # transformers 4.x
            kwargs["group_by_length"] = True
    else:
        kwargs["optim"] = "adamw_torch"
    if a.precision in ("bf16", "fp16"):
        kwargs[a.precision] = True
    if a.torch_compile:
        kwargs.update(torch_compile=True, torch_compile_backend=a.compile_backend)
    return TrainingArguments(**kwargs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=sorted(SIZES), required=True)
    p.add_argument("--data", type=Path, required=True, help="TASK-bin directory (SST-2)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--updates", type=int, default=60, help="measured steps after the warm-up")
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--settings", choices=("best", "default"), default="best")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    p.add_argument("--torch-compile", action="store_true", help="the Trainer's torch_compile=True")
    p.add_argument("--compile-backend", default="inductor",
                   help="torch.compile backend with --torch-compile (eager: dynamo's tracing only, for dry runs)")
    p.add_argument("--pad-to-multiple-of", type=int, default=1, help="pad each batch to a multiple of this")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--device", choices=("cpu", "cuda", "npu"), default="cpu")
    p.add_argument("--size", choices=sorted(SIZE_TABLES), default="reduced")
    p.add_argument("--out-dir", type=Path, default=WORK / "hf_trainer", help="the Trainer's output_dir")
    a = p.parse_args(argv)
    if a.pad_to_multiple_of < 1:
        p.error(f"--pad-to-multiple-of {a.pad_to_multiple_of}: expected a positive integer")
    if a.precision == "auto":
        a.precision = device_precision(a.device)

    from transformers import Trainer, TrainerCallback

    sents, targets = load_split(a.data, "train")
    if a.warmup + a.updates > len(sents) // a.batch_size:
        raise SystemExit(f"--warmup + --updates = {a.warmup + a.updates} exceeds the {len(sents) // a.batch_size} "
                         "batches of one epoch")
    vocab = sum(1 for _ in open(a.data / "input0" / "dict.txt", encoding="utf-8")) + 4 + 1  # specials, <mask>
    torch.manual_seed(a.seed)
    model = build_model(a.model, vocab, int(targets.max()) + 1, SIZE_TABLES[a.size])

    def sync():
        if a.device == "cuda":
            torch.cuda.synchronize()
        elif a.device == "npu":
            torch.npu.synchronize()

    clock = {}

    class Timer(TrainerCallback):
        """Wall and process CPU time from the end of the warm-up steps to the end of the last step."""

        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step in (a.warmup, a.warmup + a.updates):
                sync()
                clock[state.global_step] = (time.perf_counter(), time.process_time())

    collator = PadCollator(a.pad_to_multiple_of)
    trainer = Trainer(model=model, args=training_arguments(a, a.out_dir), train_dataset=SentenceDataset(sents, targets),
                      data_collator=collator, callbacks=[Timer()])
    out = trainer.train()
    (w0, c0), (w1, c1) = clock[a.warmup], clock[a.warmup + a.updates]
    samples = a.updates * a.batch_size
    print(json.dumps(dict(samples_per_s=samples / (w1 - w0), updates_per_s=a.updates / (w1 - w0),
                          measured_updates=a.updates, measured_seconds=w1 - w0,
                          samples_per_cpu_s=samples / (c1 - c0) if c1 > c0 else None,
                          pad_ratio=1 - collator.real / collator.positions,
                          real_tokens_per_batch=collator.real / collator.batches,
                          settings=a.settings, torch_compile=trainer.args.torch_compile,
                          compile_backend=trainer.args.torch_compile_backend if a.torch_compile else None,
                          pad_to_multiple_of=a.pad_to_multiple_of,
                          optim=trainer.args.optim.value if hasattr(trainer.args.optim, "value")
                          else str(trainer.args.optim), precision=a.precision, loss=out.training_loss)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
