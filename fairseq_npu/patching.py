"""How fairseq_npu replaces an attribute of stock fairseq: once, keeping the original reachable.

A leaf module (standard library only): the hooks in ``fairseq_npu/hooks/`` and the components whose logic they
install import it; it imports nothing of the plugin.
"""

import functools
import types
from typing import Callable

_ORIGINAL = "__fairseq_npu_original__"
_MAKE = "__fairseq_npu_make__"


def wrap(owner, name: str, make_wrapper: Callable) -> bool:
    """Replace ``owner.name`` by ``make_wrapper(original)`` once; True if this call replaced it.

    A second call finds the replacement (it carries its original) and changes nothing. A ``classmethod`` or
    ``staticmethod`` of a class is replaced by a ``staticmethod``: the original, read with ``getattr``, is already
    bound, so the wrapper takes the call's arguments as they are.
    """
    original = getattr(owner, name)
    if hasattr(original, _ORIGINAL):
        return False
    wrapper = make_wrapper(original)
    if callable(original) and not isinstance(original, type) and not isinstance(wrapper, type):
        functools.update_wrapper(wrapper, original)
    setattr(wrapper, _ORIGINAL, original)
    setattr(wrapper, _MAKE, make_wrapper)  # lets tests build the same wrapper around a stand-in original
    if isinstance(owner, type) and isinstance(vars(owner).get(name), (classmethod, staticmethod)):
        wrapper = staticmethod(wrapper)
    setattr(owner, name, wrapper)
    return True


def original_of(obj):
    """The stock object behind a hook (tests, and wrappers that must call around the hook)."""
    return getattr(obj, _ORIGINAL, obj)


def is_hooked(owner, name: str) -> bool:
    return hasattr(getattr(owner, name), _ORIGINAL)


def rewrap(hooked, original):
    """The wrapper of an installed hook, built around ``original`` instead of the stock function (tests)."""
    return getattr(hooked, _MAKE)(original)


class ModuleProxy(types.ModuleType):
    """A module as one fairseq module sees it: every attribute forwarded to the real module, except those a
    subclass defines. Installed with ``wrap(fairseq_module, "torch", SubclassOfModuleProxy)``, so that one module's
    use of ``torch.load`` (or ``np.compat``) changes without touching the library for everyone else."""

    def __init__(self, module):
        super().__init__(module.__name__)
        self._module = module

    def __getattr__(self, name):
        return getattr(self._module, name)
