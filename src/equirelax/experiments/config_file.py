"""Configuration files of the command line (``--config FILE``, TOML or YAML).

A file holds the long options of one command as keys (``epochs = 200``, ``lr = 5e-4``,
``full = true``, ``strategies = "strict,cr"``; dashes or underscores), the task as ``task``, and
the repeatable ``KEY=VALUE`` options as tables (``[option]`` with ``"cr.weight" = 0.1``). The
command line reads it as if its options were typed before the ones given, so a flag given on
the command line overrides the file. :func:`format_config` writes the resolved configuration
of a run (``config.toml`` beside its results), which ``--config`` reads back.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

__all__ = ["CONFIG_TOML", "config_words", "format_config", "read_config"]

CONFIG_TOML = "config.toml"
"""The resolved configuration a command writes beside its results."""

_INTERNAL = frozenset({"command", "subparser", "config", "debug", "help"})
# Options whose false value is a choice to keep (`--compile off` overrides a preset), not a default
_OFF = frozenset({"compile"})


def read_config(path: Path) -> dict[str, Any]:
    """The mapping in a ``.toml``, ``.yaml`` or ``.yml`` file; a ``ValueError`` naming the file
    and what is wrong otherwise (``YAML`` needs PyYAML)."""
    if not path.is_file():
        raise ValueError(
            f"--config: expected a TOML or YAML file, received {path}, which is not one"
        )
    if path.suffix not in (".toml", ".yaml", ".yml"):
        raise ValueError(
            f"--config: expected a file ending in .toml, .yaml or .yml, received {path}"
        )
    load = _toml_loader() if path.suffix == ".toml" else _yaml_loader(path)
    try:
        values = load(path.read_text())
    except Exception as error:  # the parsers' syntax errors
        raise ValueError(f"--config: {path} is not valid ({error})") from None
    if not isinstance(values, dict):
        raise ValueError(f"--config: expected a mapping of options in {path}")
    return values


def _toml_loader() -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads


def _yaml_loader(path: Path) -> Any:
    try:
        import yaml
    except ModuleNotFoundError:
        raise ValueError(
            f"--config: reading {path} needs PyYAML; pip install pyyaml, or use TOML"
        ) from None
    return yaml.safe_load


def config_words(
    values: dict[str, Any], parser: argparse.ArgumentParser, path: Path
) -> tuple[str | None, list[str]]:
    """The task and the command-line words for ``values`` (:func:`read_config`) of the command
    ``parser`` parses; a ``ValueError`` naming a key the command does not take."""
    options = parser._option_string_actions  # argparse's table of flags
    task = values.get("task")
    words: list[str] = []
    for key, value in values.items():
        if key == "task":
            continue
        flag = "--" + key.replace("_", "-")
        action = options.get(flag)
        if action is None or key in _INTERNAL or flag in ("--help", "--config"):
            known = sorted(
                a.dest for a in parser._actions if a.option_strings and a.dest not in _INTERNAL
            )
            raise ValueError(
                f"--config: {path} sets {key!r}, which `{parser.prog}` does not take; expected "
                f"one of task, {', '.join(known)}"
            )
        words += _words(flag, value, action)
    if task is not None and not isinstance(task, str):
        raise ValueError(f"--config: task: expected a task name, received {task!r}")
    return task, words


def _words(flag: str, value: Any, action: argparse.Action) -> list[str]:
    if action.nargs == 0:  # a flag
        if not isinstance(value, bool):
            raise ValueError(f"--config: {flag[2:]}: expected true or false, received {value!r}")
        return [flag] if value else []
    if action.default == []:  # the repeatable KEY=VALUE options
        pairs = value.items() if isinstance(value, dict) else None
        if pairs is None:
            raise ValueError(
                f"--config: {flag[2:]}: expected a table of KEY = VALUE, received {value!r}"
            )
        return [part for key, item in pairs for part in (flag, f"{key}={_literal(item)}")]
    if isinstance(value, bool) and action.nargs == "?":  # compile = true / false
        return [flag] if value else [flag, "off"]
    return [flag, str(value)]


def _literal(value: Any) -> str:
    """``value`` as the Python literal a ``KEY=VALUE`` option reads back."""
    return repr(value) if isinstance(value, (str, list, dict)) else str(value)


def format_config(args: argparse.Namespace) -> str:
    """The resolved options of a parsed command as TOML (what :func:`read_config` reads)."""
    scalars, tables = [], []
    for key, value in sorted(vars(args).items()):
        if key in _INTERNAL or value is None or value == [] or (value is False and key not in _OFF):
            continue
        if isinstance(value, list):  # KEY=VALUE options
            rows = "".join(f"{json.dumps(k)} = {_toml(v)}\n" for k, v in value)
            tables.append(f"\n[{key}]\n{rows}")
        else:
            scalars.append(f"{key} = {_toml(value)}\n")
    return "".join(scalars) + "".join(tables)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(str(value))
