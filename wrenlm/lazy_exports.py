"""Module-level `__getattr__` for packages whose exports import heavy libraries only when first used (PEP 562)."""

import importlib
import sys


def lazy_getattr(package: str, homes: dict[str, str]):
    """A `__getattr__` for `package` that imports `name` from its submodule `homes[name]` on first access."""

    def __getattr__(name):
        if name in homes:
            value = getattr(importlib.import_module(f".{homes[name]}", package), name)
            setattr(sys.modules[package], name, value)  # later lookups skip this function
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
