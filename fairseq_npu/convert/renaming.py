"""Rename a state dict by an ordered list of regular-expression rules; any name no rule covers is an error."""

import re
from typing import Dict, List, Optional, Tuple

import torch

from .errors import reject_unexpected

Rule = Tuple[str, Optional[str]]  # (pattern, replacement); replacement None = drop the tensor (buffers)


def rename(state: Dict[str, torch.Tensor], rules: List[Rule], source: str):
    """Returns (renamed state, {new name: old name})."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out, origin, unknown = {}, {}, []
    for name, tensor in state.items():
        for pattern, replacement in compiled:
            if pattern.fullmatch(name):
                if replacement is not None:
                    new = pattern.sub(replacement, name)
                    out[new] = tensor
                    origin[new] = name
                break
        else:
            unknown.append(name)
    reject_unexpected(unknown, source)
    return out, origin
