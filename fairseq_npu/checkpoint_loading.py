"""Load fairseq checkpoints with ``weights_only=True`` and an explicit allowlist.

torch >= 2.6 loads with ``weights_only=True`` by default, and stock fairseq's checkpoints then fail to load:
they pickle ``argparse.Namespace`` (legacy ``args``, e.g. roberta.base ``model.pt``), omegaconf containers
(``cfg``) and, in training state, numpy scalars. Turning ``weights_only`` off would run whatever a checkpoint
pickles. Instead the types fairseq checkpoints legitimately contain are allowlisted here, and anything else is
refused with an error that names the file and the offending global. Two more refusals, each one line naming the
file: a truncated or damaged file (naming the newest intact checkpoint next to it), and a config that holds an
OmegaConf resolver interpolation (``${oc.env:VAR}``), which fairseq would evaluate when it reads the config.

Every file is verified before torch reads it (:func:`verify_checkpoint_file`): torch writes zip archives with a
CRC-32 per member but never checks them, so a byte flipped in a tensor loaded as a wrong number (NaN optimizer
moments that trained on and exited 0). The check reads the whole file once more (docs/checkpoints.md: its cost).
"""

import argparse
import collections
import os
import pathlib
import pickle
import re
import struct
import typing
import zipfile
from typing import Optional

import torch

from fairseq_npu.errors import UsageError
from fairseq_npu.patching import ModuleProxy


def _omegaconf_globals():
    import omegaconf
    from omegaconf import base, listconfig, dictconfig, nodes

    found = [dictconfig.DictConfig, listconfig.ListConfig, base.ContainerMetadata, base.Metadata]
    for name in ("AnyNode", "StringNode", "IntegerNode", "FloatNode", "BooleanNode", "EnumNode", "BytesNode",
                 "PathNode", "InterpolationResultNode", "ValueNode"):
        if hasattr(nodes, name):
            found.append(getattr(nodes, name))
    if hasattr(omegaconf, "_utils") and hasattr(omegaconf._utils, "ValueKind"):
        found.append(omegaconf._utils.ValueKind)
    return found


def _numpy_globals():
    import numpy as np

    found = [np.ndarray, np.dtype]
    # scalars (e.g. a best-checkpoint score) pickle through numpy's reconstruct helpers and dtype classes
    for module_name in ("numpy.core.multiarray", "numpy._core.multiarray"):
        try:
            module = __import__(module_name, fromlist=["scalar", "_reconstruct"])
        except ImportError:
            continue
        found += [module.scalar, module._reconstruct]
    for name in ("float64", "float32", "float16", "int64", "int32", "bool_", "uint8"):
        found.append(getattr(np, name))
        found.append(type(np.dtype(name)))
    return found


def allowed_globals() -> list:
    """Everything besides tensors and builtin containers that a fairseq checkpoint may pickle."""
    from fairseq.distributed.utils import _TensorPlaceholder  # stands for tensors in a broadcast checkpoint state

    return [
        _TensorPlaceholder,
        argparse.Namespace,
        collections.OrderedDict,
        collections.defaultdict,
        typing.Any,
        dict, list, set, tuple, int, float, bool, str, bytes, type(None),
        *_omegaconf_globals(),
        *_numpy_globals(),
    ]


class CheckpointLoadError(UsageError):
    """A checkpoint that cannot be loaded; the message is one line that names the file."""


class UnsafeCheckpointError(CheckpointLoadError, pickle.UnpicklingError):
    """The checkpoint pickles something outside the allowlist, or its config would run a resolver."""


class CorruptCheckpointError(CheckpointLoadError):
    """The file is truncated or damaged (e.g. a save that was killed half-way)."""


_ALLOWLIST = "the fairseq checkpoint allowlist (fairseq_npu.checkpoint_loading.allowed_globals)"
# torch's weights_only refusals name the global in one of two wordings; both are kept as torch words them
_REFUSED_GLOBAL = (
    re.compile(r"Unsupported global: GLOBAL \S+ was not an allowed global by default"),
    re.compile(r"Trying to load unsupported GLOBAL \S+ whose module \S+ is blocked"),
)


def _refusal_detail(message: str) -> str:
    """torch's own reason, without the advice around it (which suggests ``weights_only=False``)."""
    for pattern in _REFUSED_GLOBAL:
        found = pattern.search(message)
        if found:
            return found.group(0)
    # any other refusal (a reduce of an unlisted function, an unsupported opcode, ...): torch puts its reason
    # after "WeightsUnpickler error: " or in a paragraph of its own between its advice and a documentation link
    text = message.split("WeightsUnpickler error: ", 1)[-1]
    paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
    reasons = [p for p in paragraphs
               if not p.startswith(("Weights only load failed", "Check the documentation of torch.load"))]
    if reasons:
        return reasons[0].splitlines()[0].rstrip(".")
    first = paragraphs[0].splitlines()[0] if paragraphs else message
    return first.replace("Weights only load failed. ", "").rstrip(".")


def _unlisted_globals(path) -> list:
    """The globals of a zip checkpoint outside torch's and the plugin's allowlists ([] if it cannot be read)."""
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:
        return []


_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTO = b"\x80"  # torch's legacy (pre-zip) format is a pickle stream, protocol 2 or later


def _damage(path) -> Optional[str]:
    """Why the file at ``path`` is not a complete checkpoint, or None if it looks complete.

    torch writes zip archives (stored, with CRCs) and reads them without checking the CRCs, so a truncated or
    overwritten file is recognised here with ``zipfile``; files in torch's legacy format cannot be checked.
    """
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as err:
        return f"cannot be read ({err.strerror or err})"
    if not magic:
        return "the file is empty"
    if magic != _ZIP_MAGIC:
        return f"the file ends after {len(magic)} bytes" if _ZIP_MAGIC.startswith(magic) else None
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                # torch stores its members uncompressed: a directory entry that says otherwise is damaged
                if info.compress_type == zipfile.ZIP_STORED and info.compress_size != info.file_size:
                    return f"the zip directory entry of {info.filename} is damaged"
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as err:
        return f"incomplete zip archive: {err}"
    return f"{bad} in the archive fails its CRC check" if bad is not None else None


def _not_a_checkpoint(path) -> Optional[str]:
    """Why the file is no PyTorch checkpoint at all (a text file given as --path), or None."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if not head or head.startswith(_PICKLE_PROTO) or _ZIP_MAGIC.startswith(head[:4]) or head.startswith(_ZIP_MAGIC):
        return None
    shown = head.decode("utf-8", "replace")
    text = all(c.isprintable() or c in "\t\r\n" for c in shown)
    looks = f"it starts with {shown!r}" if text else f"it starts with bytes {head[:8].hex(' ')}"
    return f"{path} is not a PyTorch checkpoint ({looks}; neither torch's zip archive nor its legacy format)"


def verify_checkpoint_file(path) -> None:
    """Raise CheckpointLoadError if the file at ``path`` is not a complete, undamaged PyTorch checkpoint.

    Run before every load of a file (resume, --finetune-from-model, evaluate, predict, export, convert), so a
    damaged file is refused before any of it is used, in one line naming the file and what is wrong."""
    other = _not_a_checkpoint(path)
    if other is not None:
        raise CheckpointLoadError(other)
    reason = _damage(path)
    if reason is not None:
        raise CorruptCheckpointError(corrupt_checkpoint_message(path, reason))


def _legacy_damage(err: Exception) -> Optional[str]:
    """Why a file in torch's legacy (pre-zip) format failed to load, if the error says it is cut short or damaged."""
    if isinstance(err, (EOFError, IndexError, struct.error)):
        return "the file ends unexpectedly"
    message = str(err).splitlines()[0] if str(err) else ""
    if isinstance(err, RuntimeError) and ("unexpected EOF" in message or "corrupt" in message.lower()):
        return message.rstrip(".")
    return None


def _loads(path) -> bool:
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            torch.load(path, map_location="cpu", weights_only=True)
        return True
    except Exception:
        return False


def newest_intact_checkpoint(directory, exclude=None) -> Optional[str]:
    """The most recently written ``*.pt`` in ``directory`` (other than ``exclude``) that is a complete checkpoint."""
    directory = pathlib.Path(directory)
    excluded = pathlib.Path(exclude).resolve() if exclude is not None else None
    try:
        candidates = [p for p in directory.glob("*.pt") if p.is_file() and p.resolve() != excluded]
    except OSError:
        return None
    for path in sorted(candidates, key=lambda p: (p.stat().st_mtime_ns, p.name), reverse=True):
        with open(path, "rb") as f:
            is_zip = f.read(4) == _ZIP_MAGIC
        if (_damage(path) is None) if is_zip else _loads(path):
            return str(path)
    return None


def corrupt_checkpoint_message(name, reason: str) -> str:
    directory = os.path.dirname(os.path.abspath(name))
    intact = newest_intact_checkpoint(directory, exclude=name)
    where = (f"the newest intact checkpoint in {directory} is {intact} (resume from it with --restore-file {intact})"
             if intact else f"there is no intact checkpoint in {directory}")
    return f"checkpoint {name} is truncated or corrupt ({reason}); {where}"


def _resolver_interpolations(value, where: str):
    """(key, string) for every string under ``value`` that holds an OmegaConf resolver (``${oc.env:HOME}``)."""
    from omegaconf import OmegaConf, grammar_parser
    from omegaconf.errors import GrammarParseError
    from omegaconf.grammar.gen.OmegaConfGrammarParser import OmegaConfGrammarParser

    def has_resolver(node) -> bool:
        if isinstance(node, OmegaConfGrammarParser.InterpolationResolverContext):
            return True
        return any(has_resolver(child) for child in (node.getChildren() if hasattr(node, "getChildren") else ()))

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    elif isinstance(value, argparse.Namespace):
        value = vars(value)
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _resolver_interpolations(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _resolver_interpolations(item, f"{where}[{i}]")
    elif isinstance(value, str) and "${" in value:
        try:
            tree = grammar_parser.parse(value)
        except GrammarParseError:
            return  # omegaconf cannot evaluate it either
        if has_resolver(tree):
            yield where, value


def check_config_interpolations(state, name) -> None:
    """Refuse a checkpoint whose cfg / args would run an OmegaConf resolver when fairseq reads them.

    fairseq turns ``cfg`` (and legacy ``args``) into an OmegaConf config, which evaluates ``${oc.env:VAR}`` and
    other resolvers on access: a checkpoint could read the environment (or, with a registered resolver, more) and
    change what is loaded. References to other config keys (``${common.seed}``) stay allowed.
    """
    if not isinstance(state, dict):
        return
    for key in ("cfg", "args"):
        for where, value in _resolver_interpolations(state.get(key), key):
            raise UnsafeCheckpointError(
                f"refusing to load checkpoint {name}: {where} = {value!r} is an OmegaConf resolver interpolation, "
                f"which fairseq would evaluate when it reads the config"
            )


def safe_load(f, map_location=None, **kwargs):
    """``torch.load`` restricted to tensors and the allowlisted types; damaged files get a one-line error."""
    kwargs.pop("weights_only", None)
    name = getattr(f, "name", f if isinstance(f, (str, os.PathLike)) else "<stream>")
    if isinstance(name, (str, os.PathLike)) and os.path.isfile(name):
        verify_checkpoint_file(name)  # a stream (rank 0's broadcast state) has no file to check
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            state = torch.load(f, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        detail = _refusal_detail(str(err))
        if "GLOBAL " not in detail and isinstance(name, (str, os.PathLike)):
            reason = _damage(name)  # a file cut short can read as an unknown opcode
            if reason is not None:
                raise CorruptCheckpointError(corrupt_checkpoint_message(name, reason)) from None
            unlisted = _unlisted_globals(name)
            if unlisted:
                detail += f" (globals outside the allowlist: {', '.join(unlisted)})"
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {name}: it pickles an object outside {_ALLOWLIST}: {detail}"
        ) from None
    except (EOFError, RuntimeError, OSError, IndexError, struct.error) as err:
        if isinstance(err, FileNotFoundError) or not isinstance(name, (str, os.PathLike)):
            raise
        reason = _damage(name) or _legacy_damage(err)
        if reason is None:
            raise
        raise CorruptCheckpointError(corrupt_checkpoint_message(name, reason)) from None
    check_config_interpolations(state, name)
    return state


class TorchWithSafeLoad(ModuleProxy):
    """Stands in for ``torch`` inside fairseq.checkpoint_utils: same module, but ``load`` is ``safe_load``."""

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return safe_load(f, map_location=map_location, **kwargs)
