"""Summary rows, the best mark and the ordering sentence of :mod:`equirelax.experiments.report`."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from equirelax.experiments.report import (
    CURVES_PNG,
    LEVELS_PNG,
    RESULTS_MD,
    format_table,
    ordering,
    summarize,
    write_report,
)


def _run(strategy: str, seed: int, test: float, seconds: float) -> dict:
    final = {"val": 2 * test, "test": test, "equivariance_error": 0.0, "levels": [0.5]}
    return {"strategy": strategy, "seed": seed, "final": final, "seconds_per_epoch": seconds}


def test_summary_means_stds_ratios_and_a_lead_within_noise_is_not_starred() -> None:
    runs = [
        _run("strict", 0, 1.0, 1.0), _run("strict", 1, 3.0, 3.0),
        _run("cr", 0, 1.0, 4.0), _run("cr", 1, 2.0, 6.0),
        _run("free", 0, 5.0, 2.0),
    ]  # fmt: skip
    rows = {row["strategy"]: row for row in summarize(runs)}
    assert rows["strict"]["test"] == (2.0, pytest.approx(math.sqrt(2.0)))
    assert rows["cr"]["test"] == (1.5, pytest.approx(math.sqrt(0.5)))
    assert rows["free"]["test"] == (5.0, 0.0)  # one seed: no spread
    assert rows["cr"]["time_ratio"] == pytest.approx(2.5)
    # cr leads strict by 0.5, less than one standard deviation (0.71, 1.41): no star
    assert not any(row.get("best") for row in rows.values())
    assert rows["cr"]["within_noise"]
    table = format_table(list(rows.values()))
    assert "| cr (lowest, within noise) | 1.500e+00 ± 7.1e-01 |" in table
    assert "| free | 5.000e+00 |" in table  # a single seed is a value, not "± 0"
    sentence = ordering(list(rows.values()))
    assert sentence.startswith(
        "Ahead of strict by more than one standard deviation (test): none; "
        "lower mean but within noise: cr."
    )


def test_a_lead_larger_than_one_standard_deviation_gets_the_star() -> None:
    runs = [
        _run("strict", 0, 2.0, 1.0), _run("strict", 1, 2.2, 1.0),
        _run("cr", 0, 1.0, 1.0), _run("cr", 1, 1.2, 1.0),
    ]  # fmt: skip
    rows = {row["strategy"]: row for row in summarize(runs)}
    assert [r for r in rows if rows[r].get("best")] == ["cr"]
    assert "| **cr** ★ | **1.100e+00 ± 1.4e-01** |" in format_table(list(rows.values()))
    assert ordering(list(rows.values())).startswith(
        "Ahead of strict by more than one standard deviation (test): cr;"
    )


def test_without_test_metrics_the_validation_metric_ranks_and_no_strict_no_sentence() -> None:
    runs = [_run("cr", 0, 1.0, 1.0), _run("ace", 0, 3.0, 1.0)]
    for run in runs:
        del run["final"]["test"]
    rows = summarize(runs)
    assert rows[0]["primary"] == "val"
    assert rows[0].get("within_noise")  # single seeds: no noise estimate, no star
    assert math.isnan(rows[0]["time_ratio"])
    assert ordering(rows) == ""


def test_a_failed_run_is_counted_and_left_out_of_the_statistics() -> None:
    runs = [
        _run("strict", 0, 1.0, 1.0),
        _run("ace", 0, 2.0, 2.0),
        {"strategy": "ace", "seed": 1, "final": {}, "error": "loss: non-finite value"},
    ]
    rows = {row["strategy"]: row for row in summarize(runs)}
    assert rows["ace"]["test"] == (2.0, 0.0)
    assert rows["ace"]["failed"] == 1
    assert rows["ace"]["time_ratio"] == pytest.approx(2.0)
    assert "| 2 (1 failed) |" in format_table(list(rows.values()))


def test_further_test_splits_get_their_own_column() -> None:
    runs = [_run("strict", 0, 1.0, 1.0), _run("strict", 1, 3.0, 1.0), _run("cr", 0, 2.0, 1.0)]
    for run, domain in zip(runs, (4.0, 6.0, 7.0), strict=True):
        run["final"].update(test_domain=domain, test_domain_final=9.0, test_relaxed=8.0)
    rows = summarize(runs)
    assert rows[0]["test_splits"] == {"test_domain": (5.0, pytest.approx(math.sqrt(2.0)))}
    table = format_table(rows, "rmse")
    assert "| test_domain at best val |" in table.splitlines()[0]
    assert "test_relaxed" not in table
    assert "| 5.000e+00 ± 1.4e+00 |" in table.splitlines()[2]
    assert "| 7.000e+00 |" in table.splitlines()[3]


def _results(tmp_path: Path) -> dict:
    history = tmp_path / "metrics.jsonl"
    history.write_text("".join(
        json.dumps({"epoch": e, "val": 1.0 / (e + 1), "levels": [0.5 / (e + 1)]}) + "\n"
        for e in range(3)
    ))  # fmt: skip
    runs = [{**_run(label, 0, 0.1, 1.0), "history": str(history)} for label in ("strict", "cr")]
    setup = {"task": "toy", "model": "m", "task_options": {}, "config": {}}
    return {"setup": setup, "runs": runs}


def test_each_strategy_keeps_one_colour_and_epochs_are_integer_ticks(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from matplotlib.ticker import MaxNLocator

    from equirelax.experiments.names import STRATEGY_LABELS
    from equirelax.experiments.report import _figure, colour

    colours = [colour(label) for label in STRATEGY_LABELS]
    assert len(set(colours)) == len(colours)
    assert colour("cr (relaxed)") == colour("cr") == colour("cr")
    _, (axis,) = _figure()
    locator = axis.xaxis.get_major_locator()
    assert isinstance(locator, MaxNLocator)
    assert all(float(t).is_integer() for t in locator.tick_values(0.6, 3.4))
    write_report(_results(tmp_path), tmp_path)
    assert (tmp_path / CURVES_PNG).stat().st_size > 0
    assert (tmp_path / LEVELS_PNG).stat().st_size > 0


def test_without_matplotlib_the_report_is_written_and_the_extra_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    write_report(_results(tmp_path), tmp_path)
    assert (tmp_path / RESULTS_MD).exists()
    assert not (tmp_path / CURVES_PNG).exists()
    assert "pip install 'equirelax[plots]'" in capsys.readouterr().err
