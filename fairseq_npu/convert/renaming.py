"""Two-way tensor renaming by name templates such as ``"a.{g}.b.{w}" -> "x.{g}.{w}"``.

Forward, every source name must match a rule (else it is reported as unexpected); backward, a target name is
turned into the source name it would come from, so errors about missing tensors speak the source's language, and
``backward`` renames a whole target state dict back (the exporter runs the converter's tables in reverse).
"""

import re
from typing import Dict, List, Optional, Tuple

import torch

from .errors import reject_unexpected

Rule = Tuple[str, Optional[str]]  # (source template, target template); target None = drop (buffers)


def _regex(template: str):
    parts = re.split(r"\{(\w+)\}", template)
    pattern = "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^.]+)" for i, p in enumerate(parts))
    return re.compile(pattern)


class Renamer:
    def __init__(self, rules: List[Rule]):
        self.rules = [(_regex(s), s, _regex(t) if t else None, t) for s, t in rules]

    def forward(self, state: Dict[str, torch.Tensor], source: str):
        out, unknown = {}, []
        for name, tensor in state.items():
            for src_re, _, _, target in self.rules:
                m = src_re.fullmatch(name)
                if m:
                    if target is not None:
                        out[target.format(**m.groupdict())] = tensor
                    break
            else:
                unknown.append(name)
        reject_unexpected(unknown, source)
        return out

    def backward(self, state: Dict[str, torch.Tensor], source: str):
        """Target names -> source names; the first rule producing a name wins, as in :meth:`source_name`."""
        out, unknown = {}, []
        for name, tensor in state.items():
            for _, src, target_re, _ in self.rules:
                m = target_re.fullmatch(name) if target_re is not None else None
                if m:
                    out[src.format(**m.groupdict())] = tensor
                    break
            else:
                unknown.append(name)
        reject_unexpected(unknown, source)
        return out

    def source_name(self, target_name: str) -> str:
        for _, src, target_re, _ in self.rules:
            m = target_re.fullmatch(target_name) if target_re is not None else None
            if m:
                return src.format(**m.groupdict())
        return target_name
