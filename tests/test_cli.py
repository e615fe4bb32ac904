"""The ``equirelax`` command line: tasks listing, compare outputs and resume, train, and the
errors for unknown names and invalid numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from equirelax.experiments import compare as compare_module
from equirelax.experiments.cli import main

TINY = [
    "--train-size", "12", "--val-size", "8", "--test-size", "8", "--epochs", "2",
    "--batch-size", "6", "--model-option", "hidden_features=8", "--model-option",
    "num_layers=2", "--quiet",
]  # fmt: skip


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EQUIRELAX_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def _compare(out: Path, *extra: str) -> int:
    return main(
        ["compare", "nbody", *TINY, "--strategies", "strict,cr,ace-resilient", "--seeds", "2",
         "--out", str(out), *extra]
    )  # fmt: skip


@pytest.mark.slow
def test_compare_writes_results_json_markdown_and_plots(tmp_path: Path) -> None:
    assert _compare(tmp_path, "--jobs", "2") == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"setup", "command", "machine", "runs"}
    assert results["machine"]["jobs"] == 2
    assert results["setup"]["task_options"] == {"train_size": 12, "val_size": 8, "test_size": 8}
    assert [(r["strategy"], r["seed"]) for r in results["runs"]] == [
        (s, k) for s in ("strict", "cr", "ace-resilient") for k in (0, 1)
    ]
    for run in results["runs"]:
        assert set(run) >= {"config", "final", "wall_seconds", "seconds_per_epoch", "model"}
        assert set(run["final"]) >= {"val", "test", "equivariance_error", "epoch"}
        assert run["config"]["epochs"] == 2
        assert run["config"]["seed"] == run["seed"]
        assert run["wall_seconds"] > 0
    ace = results["runs"][-1]["strategy_options"]  # the quick preset's, then the label's mode
    assert ace["mode"] == "resilient"
    assert ace["dual_optimizer"] == "nupi"
    errors = {r["strategy"]: r["final"]["equivariance_error"] for r in results["runs"]}
    assert errors["strict"] < 1e-10
    assert errors["cr"] < 1e-10
    assert errors["ace-resilient"] > 1e-6  # kept its relaxation, evaluated unprojected
    table = (tmp_path / "results.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| ")][1:]
    assert [row.split(" | ")[0].strip("|*★ ").split(" (")[0] for row in rows] == [
        "strict", "cr", "ace-resilient",
    ]  # fmt: skip
    starred = sum("★" in row for row in rows)
    within_noise = sum("(lowest, within noise)" in row for row in rows)
    assert starred + within_noise == 1  # a star only for a lead beyond one std
    for name in ("curves.png", "levels.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_compare_resume_skips_finished_runs_and_continues_interrupted_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert _compare(tmp_path) == 0
    before = json.loads((tmp_path / "results.json").read_text())
    # the second seed of cr was interrupted: its result is missing, its checkpoint is there
    (tmp_path / "runs" / "cr" / "seed1" / "result.json").unlink()
    trained = []
    original = compare_module.run_one

    def counting(*args, **kwargs):
        trained.append((args[2], kwargs["seed"], kwargs["resume"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(compare_module, "run_one", counting)
    assert _compare(tmp_path, "--resume") == 0
    assert trained == [("cr", 1, True)]
    after = json.loads((tmp_path / "results.json").read_text())
    for old, new in zip(before["runs"], after["runs"], strict=True):
        assert old["final"]["test"] == new["final"]["test"]
    # a different setup in the same directory is refused
    assert _compare(tmp_path, "--resume", "--lr", "0.5") == 2


@pytest.mark.slow
def test_train_writes_one_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["train", "nbody", *TINY, "--model", "mlp", "--strategy", "augment",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    record = json.loads((out / "result.json").read_text())
    assert record["model"] == "mlp"
    assert record["strategy"] == "augment"
    assert (out / "metrics.jsonl").exists()
    assert (out / "checkpoint.pt").exists()
    shown = capsys.readouterr().out
    assert f"test mse {record['final']['test']:.4g} at the best validation epoch" in shown


def test_train_takes_strategy_options_and_refuses_one_that_changes_the_label(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    code = main(["train", "nbody", *TINY, "--strategy", "rpp", "--option",
                 "rpp.equivariant_prior=0.5", "--max-grad-norm", "2.5", "--eval-every", "2",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    record = json.loads((out / "result.json").read_text())
    assert record["strategy_options"]["equivariant_prior"] == 0.5
    assert (record["config"]["max_grad_norm"], record["config"]["eval_every"]) == (2.5, 2)
    with pytest.raises(SystemExit) as refused:  # a usage error, before anything runs
        main(["train", "nbody", *TINY, "--strategy", "ace-equality", "--option",
              "ace-equality.mode=resilient", "--out", str(tmp_path / "ace")])  # fmt: skip
    assert refused.value.code == 2
    assert not (tmp_path / "ace").exists()
    assert "strategy 'ace-equality': the label means mode='equality'" in capsys.readouterr().err


def test_tasks_lists_names_and_symmetry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tasks"]) == 0
    out = capsys.readouterr().out
    assert "nbody" in out
    assert "E(3) x S_5" in out
    assert "egnn,segnn,mlp" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["compare", "maze"], "task: expected one of nbody, inertia"),
        (["compare", "gap-dial", "--task-option", "delta=-1"], "delta"),
        (["compare", "gap-dial", "--task-option", "colour=1"], "colour"),
        (["train", "nbody", "--model", "resnet"], "--model: expected one of egnn, segnn, mlp"),
        (["compare", "nbody", "--strategies", "strict,magic"], "strategy: expected one of strict"),
        (["train", "nbody", "--strategy", "magic"], "received 'magic'"),
        (["compare", "nbody", "--epochs", "-1"], "--epochs: expected a positive integer"),
        (["compare", "nbody", "--seeds", "0"], "--seeds: expected a positive integer"),
        (["compare", "nbody", "--jobs", "0"], "--jobs: expected a positive integer"),
        (["compare", "nbody", "--lr", "0"], "--lr: expected a positive finite number"),
        (["compare", "nbody", "--lr", "inf"], "--lr: expected a positive finite number"),
        (["train", "inertia", "--device", "banana"], "--device: expected a torch device"),
        (["break", "polygon", "--model-option", "breaking=noise"], "'breaking' is set by each arm"),
        (["train", "inertia", "--device", "meta"], "--device: expected a device that holds"),
        (["compare", "nbody", "--weight-decay", "nan"], "--weight-decay: expected a non-negative"),
        (["compare", "nbody", "--option", "cr.weight"], "expected KEY=VALUE"),
        (["compare", "nbody", "--strategies", "cr", "--option", "ace.mode=x"], "--option"),
        (["compare", "nbody", "--strategies", "cr,cr"], "distinct"),
    ],
)
def test_bad_names_and_numbers_exit_non_zero_with_the_valid_choices(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code != 0
    assert message in capsys.readouterr().err


def test_console_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "equirelax", "tasks"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "nbody" in result.stdout


def test_compare_runs_the_emlp_tasks_with_task_options_and_recm(tmp_path: Path) -> None:
    argv = [
        "compare", "gap-dial", "--task-option", "delta=0.5", "--strategies", "strict,recm",
        "--train-size", "60", "--val-size", "16", "--test-size", "16", "--epochs", "2",
        "--batch-size", "20", "--model-option", "num_layers=1", "--quiet", "--out",
        str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["setup"]["task_options"]["delta"] == 0.5
    assert results["setup"]["model"] == "emlp"
    runs = {run["strategy"]: run for run in results["runs"]}
    assert runs["strict"]["final"]["equivariance_error"] < 1e-4  # projected E-MLP
    assert "recm" in (tmp_path / "results.md").read_text()


def _equirelax(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "equirelax", *argv], capture_output=True, text=True, check=False
    )


def test_a_file_that_is_not_a_predictor_is_named_without_a_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "predictor.pt"
    garbage.write_bytes(b"not a torch file")
    result = _equirelax(
        "adapt", "glyphs", "--predictor", str(garbage), "--train-size", "20", "--val-size", "10",
        "--test-size", "10", "--epochs", "1", "--quiet", "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert result.returncode == 2  # a bad argument
    assert "Traceback" not in result.stderr
    assert "--predictor" in result.stderr
    assert str(garbage) in result.stderr


def test_an_unexpected_error_asks_for_debug_which_shows_the_traceback(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("equirelax.experiments.commands.run_one", broken)
    argv = ["train", "inertia", "--train-size", "20", "--val-size", "10", "--test-size", "10"]
    assert main([*argv, "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "equirelax train: error: a bug" in err
    assert "--debug" in err
    with pytest.raises(ZeroDivisionError):
        main([*argv, "--quiet", "--debug"])
    monkeypatch.setenv("EQUIRELAX_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        main([*argv, "--quiet"])


def test_train_takes_its_strategy_options_with_or_without_the_label(tmp_path: Path) -> None:
    small = ["train", "inertia", "--strategy", "cr", "--train-size", "20", "--val-size", "10",
             "--test-size", "10", "--epochs", "1", "--quiet"]  # fmt: skip
    for option, out in (("weight=0.5", "plain"), ("cr.weight=0.5", "labelled")):
        assert main([*small, "--option", option, "--out", str(tmp_path / out)]) == 0
        record = json.loads((tmp_path / out / "result.json").read_text())
        assert record["strategy_options"]["weight"] == 0.5
