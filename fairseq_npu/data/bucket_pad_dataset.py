"""Right padding to a bucket length: the static-shape counterpart of fairseq's RightPadDataset."""

from fairseq.data import RightPadDataset, data_utils

from fairseq_npu.data.pad_buckets import PadBuckets


class BucketPadDataset(RightPadDataset):
    """Collates a batch padded on the right with ``pad_idx`` up to ``buckets.padded_length(longest)``.

    Padded positions hold the pad token, so the model sees exactly what dynamic padding would give it, only wider.
    """

    def __init__(self, dataset, pad_idx: int, buckets: PadBuckets):
        super().__init__(dataset, pad_idx)
        self.buckets = buckets

    def collater(self, samples):
        if len(samples) == 0:
            return super().collater(samples)
        longest = max(s.size(0) for s in samples)
        # Copied from fairseq 0.12.3 data/pad_dataset.py PadDataset.collater, with pad_to_length the bucket's
        return data_utils.collate_tokens(
            samples, self.pad_idx, left_pad=False, pad_to_length=self.buckets.padded_length(longest)
        )
