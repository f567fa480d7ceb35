"""Write fairseq binary datasets with fairseq's own pieces, byte for byte what fairseq-preprocess writes.

fairseq-preprocess (dataset impl ``mmap``) stores each split as ``<split>.bin`` (all token ids back to back, in
``best_fitting_int_dtype(len(dictionary))``) and ``<split>.idx`` (``MMapIndexedDataset.Index``: sizes and byte
offsets). The ids are computed in bulk elsewhere; here they are cast to that dtype and the index is written by
fairseq's own ``Index.writer``. Label dictionaries are built like ``fairseq-preprocess --only-source`` without
``--srcdict`` builds them: counts from the train split, ``Dictionary.finalize`` (by count, ties alphabetical,
padded to a multiple of 8 with ``madeupwordNNNN``).
"""

from collections import Counter
from pathlib import Path
from typing import Sequence, Tuple

import numpy as np
from fairseq.data import Dictionary
from fairseq.data.indexed_dataset import MMapIndexedDataset, best_fitting_int_dtype

LABEL_PADDING_FACTOR = 8  # fairseq-preprocess's default --padding-factor


def write_dataset(prefix: Path, ids: np.ndarray, sizes: np.ndarray, vocab_size: int) -> None:
    """``prefix.bin`` + ``prefix.idx`` for sentences given as flat ``ids`` and per-sentence ``sizes``."""
    dtype = best_fitting_int_dtype(vocab_size)
    if len(ids) and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"{prefix}: token id outside the dictionary (size {vocab_size})")
    prefix = Path(prefix)
    with open(f"{prefix}.bin", "wb") as f:
        f.write(ids.astype(dtype).tobytes(order="C"))
    with MMapIndexedDataset.Index.writer(f"{prefix}.idx", dtype) as index:
        index.write(np.asarray(sizes, dtype=np.int64).tolist())


def build_label_dictionary(train_labels: Sequence[str]) -> Dictionary:
    """The label dictionary fairseq-preprocess builds from ``train.label`` (one label per line)."""
    d = Dictionary()
    for label, count in sorted(Counter(train_labels).items()):
        d.add_symbol(label, n=count)
    d.finalize(threshold=-1, nwords=-1, padding_factor=LABEL_PADDING_FACTOR)
    return d


def encode_labels(dictionary: Dictionary, labels: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """Each label as ``[index, </s>]``, as ``Dictionary.encode_line`` writes a one-word line."""
    ids = np.empty(2 * len(labels), dtype=np.int64)
    ids[0::2] = [dictionary.index(label) for label in labels]
    ids[1::2] = dictionary.eos()
    return ids, np.full(len(labels), 2, dtype=np.int32)
