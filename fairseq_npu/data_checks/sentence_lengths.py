"""Sentences longer than the model's positions, named in one line.

fairseq's ``filter_indices_by_size`` raises a bare Exception (a traceback) for the first sentence longer than
``--max-positions`` in a split it may not skip (validation, evaluation, prediction; training skips them with a
warning, as in stock). Here it is a UsageError naming the split, the sentence and how many are too long.
"""

from fairseq_npu.errors import UsageError


def check_lengths(task, indices, dataset, max_positions) -> None:
    """Raise UsageError if a sentence of ``dataset`` (at ``indices``) is longer than ``max_positions``."""
    _, ignored = dataset.filter_indices_by_size(indices, max_positions)
    if len(ignored) == 0:
        return
    split = next((name for name, d in getattr(task, "datasets", {}).items() if d is dataset), None)
    where = f"split {split!r}" if split is not None else "the data"
    first = int(ignored[0])
    raise UsageError(f"{where}: sentence {first} has {dataset.size(first)} tokens, more than the model's max "
                     f"positions ({max_positions}); {len(ignored)} of {len(indices)} sentences are too long: raise "
                     "--max-positions when training from scratch (a pretrained model's is fixed), shorten them, or "
                     "pass --skip-invalid-size-inputs-valid-test to fairseq-train to skip them")
