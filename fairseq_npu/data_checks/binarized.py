"""The binarized files of one split, checked before fairseq reads them.

fairseq opens ``KEY/SPLIT.idx`` and ``KEY/SPLIT.bin`` trusting each other and the dictionaries: a truncated ``.bin``
failed in numpy ("offset must be non-negative"), an ``.idx`` of another split in "dataset lengths must match", an
empty or garbage ``.idx`` in an assertion about ``--dataset-impl``, a ``dict.txt`` shorter than the ids only at the
first forward ("index out of range in self"), and a missing split in "could not find dataset". Here each is one
UsageError naming the file: the ``.idx`` header and size, the ``.bin`` size it describes, the number of sentences of
every key of the split, the largest id against its dictionary, and the kind of labels against the task's (regression
targets in ``label/SPLIT.label`` vs class ids in ``label/SPLIT.bin``).

Only fairseq's mmap format (what fairseq-preprocess writes by default) is checked in depth; the legacy ``TNTIDX``
format is recognised and left to fairseq.
"""

import glob
import os
import struct
from typing import Optional

import numpy as np

from fairseq_npu.errors import UsageError

MMAP_MAGIC = b"MMIDIDX\x00\x00"
LEGACY_MAGIC = b"TNTIDX\x00\x00"
_HEADER = len(MMAP_MAGIC) + 8 + 1 + 8  # magic, version, dtype code, number of sentences
# fairseq.data.indexed_dataset._code_to_dtype, as fairseq-preprocess writes it
_DTYPES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float64,
           8: np.uint16, 9: np.uint32, 10: np.uint64}


class _Split:
    """What one ``.idx`` says about its ``.bin``."""

    def __init__(self, prefix: str):
        self.prefix = prefix
        self.idx, self.bin = prefix + ".idx", prefix + ".bin"
        self.count: Optional[int] = None  # sentences; None for the legacy format
        self.dtype = None

    def read(self) -> None:
        size = os.path.getsize(self.idx)
        with open(self.idx, "rb") as f:
            head = f.read(_HEADER)
        if head.startswith(LEGACY_MAGIC):
            return
        if size == 0:
            raise UsageError(f"{self.idx}: the file is empty; binarize the split again (fairseq-preprocess)")
        if not head.startswith(MMAP_MAGIC) or len(head) < _HEADER:
            raise UsageError(f"{self.idx}: not a fairseq index file (no {MMAP_MAGIC[:7].decode()} header); binarize "
                             "the split again (fairseq-preprocess)")
        version, code, count = struct.unpack("<QBQ", head[len(MMAP_MAGIC):])
        if version != 1 or code not in _DTYPES:
            raise UsageError(f"{self.idx}: unknown index version {version} or dtype code {code}")
        expected = _HEADER + count * (4 + 8)  # int32 sizes, int64 pointers
        if size != expected:
            raise UsageError(f"{self.idx}: {size} bytes, but its header announces {count} sentences ({expected} "
                             "bytes); the file is truncated or damaged")
        self.count, self.dtype = count, np.dtype(_DTYPES[code])
        sizes = np.fromfile(self.idx, dtype=np.int32, count=count, offset=_HEADER)
        data_bytes = int(sizes.astype(np.int64).sum()) * self.dtype.itemsize
        if not os.path.isfile(self.bin):
            raise UsageError(f"{self.bin}: missing beside its index {self.idx}")
        bin_size = os.path.getsize(self.bin)
        if bin_size != data_bytes:
            raise UsageError(f"{self.bin}: {bin_size} bytes, but its index {os.path.basename(self.idx)} describes "
                             f"{data_bytes} ({count} sentences); the .bin is truncated, or the two files come from "
                             "different splits or runs: binarize the split again")

    def max_id(self) -> int:
        if not self.count:
            return -1
        return int(np.memmap(self.bin, dtype=self.dtype, mode="r").max())


def _splits_in(directory: str) -> str:
    names = sorted({os.path.basename(p)[:-4] for p in glob.glob(os.path.join(directory, "*.idx"))})
    return ", ".join(names) if names else "none"


def _check_ids(split: _Split, dictionary, dict_file: str) -> None:
    top = split.max_id()
    if top >= len(dictionary):
        raise UsageError(f"{split.bin} holds token id {top}, but {dict_file} gives only {len(dictionary)} ids "
                         f"(0..{len(dictionary) - 1}, with fairseq's special symbols); the split was binarized with "
                         "another dictionary: binarize it again with this dict.txt")


def check_split(task, split: str) -> None:
    """Raise UsageError unless the binarized files of ``split`` in the task's data directory fit together and with
    the task's dictionaries. ``task``: a sentence_prediction task (its cfg and dictionaries)."""
    data = str(task.cfg.data).split(os.pathsep)[0]
    if "://" in data or not os.path.isdir(data):
        return  # remote storage, or a folder the task's own checks refuse
    input0 = os.path.join(data, "input0")
    first = _Split(os.path.join(input0, split))
    if not os.path.isfile(first.idx) or not os.path.isfile(first.bin):
        raise UsageError(f"{data}: no split {split!r} (no input0/{split}.bin and .idx); the splits here are: "
                         f"{_splits_in(input0)}")
    first.read()
    parts = [("input0", first)]
    input1 = _Split(os.path.join(data, "input1", split))
    if os.path.isfile(input1.idx):
        input1.read()
        parts.append(("input1", input1))
    source_dict = os.path.join(input0, "dict.txt")
    for _, part in parts:
        _check_ids(part, task.source_dictionary, source_dict)
    label_dir = os.path.join(data, "label")
    label_file = os.path.join(label_dir, f"{split}.label")
    labels = _Split(os.path.join(label_dir, split))
    if getattr(task.cfg, "regression_target", False):
        if not os.path.isfile(label_file) and os.path.isfile(labels.idx):
            raise UsageError(f"{label_dir} holds class labels ({split}.bin, dict.txt), but --regression-target asks "
                             f"for regression targets (label/{split}.label, as STS-B): {data} is a classification "
                             "task's data; drop --regression-target and give --num-classes")
        if os.path.isfile(label_file):
            with open(label_file, encoding="utf-8", errors="replace") as f:
                count = sum(1 for _ in f)
            parts.append(("label", None))
            if first.count is not None and count != first.count:
                raise UsageError(f"{label_file}: {count} lines, but {first.idx} has {first.count} sentences; the "
                                 "files come from different splits or runs: binarize the task again")
    elif os.path.isfile(labels.idx):
        labels.read()
        parts.append(("label", labels))
        _check_ids(labels, task.label_dictionary, os.path.join(label_dir, "dict.txt"))
    elif os.path.isfile(label_file):
        raise UsageError(f"{label_dir} holds regression targets ({split}.label, no dict.txt), but the model is a "
                         f"classifier: {data} is a regression task's data (STS-B); train with --regression-target "
                         "--num-classes 1, or use a regression checkpoint")
    counted = [(key, part) for key, part in parts if part is not None and part.count is not None]
    for key, part in counted[1:]:
        if part.count != first.count:
            raise UsageError(f"{part.idx}: {part.count} sentences, but {first.idx} has {first.count}; the files of "
                             f"split {split!r} come from different splits or runs: binarize the task again")
