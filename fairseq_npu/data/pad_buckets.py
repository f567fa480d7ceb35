"""The fixed set of lengths batches are padded to, so that compiled graphs (NPU, CUDA graphs) see few shapes."""

from typing import Iterable, Optional, Sequence, Tuple

import numpy as np

from fairseq_npu.errors import UsageError


class PadBuckets:
    """Maps a batch's longest sequence to the length the batch is padded to.

    A length goes to the smallest bucket that holds it. Without buckets, or above the largest one, it is
    rounded up to ``multiple``; above the largest bucket with ``multiple`` 1 it goes to ``max_length`` (the
    model's limit), so that the set of shapes stays bounded: ``buckets`` plus at most that one.
    """

    def __init__(self, buckets: Sequence[int] = (), multiple: int = 1, max_length: Optional[int] = None):
        buckets = tuple(sorted(set(int(b) for b in buckets)))
        if any(b <= 0 for b in buckets):
            raise ValueError(f"pad lengths must be positive, got {list(buckets)}")
        if multiple < 1:
            raise ValueError(f"--pad-to-multiple must be >= 1, got {multiple}")
        if max_length is not None and buckets and buckets[-1] > max_length:
            raise ValueError(f"pad length {buckets[-1]} exceeds --max-positions {max_length}")
        self.buckets: Tuple[int, ...] = buckets
        self.multiple = int(multiple)
        self.max_length = max_length

    @property
    def enabled(self) -> bool:
        return bool(self.buckets) or self.multiple > 1

    def padded_length(self, length: int) -> int:
        return int(self.padded_lengths(np.array([length]))[0])

    def padded_lengths(self, lengths) -> np.ndarray:
        lengths = np.asarray(lengths, dtype=np.int64)
        out = lengths.copy()
        rest = np.ones(lengths.shape, dtype=bool)
        if self.buckets:
            b = np.array(self.buckets, dtype=np.int64)
            pos = np.searchsorted(b, lengths, side="left")  # first bucket >= length
            inside = pos < len(b)
            out[inside] = b[pos[inside]]
            rest = ~inside
        if self.multiple > 1:
            out[rest] = -(-lengths[rest] // self.multiple) * self.multiple
        elif self.buckets and self.max_length is not None:
            out[rest] = np.maximum(lengths[rest], self.max_length)
        if self.max_length is not None and self.multiple > 1:
            # rounding up may overshoot the model's limit; the limit itself is then the last shape
            over = rest & (out > self.max_length) & (lengths <= self.max_length)
            out[over] = self.max_length
        return out

    def shapes(self, max_length: int) -> Tuple[int, ...]:
        """Every length a batch can be padded to when no sequence is longer than ``max_length``."""
        return tuple(sorted(set(self.padded_lengths(np.arange(1, max_length + 1)).tolist())))

    def __repr__(self):
        return f"PadBuckets(buckets={list(self.buckets)}, multiple={self.multiple}, max_length={self.max_length})"

    @classmethod
    def from_flags(
        cls, pad_length: Optional[int], pad_buckets: Optional[str], multiple: int, max_length: Optional[int]
    ) -> "PadBuckets":
        # bad values are UsageErrors: fairseq-train prints them as one line naming the flag (exit 2)
        if pad_length is not None and pad_buckets:
            raise UsageError("give --pad-length or --pad-buckets, not both")
        buckets: Iterable[int] = ()
        if pad_length is not None:
            buckets = (pad_length,)
            if pad_length <= 0:
                raise UsageError(f"--pad-length must be positive, got {pad_length}")
        elif pad_buckets:
            try:
                buckets = [int(x) for x in str(pad_buckets).replace(" ", "").split(",") if x]
            except ValueError:
                raise UsageError(f"--pad-buckets takes comma-separated integers, got {pad_buckets!r}") from None
            if any(b <= 0 for b in buckets):
                raise UsageError(f"--pad-buckets takes positive lengths, got {pad_buckets!r}")
        try:
            return cls(buckets, multiple=multiple, max_length=max_length)
        except ValueError as err:
            raise UsageError(str(err)) from None
