"""Conversion errors and the strict check that names every missing, unexpected or wrongly shaped tensor."""

from typing import Dict, Iterable

import torch


class ConversionError(ValueError):
    pass


def reject_unexpected(names: Iterable[str], source: str) -> None:
    names = sorted(names)
    if names:
        raise ConversionError(
            f"{source}: unexpected tensor {names[0]!r}"
            + (f" (and {len(names) - 1} more: {', '.join(names[1:4])}{'...' if len(names) > 4 else ''})" if len(names) > 1 else "")
            + "; not part of the model this converter knows"
        )


def check_complete(converted: Dict[str, torch.Tensor], reference: Dict[str, torch.Tensor], source: str,
                   source_name_of=None) -> None:
    """Every tensor of ``reference`` (the target model's state dict) present with its shape, and nothing else.

    ``source_name_of(target_name)`` turns a target name back into the source checkpoint's name for the message.
    """
    name = source_name_of or (lambda k: k)
    missing = [k for k in reference if k not in converted]
    if missing:
        raise ConversionError(
            f"{source}: missing tensor {name(missing[0])!r} (fairseq {missing[0]})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    reject_unexpected([name(k) for k in converted if k not in reference], source)
    for k, v in converted.items():
        if tuple(v.shape) != tuple(reference[k].shape):
            raise ConversionError(
                f"{source}: tensor {name(k)!r} has shape {list(v.shape)}, expected {list(reference[k].shape)} "
                f"from the config (fairseq {k})"
            )
