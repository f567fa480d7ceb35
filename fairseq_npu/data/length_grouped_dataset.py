"""Batch planning for sentence prediction: length grouping, padded token counts and fixed-size batches."""

from typing import List, Optional

import numpy as np
from fairseq.data import BaseWrapperDataset, data_utils

from fairseq_npu.data.pad_buckets import PadBuckets

REMAINDER_POLICIES = ("keep", "drop", "fill")


class LengthGroupedDataset(BaseWrapperDataset):
    """Wraps a split to decide which sentences share a batch.

    - ``group_by_length``: ``ordered_indices`` shuffles the split, then sorts each window of ``window`` sentences
      (0: the whole split) by padded length, so consecutive sentences (hence batches) have similar lengths while
      sentences of the same length are in random order. ``ordered_indices`` runs under fairseq's
      ``numpy_seed(seed + epoch)``, and ``can_reuse_epoch_itr_across_epochs`` is False when ``shuffle`` is set,
      so fairseq rebuilds the batches every epoch: their composition changes per epoch, and the epoch iterator
      shuffles their order as usual. Without ``shuffle`` (evaluation) the order is a plain sort by length.
      Without grouping the wrapped dataset's order is kept (for ``sentence_prediction``: a fixed shuffle).
    - ``buckets``: token counts used for batching (``--max-tokens``) are the padded lengths a batch will have.
    - ``fixed_batch_size``: every batch holds exactly ``max_sentences`` (``--batch-size``) sentences, in index
      order; the last, partial one is kept, dropped (``remainder``), or filled up with sentences repeated from
      the start of the order.
    """

    def __init__(
        self,
        dataset,
        sizes,
        group_by_length: bool = False,
        shuffle: bool = True,
        window: int = 0,
        buckets: Optional[PadBuckets] = None,
        fixed_batch_size: bool = False,
        remainder: str = "keep",
    ):
        super().__init__(dataset)
        if remainder not in REMAINDER_POLICIES:
            raise ValueError(f"remainder must be one of {REMAINDER_POLICIES}, got {remainder!r}")
        if window < 0:
            raise ValueError(f"--group-window must be >= 0, got {window}")
        self._sizes = np.asarray(sizes, dtype=np.int64)
        self.group_by_length = group_by_length
        self.shuffle = shuffle
        self.window = int(window)
        self.buckets = buckets if buckets is not None and buckets.enabled else None
        self.padded_sizes = self.buckets.padded_lengths(self._sizes) if self.buckets else self._sizes
        self.fixed_batch_size = fixed_batch_size
        self.remainder = remainder

    # ---------------------------------------------------------------------------------------------------------
    # order

    def ordered_indices(self):
        if not self.group_by_length:
            return self.dataset.ordered_indices()
        n = len(self._sizes)
        order = np.random.permutation(n) if self.shuffle else np.arange(n)
        window = self.window if self.window > 0 else max(n, 1)
        keys = self.padded_sizes
        for start in range(0, n, window):
            chunk = order[start : start + window]
            order[start : start + window] = chunk[np.argsort(keys[chunk], kind="stable")]
        return order

    @property
    def can_reuse_epoch_itr_across_epochs(self):
        # grouped training batches are rebuilt from a new permutation every epoch
        return not (self.group_by_length and self.shuffle) and self.dataset.can_reuse_epoch_itr_across_epochs

    # ---------------------------------------------------------------------------------------------------------
    # sizes as batching sees them

    def num_tokens(self, index):
        return int(self.padded_sizes[index])

    def num_tokens_vec(self, indices):
        return self.padded_sizes[indices]

    # ---------------------------------------------------------------------------------------------------------
    # batches

    def batch_by_size(self, indices, max_tokens=None, max_sentences=None, required_batch_size_multiple=1):
        if not self.fixed_batch_size:
            return data_utils.batch_by_size(
                indices,
                num_tokens_fn=self.num_tokens,
                num_tokens_vec=self.num_tokens_vec(np.asarray(indices, dtype=np.int64)),
                max_tokens=max_tokens,
                max_sentences=max_sentences,
                required_batch_size_multiple=required_batch_size_multiple,
            )
        if max_sentences is None or max_sentences <= 0:
            raise ValueError("--static-batch needs --batch-size (and --batch-size-valid for other splits, if set)")
        return self._fixed_size_batches(np.asarray(indices, dtype=np.int64), int(max_sentences), max_tokens)

    def _fixed_size_batches(self, indices: np.ndarray, bsz: int, max_tokens) -> List[np.ndarray]:
        n = len(indices)
        full = n // bsz
        batches = [indices[i * bsz : (i + 1) * bsz] for i in range(full)]
        rest = indices[full * bsz :]
        if len(rest) > 0:
            if self.remainder == "keep" or (self.remainder == "fill" and n < bsz):
                batches.append(rest)
            elif self.remainder == "fill":
                # complete the batch with the first sentences of the order, as torch's DistributedSampler pads
                batches.append(np.concatenate([rest, indices[: bsz - len(rest)]]))
            # "drop": the partial batch is left out of this epoch (a different one each epoch when shuffled)
        if max_tokens is not None and max_tokens > 0 and batches:
            widest = max(batches, key=lambda b: int(self.padded_sizes[b].max()) * len(b))
            length = int(self.padded_sizes[widest].max())
            if length * len(widest) > max_tokens:
                raise ValueError(
                    f"--static-batch: {len(widest)} sentences x padded length {length} = {length * len(widest)} "
                    f"tokens exceeds --max-tokens {max_tokens}; raise --max-tokens or lower --batch-size"
                )
        return batches
