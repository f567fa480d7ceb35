"""Run as a script by tests/test_hooks.py: which attributes of fairseq's modules and classes change when the plugin
is imported, next to what ``python -m fairseq_npu.hooks --json`` says it replaced. Prints one JSON object.

argv[1]: a JSON list of the fairseq modules to import (and snapshot) before the plugin.
"""

import contextlib
import importlib
import io
import json
import runpy
import sys

_MISSING = object()


def snapshot(module_names):
    """{qualified name: (owner, {attribute: object})} for the modules and the classes they define."""
    owners = {}
    for module in {id(sys.modules[n]): sys.modules[n] for n in module_names}.values():
        name = module.__name__  # fairseq also registers some modules under a legacy alias (fairseq.distributed_utils)
        owners[name] = (module, dict(vars(module)))
        for value in list(vars(module).values()):
            if isinstance(value, type) and value.__module__ == name:
                owners[f"{name}.{value.__qualname__}"] = (value, dict(vars(value)))
    return owners


def main():
    wanted = json.loads(sys.argv[1])
    names = []
    for name in wanted:
        importlib.import_module(name)
        names.append(name)
    before = snapshot(names)
    import fairseq_npu  # noqa: F401  (installs the hooks)

    changed = []
    for key, (owner, attributes) in before.items():
        now = vars(owner)
        for attribute in set(attributes) | set(now):
            if attributes.get(attribute, _MISSING) is not now.get(attribute, _MISSING):
                changed.append(f"{key}.{attribute}")
    new_modules = sorted(m for m in sys.modules if (m == "fairseq" or m.startswith("fairseq.")) and m not in names)
    out = io.StringIO()
    sys.argv = ["fairseq_npu.hooks", "--json"]
    with contextlib.redirect_stdout(out):
        runpy.run_module("fairseq_npu.hooks", run_name="__main__")
    print(json.dumps({"changed": sorted(changed), "listed": json.loads(out.getvalue()), "new_modules": new_modules}))


if __name__ == "__main__":
    main()
