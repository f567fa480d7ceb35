"""``sentence_prediction_npu``: fairseq's ``sentence_prediction`` with static shapes, length grouping, GLUE metrics
and device-generic autocast.

A drop-in for the stock task: same flags, data layout, criterion and checkpoints. With none of the new flags set
it loads, orders and batches data exactly as the stock task does, so same-seed runs give the same losses. The new
flags, all off by default:

- ``--pad-length N`` / ``--pad-buckets 32,64,128`` / ``--pad-to-multiple M``: each batch is padded to a length
  from a small fixed set (static shapes for NPU graph compilation and CUDA graphs).
- ``--static-batch keep|drop|fill``: each batch holds exactly ``--batch-size`` sentences.
- ``--group-by-length``: batches of sentences of similar length, regrouped every epoch.
- ``--glue-task``: which official metric is logged as ``glue`` (default: from the data directory name).

Validation logs ``f1`` (binary tasks with a label "1"), ``mcc``, ``pearson`` and ``spearman`` (regression) and
``glue``, computed exactly over the whole split and all workers; train and valid log ``pad_ratio``.
"""

import logging
import os
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

import numpy as np
import torch
from fairseq.data import PadDataset, SortDataset
from fairseq.dataclass import ChoiceEnum
from fairseq.logging import metrics
from fairseq.tasks import register_task
from fairseq.tasks.sentence_prediction import SentencePredictionConfig, SentencePredictionTask
from omegaconf import II

from fairseq_npu import glue_tasks, precision
from fairseq_npu.data import BucketPadDataset, LengthGroupedDataset, PadBuckets
from fairseq_npu.data_checks.data_dir import check_data_dir
from fairseq_npu.metrics import glue as glue_metrics
from fairseq_npu.models.sdpa_self_attention import use_sdpa_attention

logger = logging.getLogger(__name__)

STATIC_BATCH_CHOICES = ChoiceEnum(["off", "keep", "drop", "fill"])

# hidden accumulators (meter names starting with "_" are not printed)
_CONFUSION = "_glue_confusion_"
_PRED, _TARGET = "_glue_pred", "_glue_target"


@dataclass
class SentencePredictionNpuConfig(SentencePredictionConfig):
    pad_length: Optional[int] = field(
        default=None,
        metadata={"help": "pad every batch to this length (static shapes, as the Ascend ModelZoo's --pad-length); "
                          "longer sentences are padded to --max-positions"},
    )
    pad_buckets: Optional[str] = field(
        default=None,
        metadata={"help": "comma-separated lengths, e.g. 32,64,128: each batch is padded to the smallest one that "
                          "holds its longest sentence (longer ones: next --pad-to-multiple, else --max-positions)"},
    )
    pad_to_multiple: int = field(
        default=1,
        metadata={"help": "pad each batch to a multiple of this length (above the largest --pad-buckets length, "
                          "if given)"},
    )
    static_batch: STATIC_BATCH_CHOICES = field(
        default="off",
        metadata={"help": "fixed batch size: every batch holds exactly --batch-size sentences; the last partial "
                          "training batch of an epoch is kept, dropped, or filled with sentences repeated from the "
                          "epoch. Evaluation splits keep every sentence, so their last batch may be smaller"},
    )
    group_by_length: bool = field(
        default=False,
        metadata={"help": "build batches from sentences of similar (padded) length, regrouped at random every "
                          "epoch, to cut padding"},
    )
    group_window: int = field(
        default=0,
        metadata={"help": "with --group-by-length: sort shuffled windows of this many sentences by length "
                          "(more randomness, more padding); 0 sorts the whole split"},
    )
    glue_task: Optional[str] = field(
        default=None,
        metadata={"help": f"GLUE task whose official metric is logged as 'glue' ({', '.join(glue_tasks.GLUE_TASKS)}); "
                          "default: inferred from the data directory name"},
    )
    sdpa_attention: bool = field(
        default=False,
        metadata={"help": "RoBERTa self-attention as one F.scaled_dot_product_attention call with a boolean "
                          "padding mask (the form torch_npu runs as a fused kernel); same parameters and "
                          "checkpoints (fairseq_npu/models/sdpa_self_attention.py)"},
    )
    train_subset: str = II("dataset.train_subset")
    amp: bool = II("common.amp")  # validation autocasts as training does (fairseq_npu.precision)


@register_task("sentence_prediction_npu", dataclass=SentencePredictionNpuConfig)
class SentencePredictionNpuTask(SentencePredictionTask):
    """Sentence (pair) classification or regression with static shapes, length grouping and GLUE metrics."""

    @classmethod
    def setup_task(cls, cfg, **kwargs):
        check_data_dir(cfg)  # a missing input0/ or label/ is one line naming it, not a FileNotFoundError traceback
        return super().setup_task(cfg, **kwargs)

    def __init__(self, cfg: SentencePredictionNpuConfig, data_dictionary, label_dictionary):
        super().__init__(cfg, data_dictionary, label_dictionary)
        # --num-classes is checked against the label dictionary by fairseq_npu.hooks.tasks, in super().__init__
        if cfg.group_window and not cfg.group_by_length:
            logger.warning(f"--group-window {cfg.group_window} has no effect without --group-by-length (ignored)")
        self.buckets = PadBuckets.from_flags(cfg.pad_length, cfg.pad_buckets, cfg.pad_to_multiple, cfg.max_positions)
        if self.buckets.enabled and cfg.d2v2_multi:
            raise ValueError("static padded shapes (--pad-length/--pad-buckets/--pad-to-multiple) do not support "
                             "--d2v2-multi")
        if cfg.glue_task:
            self.glue_task = glue_tasks.glue_task(cfg.glue_task)
        else:
            self.glue_task = glue_tasks.infer_glue_task(str(cfg.data).split(os.pathsep)[0])
        self.positive_class = (
            None if cfg.regression_target else glue_tasks.positive_class(self.label_dictionary, cfg.num_classes)
        )
        self._precision = None  # fairseq_npu.precision.policy of this run, on first validation
        logger.info(
            f"GLUE task: {self.glue_task.name if self.glue_task else 'unknown'}; 'glue' = "
            f"{glue_metrics.official_metric_name(self.glue_task, cfg.regression_target)}; padding: {self.buckets}"
        )

    @property
    def gathers_predictions(self) -> bool:
        """Regression metrics (Spearman) need every prediction: validation outputs are gathered, not summed."""
        return bool(self.cfg.regression_target)

    # ---------------------------------------------------------------------------------------------------------
    # data

    def load_dataset(self, split, combine=False, **kwargs):
        dataset = super().load_dataset(split, combine=combine, **kwargs)
        cfg = self.cfg
        if not (self.buckets.enabled or cfg.group_by_length or cfg.static_batch != "off"):
            return dataset  # exactly the stock dataset

        nested = dataset.dataset if isinstance(dataset, SortDataset) else dataset
        if self.buckets.enabled:
            for key, inner in list(nested.defn.items()):
                if key.startswith("net_input.") and isinstance(inner, PadDataset):
                    nested.defn[key] = BucketPadDataset(inner.dataset, inner.pad_idx, self.buckets)
            self._warn_overflow(split, nested.sizes[0])

        is_train = split == cfg.train_subset
        dataset = LengthGroupedDataset(
            dataset,
            nested.sizes[0],
            group_by_length=cfg.group_by_length,
            shuffle=is_train and not cfg.no_shuffle,
            window=cfg.group_window,
            buckets=self.buckets,
            fixed_batch_size=cfg.static_batch != "off",
            remainder=cfg.static_batch if is_train and cfg.static_batch != "off" else "keep",
        )
        self.datasets[split] = dataset
        return dataset

    def _warn_overflow(self, split, sizes):
        if not self.buckets.buckets:
            return
        largest = self.buckets.buckets[-1]
        over = np.asarray(sizes) > largest
        if over.any():
            longest = int(np.max(sizes))
            logger.warning(
                f"{split}: {int(over.sum())} of {len(sizes)} sentences are longer than the largest pad length "
                f"{largest} (longest: {longest}); their batches are padded to {self.buckets.padded_length(longest)}"
            )

    def build_model(self, cfg, from_checkpoint=False):
        model = super().build_model(cfg, from_checkpoint)
        if self.cfg.sdpa_attention:
            logger.info(f"--sdpa-attention: {use_sdpa_attention(model)} self-attention modules run through "
                        "F.scaled_dot_product_attention")
        return model

    # ---------------------------------------------------------------------------------------------------------
    # steps

    def train_step(self, sample, model, criterion, optimizer, update_num, ignore_grad=False):
        # FairseqTask.train_step, which the plugin's hook makes autocast on the selected device
        loss, sample_size, logging_output = super().train_step(
            sample, model, criterion, optimizer, update_num, ignore_grad
        )
        self._log_padding(sample, logging_output)
        return loss, sample_size, logging_output

    def valid_step(self, sample, model, criterion):
        head = self._classification_head(model)
        outputs = []
        hook = head.register_forward_hook(lambda _m, _i, out: outputs.append(out)) if head is not None else None
        try:
            if self._precision is None:
                self._precision = precision.policy(SimpleNamespace(amp=self._amp()))
            with self._precision.autocast():
                loss, sample_size, logging_output = super().valid_step(sample, model, criterion)
        finally:
            if hook is not None:
                hook.remove()
        self._log_padding(sample, logging_output)
        if outputs and sample.get("target") is not None:
            self._log_glue_stats(outputs[-1], sample["target"], logging_output)
        return loss, sample_size, logging_output

    def _amp(self) -> bool:
        try:
            return self.cfg.amp is True
        except Exception:  # an unresolvable ${common.amp}: the task was built without a run config, so no --amp
            return False

    def _classification_head(self, model):
        heads = getattr(model, "classification_heads", None)
        if heads is None or self.cfg.classification_head_name not in heads:
            return None
        return heads[self.cfg.classification_head_name]

    @staticmethod
    def _log_padding(sample, logging_output):
        tokens = sample.get("net_input", {}).get("src_tokens") if sample else None
        if tokens is None or "ntokens" not in sample:
            return
        logging_output["npositions"] = tokens.numel()
        logging_output["npad"] = tokens.numel() - int(sample["ntokens"])

    def _log_glue_stats(self, logits, target, logging_output):
        if self.cfg.regression_target:
            logging_output["glue_pred"] = logits.detach().float().reshape(-1).cpu().numpy()
            logging_output["glue_target"] = target.detach().float().reshape(-1).cpu().numpy()
        else:
            k = logits.size(-1)
            preds = logits.detach().argmax(dim=-1).reshape(-1).cpu().numpy()
            counts = glue_metrics.confusion_counts(preds, target.detach().reshape(-1).cpu().numpy(), k)
            logging_output["glue_confusion"] = torch.from_numpy(counts)

    @staticmethod
    def logging_outputs_can_be_summed(criterion) -> bool:
        # lists of predictions cannot be summed across workers: gather them during validation instead
        if not criterion.training:
            task = getattr(criterion, "task", None)
            if getattr(task, "gathers_predictions", False) or getattr(criterion, "keep_pred_and_targ", False):
                return False
        return criterion.logging_outputs_can_be_summed()

    # ---------------------------------------------------------------------------------------------------------
    # metrics

    def begin_valid_epoch(self, epoch, model):
        super().begin_valid_epoch(epoch, model)
        # the trainer's "valid" aggregator lives for the whole run: start each validation from empty accumulators
        meters = metrics.get_meters("valid")
        if meters is not None:
            for key in list(meters.keys()):
                if key.startswith("_glue_"):
                    meters[key].reset()

    def reduce_metrics(self, logging_outputs, criterion):
        super().reduce_metrics(logging_outputs, criterion)

        npositions = sum(float(log.get("npositions", 0)) for log in logging_outputs)
        if npositions > 0:
            npad = sum(float(log.get("npad", 0)) for log in logging_outputs)
            # weighted by positions, so the average over batches is total padding / total positions
            metrics.log_scalar("pad_ratio", npad / npositions, npositions, round=3)

        confusions = [log["glue_confusion"] for log in logging_outputs if "glue_confusion" in log]
        if confusions:
            total = sum(_to_numpy(c).astype(np.float64) for c in confusions)
            for i, count in enumerate(total.tolist()):
                metrics.log_scalar_sum(f"{_CONFUSION}{i}", count)
            cells = len(total)
            positive = self.positive_class

            def classification(meters):
                cm = np.array([meters[f"{_CONFUSION}{i}"].sum for i in range(cells)], dtype=np.float64)
                return glue_metrics.classification_metrics(cm, positive)

            self._log_derived(classification, ["f1", "mcc"] if positive is not None else ["mcc"], regression=False)

        preds = [log["glue_pred"] for log in logging_outputs if "glue_pred" in log]
        if preds:
            targets = [log["glue_target"] for log in logging_outputs if "glue_target" in log]
            metrics.log_concat_tensor(_PRED, torch.from_numpy(np.concatenate([_to_numpy(p) for p in preds])))
            metrics.log_concat_tensor(_TARGET, torch.from_numpy(np.concatenate([_to_numpy(t) for t in targets])))

            def regression(meters):
                return glue_metrics.correlation_metrics(meters[_PRED].tensor.numpy(), meters[_TARGET].tensor.numpy())

            self._log_derived(regression, ["pearson", "spearman"], regression=True)

    def _log_derived(self, compute, names, regression):
        task = self.glue_task
        for name in names:
            metrics.log_derived(name, lambda meters, name=name: compute(meters).get(name))
        metrics.log_derived("glue", lambda meters: glue_metrics.glue_score(task, compute(meters), regression))


def _to_numpy(value):
    if torch.is_tensor(value):
        return value.detach().cpu().numpy()
    return np.asarray(value)
