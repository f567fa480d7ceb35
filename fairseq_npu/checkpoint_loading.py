"""Load fairseq checkpoints with ``weights_only=True`` and an explicit allowlist.

torch >= 2.6 loads with ``weights_only=True`` by default, and stock fairseq's checkpoints then fail to load:
they pickle ``argparse.Namespace`` (legacy ``args``, e.g. roberta.base ``model.pt``), omegaconf containers
(``cfg``) and, in training state, numpy scalars. Turning ``weights_only`` off would run whatever a checkpoint
pickles. Instead the types fairseq checkpoints legitimately contain are allowlisted here, and anything else is
refused with an error that names the file and the offending global.
"""

import argparse
import collections
import pickle
import typing

import torch

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


class UnsafeCheckpointError(pickle.UnpicklingError):
    pass


def safe_load(f, map_location=None, **kwargs):
    """``torch.load`` restricted to tensors and the allowlisted types."""
    kwargs.pop("weights_only", None)
    name = getattr(f, "name", f if isinstance(f, str) else "<stream>")
    try:
        with torch.serialization.safe_globals(allowed_globals()):
            return torch.load(f, map_location=map_location, weights_only=True, **kwargs)
    except pickle.UnpicklingError as err:
        lines = [line.strip() for line in str(err).splitlines() if "Unsupported global" in line]
        detail = (lines[0] if lines else str(err).splitlines()[0]).split(". Please use")[0]
        detail = detail.replace("WeightsUnpickler error: ", "")
        raise UnsafeCheckpointError(
            f"refusing to load checkpoint {name}: it pickles an object outside the fairseq checkpoint "
            f"allowlist (fairseq_npu.checkpoint_loading.allowed_globals): {detail}"
        ) from None


class TorchWithSafeLoad(ModuleProxy):
    """Stands in for ``torch`` inside fairseq.checkpoint_utils: same module, but ``load`` is ``safe_load``."""

    @staticmethod
    def load(f, map_location=None, **kwargs):
        return safe_load(f, map_location=map_location, **kwargs)
