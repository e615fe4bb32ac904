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


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys; print('MODULES', *sys.modules)"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return set(out.stdout.rpartition("MODULES")[2].split())


def test_the_command_line_answers_help_and_version_without_torch() -> None:
    code = (
        "from equirelax.experiments.cli import main\n"
        "for words in (['--help'], ['--version'], ['train', '--help'], ['compare', '--help'],"
        " ['adapt', '--help'], ['break', '--help']):\n"
        "    try:\n        main(words)\n    except SystemExit as done:\n"
        "        assert done.code == 0, words"
    )
    loaded = _modules_after(code)
    assert "torch" not in loaded
    assert "numpy" not in loaded


def test_the_library_loads_what_it_uses_and_not_e3nn_before_it_is_needed() -> None:
    assert "torch" not in _modules_after("import equirelax")
    loaded = _modules_after(
        "import equirelax\n"
        "equirelax.relax, equirelax.train, equirelax.project, equirelax.assert_equivariant\n"
        "from equirelax.nn import EGNN\nfrom equirelax.groups import O3\nO3().identity()"
    )
    assert {"torch", "equirelax.relaxed", "equirelax.engine", "equirelax.nn.egnn"} <= loaded
    assert "e3nn" not in loaded
    assert "equirelax.nn.steerable" not in loaded


def test_the_command_lines_names_agree_with_the_registries() -> None:
    from equirelax._constants import BREAKING_MODES, TIE_BREAKS
    from equirelax.breaking import objects
    from equirelax.experiments import adapt, compare, names, task_registry
    from equirelax.models import breaking

    assert tuple(task_registry.TASKS) == names.TASK_NAMES
    assert tuple(compare.STRATEGY_PRESETS) == names.STRATEGY_LABELS
    assert set(names.DEFAULT_STRATEGIES) <= set(names.STRATEGY_LABELS)
    assert tuple(adapt.ARMS) == names.ADAPT_ARMS
    assert (BREAKING_MODES, TIE_BREAKS) == (breaking.ARMS, objects.TIE_BREAKS)


def test_lazy_names_resolve_and_are_listed() -> None:
    for package in (equirelax, equirelax.nn):
        assert set(package.__all__) <= set(dir(package))
        for name in package.__all__:
            assert getattr(package, name) is not None
    with pytest.raises(AttributeError, match="module 'equirelax' has no attribute 'relaxx'"):
        equirelax.relaxx  # noqa: B018
