"""Datasets and batching helpers of the plugin (static padded shapes, length grouping)."""

from fairseq_npu.data.bucket_pad_dataset import BucketPadDataset  # noqa: F401
from fairseq_npu.data.length_grouped_dataset import LengthGroupedDataset  # noqa: F401
from fairseq_npu.data.pad_buckets import PadBuckets  # noqa: F401
