"""The table writer of ``benchmarks/claims.py`` on tiny synthetic results: the rows, best-val
against final-epoch figures, partial parts, and the holds / does not hold / within noise rules
with their stated thresholds (``NOISE_SE`` standard errors of the difference; a paper's figure
plus ``FIGURE_TOLERANCE``)."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "claims.py"
_SPEC = importlib.util.spec_from_file_location("claims", _PATH)
claims = importlib.util.module_from_spec(_SPEC)
sys.modules["claims"] = claims  # dataclasses look their module up
_SPEC.loader.exec_module(claims)


def _write(
    root: Path,
    part: str,
    runs: dict[str, list[float]],
    *,
    seeds: int = 3,
    final_shift: float = 0.5,
    epochs: int = 7,
) -> None:
    """``results.json`` of a part: per strategy, the test values of its finished seeds."""
    records = [
        {
            "strategy": label,
            "seed": seed,
            "final": {
                "test": value,
                "test_final": value + final_shift,
                "equivariance_error": 1e-9,
            },
            "seconds_per_epoch": 2.0 if label == "strict" else 3.0,
            "wall_seconds": 10.0,
        }
        for label, values in runs.items()
        for seed, value in enumerate(values)
    ]
    results = {
        "setup": {"strategies": list(runs), "seeds": seeds, "config": {"epochs": epochs}},
        "command": f"equirelax compare {part}",
        "machine": {"platform": "test-machine", "torch": "0", "jobs": 2, "threads_per_job": 1},
        "runs": records,
    }
    (root / part).mkdir(parents=True, exist_ok=True)
    (root / part / "results.json").write_text(json.dumps(results))


def _arm(label: str) -> claims.Arm:
    return claims.Arm("c/p", label, label)


def _values(mean: float, std: float) -> list[float]:
    """Three values with this mean and sample standard deviation."""
    return [mean - std, mean, mean + std]


def _se_of_difference(std: float) -> float:
    return math.sqrt(2 * (std / math.sqrt(3)) ** 2)


@pytest.mark.parametrize(
    ("gap_in_se", "expected"),
    [(2.5, claims.HOLDS), (1.5, claims.NOISE), (-1.5, claims.NOISE), (-2.5, claims.FAILS)],
)
def test_lower_uses_two_standard_errors_of_the_difference(tmp_path, gap_in_se, expected):
    assert claims.NOISE_SE == 2.0
    std = 0.1
    gap = gap_in_se * _se_of_difference(std)
    _write(tmp_path, "c/p", {"strict": _values(1.0, std), "x": _values(1.0 - gap, std)})
    row = claims.Row(
        "9", "x below strict", "1 vs 2", "proto", claims.Lower(_arm("x"), _arm("strict"))
    )
    cells = claims.row_cells(row, tmp_path)
    assert cells[-1] == expected
    assert cells[0] == "9: x below strict"


def test_same_and_reaches_rules(tmp_path):
    std = 1e-4
    _write(
        tmp_path,
        "c/p",
        {"a": _values(7.5e-3, std), "b": _values(7.55e-3, std), "far": _values(1.0e-2, std)},
    )
    results = {arm: claims.load_arm(tmp_path, arm) for arm in map(_arm, ("a", "b", "far"))}
    assert claims.Same(_arm("a"), _arm("b")).judge(results) == claims.HOLDS
    assert claims.Same(_arm("a"), _arm("far")).judge(results) == claims.FAILS
    # 7.5e-3 is within 10% of 7.1e-3 (bound 7.81e-3); 1.0e-2 - 2 SE is far above it
    assert claims.FIGURE_TOLERANCE == 0.10
    assert claims.Reaches(_arm("a"), 7.1e-3).judge(results) == claims.HOLDS
    assert claims.Reaches(_arm("far"), 7.1e-3).judge(results) == claims.FAILS
    noisy = {_arm("n"): claims.ArmResult(_arm("n"), test=[7.0e-3, 9.0e-3, 8.0e-3])}
    assert claims.Reaches(_arm("n"), 7.1e-3).judge(noisy) == claims.NOISE  # 8e-3 - 2 SE < 7.81e-3


def test_cells_show_best_val_beside_final_and_mark_partial_parts(tmp_path):
    _write(tmp_path, "c/p", {"strict": [1.0, 3.0], "x": [0.5, 0.7]}, final_shift=10.0)
    row = claims.Row(
        "9",
        "x below strict",
        "fig",
        "proto",
        claims.Lower(_arm("x"), _arm("strict")),
        paper_epochs=100,
    )
    _, paper, protocol, ours, differs, verdict = claims.row_cells(row, tmp_path)
    assert (paper, protocol) == ("fig", "proto")
    assert "x: **0.6 ± 0.141** (final 10.6 ± 0.141) [7 ep, 2 of 3 seeds]" in ours
    assert "strict: **2 ± 1.41** (final 12 ± 1.41)" in ours
    assert "shorter: 7 of 100 epochs" in differs
    assert "partial" in differs
    assert verdict == claims.NOISE + " (partial)"
    markdown = claims.table([row], tmp_path)
    assert markdown.splitlines()[0] == claims.HEADER
    assert len(markdown.splitlines()) == 3


def test_missing_results_and_single_seeds_are_not_judged(tmp_path):
    row = claims.Row("9", "x below strict", "fig", "proto", claims.Lower(_arm("x"), _arm("strict")))
    assert claims.row_cells(row, tmp_path)[-1] == claims.MISSING
    assert "x: not run yet" in claims.row_cells(row, tmp_path)[3]
    _write(tmp_path, "c/p", {"strict": [1.0], "x": [0.5]}, seeds=1)
    cells = claims.row_cells(row, tmp_path)
    assert cells[-1] == claims.TOO_FEW  # every arm ran, on one seed
    assert "x: **0.5** (final" in cells[3]  # one seed: its value, no spread


def test_advice_names_the_winner_beyond_noise_or_says_use_strict(tmp_path):
    _write(
        tmp_path,
        "c/p",
        {"strict": _values(1.0, 0.01), "x": _values(0.5, 0.01), "y": _values(0.99, 0.2)},
    )
    pick = claims.Pick("toy", _arm("strict"), (_arm("x"), _arm("y")))
    text = claims.advice([pick], tmp_path)
    assert "beat strict (1 ± 0.01) beyond noise: x (0.5, 1.50x strict's time per epoch)" in text
    no_winner = claims.Pick("toy", _arm("strict"), (_arm("y"),))
    text = claims.advice([no_winner], tmp_path)
    assert "nothing beats strict" in text
    assert "lowest mean is y" in text
    _write(tmp_path, "c/q", {"strict": _values(1.0, 0.01), "w": _values(1.5, 0.01)})
    behind = claims.Pick(
        "toy", claims.Arm("c/q", "strict", "strict"), (claims.Arm("c/q", "w", "w"),)
    )
    text = claims.advice([behind], tmp_path)
    assert "every other mean is above strict's, the nearest w's (1.5 ± 0.01" in text
    assert "lowest mean" not in text
    assert "not measured yet" in claims.advice([claims.Pick("none", _arm("z"), ())], tmp_path)
    running = claims.Pick("none", _arm("z"), (), epochs=2000)
    assert "- **none** (2000 epochs): not measured yet." in claims.advice([running], tmp_path)


def test_report_lists_every_part_with_its_command_machine_and_wall_time(tmp_path):
    _write(tmp_path, "c/p", {"strict": _values(1.0, 0.1)})
    part = claims.Part("p", ("toy",), epochs=7)
    claim = claims.Claim("c", "a toy claim", parts=(part, claims.Part("q", ("toy",), 7)), rows=())
    text = claims.part_section(claim, part, tmp_path)
    assert "3 of 3 runs finished, 7 epochs" in text
    assert "`equirelax compare c/p`" in text
    assert "test-machine" in text
    assert "30 s" in text
    assert "not run yet" in claims.part_section(claim, claim.parts[1], tmp_path)


def test_a_part_run_with_an_absolute_out_reads_as_one_run_from_the_repository(
    tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    _write(tmp_path, "c/p", {"strict": _values(1.0, 0.1)})
    results = json.loads((tmp_path / "c/p/results.json").read_text())
    results["command"] = f"equirelax compare toy --out {tmp_path.resolve().as_posix()}/c/p"
    (tmp_path / "c/p/results.json").write_text(json.dumps(results))
    part = claims.Part("p", ("toy",), epochs=7)
    claim = claims.Claim("c", "a toy claim", parts=(part,), rows=())
    assert "`equirelax compare toy --out c/p`" in claims.part_section(claim, part, tmp_path)


def test_every_registered_row_names_arms_of_registered_parts():
    parts = {f"{c.name}/{p.name}" for c in claims.CLAIMS.values() for p in c.parts}
    for claim in claims.CLAIMS.values():
        for row in claim.rows:
            for arm in row.judge.arms():
                assert arm.part in parts, (claim.name, row.statement, arm.part)


def test_an_arm_reads_the_test_split_it_names(tmp_path):
    _write(tmp_path, "c/p", {"strict": [1.0, 2.0, 3.0]})
    path = tmp_path / "c/p" / "results.json"
    results = json.loads(path.read_text())
    for run in results["runs"]:
        run["final"].update(test_domain=10 * run["final"]["test"], test_domain_final=0.0)
    path.write_text(json.dumps(results))
    domain = claims.load_arm(tmp_path, claims.Arm("c/p", "strict", "strict", metric="test_domain"))
    assert domain.test == [10.0, 20.0, 30.0]
    assert domain.test_final == [0.0, 0.0, 0.0]
    assert claims.load_arm(tmp_path, _arm("strict")).test == [1.0, 2.0, 3.0]


def test_arms_of_different_lengths_are_not_compared(tmp_path):
    """A 200-epoch arm is not judged against a 1000-epoch one, in a row or in the advice."""
    _write(tmp_path, "c/short", {"x": _values(2.0, 0.01)}, epochs=200)
    _write(tmp_path, "c/p", {"strict": _values(1.0, 0.01), "y": _values(0.5, 0.01)}, epochs=1000)
    short, strict = claims.Arm("c/short", "x", "x"), _arm("strict")
    row = claims.Row("9", "x below strict", "fig", "proto", claims.Lower(short, strict))
    assert claims.row_cells(row, tmp_path)[-1] == claims.UNEQUAL
    same = claims.Row("9", "x as strict", "fig", "proto", claims.Same(short, strict))
    assert claims.row_cells(same, tmp_path)[-1] == claims.UNEQUAL
    text = claims.advice([claims.Pick("toy", strict, (short, _arm("y")))], tmp_path)
    assert "beat strict (1 ± 0.01) beyond noise: y" in text
    assert "x (200 epochs) left out: another length than strict's" in text
    alone = claims.advice([claims.Pick("toy", strict, (short,))], tmp_path)
    assert "not measured yet" in alone
