"""Import every module of a registry package, as fairseq does for its own models/ and tasks/."""

import importlib
import pkgutil


def import_all_modules(package_name, package_path):
    for info in sorted(pkgutil.iter_modules(package_path), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package_name}.{info.name}")
