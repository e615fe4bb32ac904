"""The package's public face (issue 19): the library never loads the experiments floor, every
public module declares ``__all__``, and the README's imports work."""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

import equirelax

README = Path(__file__).resolve().parents[1] / "README.md"
# Public modules built on an optional dependency (an extra of pyproject.toml): its import name.
_OPTIONAL = {"equirelax.integrations.lightning": "lightning"}


def _public_modules() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(equirelax.__path__, "equirelax."):
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return names


def test_importing_the_library_loads_no_runner_and_no_optional_framework() -> None:
    code = (
        "import sys, equirelax, equirelax.canonical, equirelax.models, equirelax.breaking, "
        "equirelax.integrations; "
        "print(sorted(m for m in sys.modules if m.startswith('equirelax.experiments') "
        f"or m.split('.')[0] in {sorted(set(_OPTIONAL.values()))}))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert loaded == "[]"


@pytest.mark.parametrize("name", _public_modules())
def test_every_public_module_declares_what_it_exports(name: str) -> None:
    if name in _OPTIONAL:
        pytest.importorskip(_OPTIONAL[name])
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert isinstance(exported, list), f"{name} has no __all__"
    missing = [item for item in exported if not hasattr(module, item)]
    assert not missing, f"{name}.__all__ names {missing}, which it does not define"


def _readme_imports() -> list[str]:
    text = README.read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    lines = []
    for block in blocks:
        statement = ""
        for line in block.splitlines():
            if statement or re.match(r"(from equirelax\S* import|import equirelax)", line):
                statement += line.strip() + " "
                if statement.count("(") == statement.count(")"):
                    lines.append(statement.strip())
                    statement = ""
    return lines


def test_the_readme_imports_work() -> None:
    statements = _readme_imports()
    assert len(statements) >= 5
    missing = [
        name for name, dependency in _OPTIONAL.items() if not importlib.util.find_spec(dependency)
    ]
    for statement in statements:
        if not any(name in statement for name in missing):
            exec(statement, {})  # a failure names the statement in the traceback
