"""Configuration files of the command line (issue 21): ``--config`` in TOML or YAML, flags
override it, unknown keys are refused, the resolved ``config.toml`` reads back, and
``train --json`` prints JSON only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from equirelax.experiments.cli import main

_SIZES = {"train_size": 20, "val-size": 10, "test_size": 10, "epochs": 1, "quiet": True}


def _cli(*words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "equirelax", *words], capture_output=True,
                          text=True, check=False)  # fmt: skip


def _toml(values: dict) -> str:
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if not isinstance(v, dict)]
    for table, rows in ((k, v) for k, v in values.items() if isinstance(v, dict)):
        lines += [f"[{table}]", *(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in rows.items())]
    return "\n".join(lines) + "\n"


def test_a_toml_file_sets_the_options_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    config = tmp_path / "run.toml"
    options = {"task": "inertia", "strategy": "cr", **_SIZES, "lr": 0.01, "option": {"weight": 0.5}}
    config.write_text(_toml(options))
    out = tmp_path / "out"
    result = _cli("train", "--config", str(config), "--lr", "0.002", "--out", str(out), "--json")
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)  # nothing but JSON on stdout
    assert (record["task"], record["strategy"]) == ("inertia", "cr")
    assert record["config"]["lr"] == 0.002  # the flag, not the file's 0.01
    assert record["strategy_options"]["weight"] == 0.5
    assert record["config"]["epochs"] == 1
    resolved = (out / "config.toml").read_text()
    again = _cli("train", "--config", str(out / "config.toml"), "--json")
    assert again.returncode == 0, again.stderr
    repeated = json.loads(again.stdout)
    assert repeated["config"] == record["config"]
    assert repeated["strategy_options"] == record["strategy_options"]
    assert (out / "config.toml").read_text() == resolved


def test_compile_off_overrides_a_preset_that_compiles_and_is_written_back(tmp_path: Path) -> None:
    sizes = ("--train-size", "20", "--val-size", "10", "--test-size", "10", "--epochs", "1")
    out = tmp_path / "out"
    words = ("train", "nbody", "--full", "--model", "segnn", *sizes, "--quiet", "--json")
    result = _cli(*words, "--compile", "off", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config"]["compile"] is False  # the preset compiles
    assert "compile = false" in (out / "config.toml").read_text()
    again = _cli("train", "--config", str(out / "config.toml"), "--json", "--out", str(out / "b"))
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["config"]["compile"] is False


def test_a_yaml_file_is_read_like_toml(tmp_path: Path) -> None:
    pytest.importorskip("yaml")
    config = tmp_path / "run.yaml"
    config.write_text("task: gap-dial\ntrain_size: 20\nval_size: 10\ntest_size: 10\nepochs: 1\n"
                      "quiet: true\nstrategies: strict\ntask_option:\n  delta: 0.5\n")  # fmt: skip
    out = tmp_path / "out"
    assert main(["compare", "--config", str(config), "--out", str(out)]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["setup"]["task_options"]["delta"] == 0.5
    assert [run["strategy"] for run in results["runs"]] == ["strict"]


@pytest.mark.parametrize(
    ("text", "name", "message"),
    [
        ("banana = 1\n", "bad.toml", "bad.toml sets 'banana', which `equirelax compare` does not"),
        ("epochs = [1\n", "broken.toml", "broken.toml is not valid"),
        ("full = 3\n", "flag.toml", "full: expected true or false, received 3"),
        ("epochs: 2\n", "run.json", "expected a file ending in .toml, .yaml or .yml"),
        ("option = 3\n", "table.toml", "option: expected a table of KEY = VALUE, received 3"),
    ],
)
def test_a_bad_configuration_file_is_a_usage_error_that_names_it(
    tmp_path: Path, text: str, name: str, message: str
) -> None:
    path = tmp_path / name
    path.write_text(text)
    result = _cli("compare", "inertia", "--config", str(path), "--out", str(tmp_path / "out"))
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert f"--config: {path}" in result.stderr or message in result.stderr
    assert message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_command_without_a_task_says_where_to_give_it(tmp_path: Path) -> None:
    result = _cli("train", "--epochs", "1")
    assert (result.returncode, "Traceback" in result.stderr) == (2, False)
    assert "task: expected one of nbody" in result.stderr
    assert "as task in --config" in result.stderr
