"""Lazy public names for a package (PEP 562): a name loads its module on first use, so importing
the package costs almost nothing and the command line answers without loading torch."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, submodules: Iterable[str], attributes: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for ``package``: ``package.<submodule>`` imports the submodule,
    ``package.<name>`` imports ``attributes[name]`` (a module path) and returns its ``name``,
    which is then kept in the package's namespace."""
    modules = frozenset(submodules)

    def load(name: str) -> Any:
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        if name in attributes:
            value = getattr(importlib.import_module(attributes[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def names() -> list[str]:
        return sorted({*vars(sys.modules[package]), *modules, *attributes})

    return load, names
