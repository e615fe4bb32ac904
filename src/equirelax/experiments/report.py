"""Reports of a comparison: the summary table (``results.md``) and plots (PNG).

:func:`summarize` turns the run records of :func:`equirelax.experiments.compare.compare` into
one row per strategy (mean and standard deviation over seeds); :func:`write_report` writes
``results.md``, ``curves.png`` (validation metric against epoch) and ``levels.png`` (levels
and multipliers against epoch).
"""

from __future__ import annotations

import functools
import json
import math
import statistics
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from equirelax.experiments.names import STRATEGY_LABELS

__all__ = [
    "CURVES_PNG",
    "LEVELS_PNG",
    "PLOTS_EXTRA",
    "RESULTS_MD",
    "colour",
    "format_table",
    "mean_std",
    "ordering",
    "summarize",
    "write_report",
]

RESULTS_MD = "results.md"
"""The comparison's results table, beside ``results.json``."""
CURVES_PNG = "curves.png"
"""The plot of the validation metric per epoch of each strategy's evaluated model."""
LEVELS_PNG = "levels.png"
"""The plot of the levels and multipliers per epoch."""
PLOTS_EXTRA = "pip install 'equirelax[plots]'"
"""How to install what the plots need (matplotlib)."""


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (``nan`` if there are none;
    standard deviation 0 for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per strategy, in order of first appearance: mean and std over seeds of the
    test metric at the best validation epoch (``test``) and at the final epoch
    (``test_final``), the best validation metric (``best_val``) and its epoch, the validation
    metric and equivariance error of the evaluated model at the final epoch, the training
    seconds per epoch and their ratio to ``strict`` (when it was run).

    ``best`` marks the lowest mean of the primary metric (``test`` if every run has one, else
    ``best_val``, falling back to ``val``) only when it is ahead of the runner-up by more than
    one standard deviation of either; otherwise that row gets ``within_noise``."""
    labels = list(dict.fromkeys(run["strategy"] for run in runs))
    rows = []
    for label in labels:
        group = [run for run in runs if run["strategy"] == label]
        finals = [run["final"] for run in group]
        row: dict[str, Any] = {"strategy": label, "seeds": len(group)}
        for key in ("test", "test_final", "best_val", "best_epoch", "val", "val_relaxed"):
            row[key] = mean_std([f.get(key, math.nan) for f in finals])
        row["test_splits"] = {
            key: mean_std([f.get(key, math.nan) for f in finals])
            for key in sorted({k for f in finals for k in f if _is_named_test(k)})
        }
        row["equivariance_error"] = mean_std([f.get("equivariance_error") for f in finals])
        finished = [r for r in group if "error" not in r]
        row["failed"] = len(group) - len(finished)
        row["seconds_per_epoch"] = (
            statistics.fmean(r["seconds_per_epoch"] for r in finished) if finished else math.nan
        )
        row["levels"] = finals[-1].get("levels", [])
        rows.append(row)
    strict = next((r for r in rows if r["strategy"] == "strict"), None)
    finished = [run for run in runs if "error" not in run]
    if finished and all("test" in run["final"] for run in finished):
        primary = "test"
    elif finished and all("best_val" in run["final"] for run in finished):
        primary = "best_val"
    else:
        primary = "val"
    for row in rows:
        row["time_ratio"] = (
            row["seconds_per_epoch"] / strict["seconds_per_epoch"] if strict else math.nan
        )
        row["primary"] = primary
    ranked = sorted((r for r in rows if math.isfinite(r[primary][0])), key=lambda r: r[primary][0])
    if len(ranked) == 1:
        ranked[0]["best"] = True
    elif ranked:
        leader, runner_up = ranked[0], ranked[1]
        if _ahead(leader[primary], runner_up[primary]):
            leader["best"] = True
        else:
            leader["within_noise"] = True
    return rows


def _is_named_test(key: str) -> bool:
    """Whether ``key`` is a further test split's metric at the best validation epoch,
    ``test_<name>`` (:attr:`equirelax.tasks.base.Task.test_splits`)."""
    return key.startswith("test_") and not key.endswith("_final") and key != "test_relaxed"


def _ahead(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """Whether mean ``a`` is below mean ``b`` by more than one standard deviation of either
    (``(mean, std)`` pairs; a std of 0 from a single seed counts as no estimate: never ahead)."""
    spread = max(a[1], b[1])
    return spread > 0 and b[0] - a[0] > spread


def _value(row: dict[str, Any], key: str) -> str:
    """``mean ± std`` over seeds, or just the value for a single finite seed."""
    mean, std = row[key] if key in row else row["test_splits"].get(key, (math.nan, math.nan))
    if not math.isfinite(mean):
        return "-"
    return f"{mean:.3e}" if row["seeds"] - row["failed"] <= 1 else f"{mean:.3e} ± {std:.1e}"


def format_table(rows: Sequence[dict[str, Any]], metric: str = "mse") -> str:
    """A Markdown table of :func:`summarize` rows (the best row in bold with a star; a
    leader within noise of the runner-up marked ``(within noise)``)."""
    primary = rows[0]["primary"] if rows else "test"
    title = {"test": "test at best val", "best_val": "best val", "val": "val"}[primary]
    named = sorted({key for row in rows for key in row.get("test_splits", {})})
    header = (
        f"| strategy | {title} {metric} | test at final epoch | "
        + "".join(f"{key} at best val | " for key in named)
        + f"best epoch | val {metric} (final) | equivariance error | s / epoch | vs strict | "
        "seeds |"
    )
    lines = [header, "|---" * (9 + len(named)) + "|"]
    for row in rows:
        value, name = _value(row, primary), row["strategy"]
        if row.get("best"):
            value, name = f"**{value}**", f"**{name}** ★"
        elif row.get("within_noise"):
            name = f"{name} (lowest, within noise)"
        seeds = f"{row['seeds']} ({row['failed']} failed)" if row["failed"] else row["seeds"]
        epoch = row["best_epoch"][0]
        lines.append(
            f"| {name} | {value} | {_value(row, 'test_final')} | "
            + "".join(f"{_value(row, key)} | " for key in named)
            + f"{'-' if not math.isfinite(epoch) else f'{epoch + 1:.0f}'} | {_value(row, 'val')} | "
            f"{row['equivariance_error'][0]:.1e} | {row['seconds_per_epoch']:.3f} | "
            f"{row['time_ratio']:.2f} | {seeds} |"
        )
    return "\n".join(lines)


def ordering(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence on the ordering the relaxation papers report: which strategies beat
    ``strict`` by more than one standard deviation on the primary metric here (empty without
    a strict row)."""
    strict = next((r for r in rows if r["strategy"] == "strict"), None)
    others = [r for r in rows if r["strategy"] != "strict"]
    if strict is None or not others:
        return ""
    primary = strict["primary"]
    ahead = [r["strategy"] for r in others if _ahead(r[primary], strict[primary])]
    lower = [
        r["strategy"]
        for r in others
        if r["strategy"] not in ahead and r[primary][0] < strict[primary][0]
    ]
    return (
        f"Ahead of strict by more than one standard deviation ({primary}): "
        f"{', '.join(ahead) or 'none'}; lower mean but within noise: {', '.join(lower) or 'none'}. "
        "The CR and ACE papers report the relaxed strategies ahead of strict on the full "
        "protocol; a short run on small splits need not show it."
    )


def write_report(results: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``results.md`` and the two plots for the ``results`` of a comparison."""
    out = Path(out_dir)
    runs = results["runs"]
    if not runs:
        return
    setup = results["setup"]
    metric = runs[0].get("metric", "mse")
    rows = summarize(runs)
    machine = results.get("machine", {})
    lines = [
        f"# equirelax compare: task `{setup['task']}`, model `{setup['model']}`",
        "",
        f"Command: `{results.get('command') or 'equirelax.experiments.compare.compare(...)'}`",
        "",
        f"Machine: {machine.get('processor')}, {machine.get('cpus')} CPUs, "
        f"{_jobs(machine)}{machine.get('torch_threads')} torch threads, "
        f"torch {machine.get('torch')}, "
        f"device {machine.get('device')}{', ' + machine['gpu'] if 'gpu' in machine else ''}",
        "",
        f"Task options: `{json.dumps(setup['task_options'])}`; training: "
        f"`{json.dumps(setup['config'])}`",
        "",
        format_table(rows, metric),
        "",
        ordering(rows),
        "",
        f"★: lowest mean {rows[0]['primary']} {metric}, ahead of the runner-up by more than one "
        "standard deviation. Test at best val: the test metric of the weights of the best "
        "validation epoch (best epoch, 1-based); val and equivariance error (relative, float64) "
        "are those of the model each strategy evaluates (projected for strict/CR/ACE-equality) "
        "at the final epoch. s / epoch: training time only; vs strict: its ratio to strict's.",
    ]
    reference = results.get("reference") or {}
    if reference:
        cited = ", ".join(f"{name} {value:.2g}" for name, value in reference.items())
        lines += ["", f"Published {metric} on the full protocol (for comparison only): {cited}."]
    (out / RESULTS_MD).write_text("\n".join(lines) + "\n")
    histories = {run["strategy"]: [] for run in runs}
    for run in runs:
        if "history" in run:
            histories[run["strategy"]].append(_read_history(Path(run["history"])))
    try:
        _plot_curves(histories, metric, out / CURVES_PNG)
        _plot_levels(histories, out / LEVELS_PNG)
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "matplotlib":
            raise
        _say_once(
            f"{CURVES_PNG} and {LEVELS_PNG} not written: matplotlib is missing ({PLOTS_EXTRA})"
        )


@functools.cache
def _say_once(message: str) -> None:
    print(f"equirelax: {message}", file=sys.stderr)


def _jobs(machine: dict[str, Any]) -> str:
    """``"4 worker processes x "`` when the runs were trained side by side, else ``""``."""
    jobs = machine.get("jobs", 1)
    return f"{jobs} worker processes x " if jobs > 1 else ""


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    """A figure of ``ncols`` axes with integer epoch ticks and a faint grid."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    figure = Figure(figsize=(6.4 * ncols, 4.2), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    for axis in axes:
        axis.xaxis.set_major_locator(MaxNLocator(integer=True))
        axis.grid(alpha=0.3)
    return figure, axes


def colour(label: str) -> tuple[float, float, float, float]:
    """The colour of a strategy (or arm) in every figure: the strategy labels take the 20
    colours of matplotlib's ``tab20`` in their order (the dark shades first), any other label
    one chosen by its name."""
    from matplotlib import colormaps

    palette = colormaps["tab20"]
    base = label.split(" ")[0]
    if base in STRATEGY_LABELS:
        index = STRATEGY_LABELS.index(base)
        return palette(2 * index % 20 + index // 10)
    return palette(zlib.crc32(base.encode()) % 20)


def _log_axis(axis: Any) -> None:
    """A log y axis that labels its minor ticks when it spans less than two decades."""
    from matplotlib.ticker import LogFormatterSciNotation

    axis.set_yscale("log")
    axis.yaxis.set_minor_formatter(
        LogFormatterSciNotation(labelOnlyBase=False, minor_thresholds=(2, 0.5))
    )


def _series(histories: list[list[dict[str, Any]]], key: str) -> tuple[list[int], list[float]]:
    """Epochs and the mean over seeds of ``record[key]`` (lists averaged over their entries)."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for record in history:
            value = record.get(key)
            if isinstance(value, list):
                value = statistics.fmean(value) if value else None
            if value is not None and math.isfinite(value):
                by_epoch.setdefault(record["epoch"], []).append(value)
    epochs = sorted(by_epoch)
    return [e + 1 for e in epochs], [statistics.fmean(by_epoch[e]) for e in epochs]


def _plot_curves(histories: dict[str, list], metric: str, path: Path) -> None:
    figure, (axis,) = _figure()
    for label, runs in histories.items():
        epochs, values = _series(runs, "val")
        if epochs:
            axis.plot(epochs, values, label=label, color=colour(label))
            epochs, values = _series(runs, "val_relaxed")
            if epochs:
                axis.plot(epochs, values, label=f"{label} (relaxed)", ls="--", color=colour(label))
    axis.set(xlabel="epoch", ylabel=f"validation {metric}\n(evaluated model, mean over seeds)")
    _log_axis(axis)
    if axis.get_legend_handles_labels()[0]:  # no curve when every run failed
        axis.legend()
    figure.savefig(path, dpi=120)


def _plot_levels(histories: dict[str, list], path: Path) -> None:
    figure, (levels, multipliers) = _figure(2)
    for label, runs in histories.items():
        for key, axis in (("levels", levels), ("multipliers", multipliers)):
            epochs, values = _series(runs, key)
            if epochs:
                axis.plot(epochs, values, label=label, color=colour(label))
    levels.set(xlabel="epoch", ylabel="mean level over relaxed layers", title="levels")
    multipliers.set(xlabel="epoch", ylabel="mean multiplier", title="multipliers (ACE)")
    for axis in (levels, multipliers):
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.savefig(path, dpi=120)
