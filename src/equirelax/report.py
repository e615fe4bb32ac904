"""Reports of a comparison: the summary table (``results.md``) and plots (PNG).

:func:`summarize` turns the run records of :func:`equirelax.compare.compare` into one row per
strategy (mean and standard deviation over seeds); :func:`write_report` writes
``results.md``, ``curves.png`` (validation metric against epoch) and ``levels.png`` (levels
and multipliers against epoch).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "CURVES_PNG",
    "LEVELS_PNG",
    "RESULTS_MD",
    "format_table",
    "mean_std",
    "ordering",
    "summarize",
    "write_report",
]

RESULTS_MD = "results.md"
CURVES_PNG = "curves.png"
LEVELS_PNG = "levels.png"


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample standard deviation of the finite values (``nan`` if there are none;
    standard deviation 0 for one value)."""
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def summarize(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per strategy, in order of first appearance: mean and std over seeds of the
    final test and validation metric, the evaluated model's equivariance error, the training
    seconds per epoch and their ratio to ``strict`` (when it was run); ``best`` marks the
    lowest mean of the primary metric (test if every run has one, else validation)."""
    labels = list(dict.fromkeys(run["strategy"] for run in runs))
    rows = []
    for label in labels:
        group = [run for run in runs if run["strategy"] == label]
        finals = [run["final"] for run in group]
        row: dict[str, Any] = {"strategy": label, "seeds": len(group)}
        for key in ("test", "val", "val_projected", "equivariance_error"):
            row[key] = mean_std([f.get(key, math.nan) for f in finals])
        finished = [r for r in group if "error" not in r]
        row["failed"] = len(group) - len(finished)
        row["seconds_per_epoch"] = (
            statistics.fmean(r["seconds_per_epoch"] for r in finished) if finished else math.nan
        )
        row["levels"] = finals[-1].get("levels", [])
        rows.append(row)
    strict = next((r for r in rows if r["strategy"] == "strict"), None)
    finished = [run for run in runs if "error" not in run]
    primary = "test" if finished and all("test" in run["final"] for run in finished) else "val"
    for row in rows:
        row["time_ratio"] = (
            row["seconds_per_epoch"] / strict["seconds_per_epoch"] if strict else math.nan
        )
        row["primary"] = primary
    candidates = [r for r in rows if math.isfinite(r[primary][0])]
    if candidates:
        min(candidates, key=lambda r: r[primary][0])["best"] = True
    return rows


def format_table(rows: Sequence[dict[str, Any]], metric: str = "mse") -> str:
    """A Markdown table of :func:`summarize` rows (the best row in bold with a star)."""
    primary = rows[0]["primary"] if rows else "test"
    header = (
        f"| strategy | {primary} {metric} (mean ± std) | val {metric} | "
        "equivariance error | s / epoch | vs strict | seeds |"
    )
    lines = [header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        mean, std = row[primary]
        value = f"{mean:.3e} ± {std:.1e}"
        name = row["strategy"]
        seeds = f"{row['seeds']} ({row['failed']} failed)" if row["failed"] else row["seeds"]
        if row.get("best"):
            value, name = f"**{value}**", f"**{name}** ★"
        lines.append(
            f"| {name} | {value} | {row['val'][0]:.3e} | {row['equivariance_error'][0]:.1e} | "
            f"{row['seconds_per_epoch']:.3f} | {row['time_ratio']:.2f} | {seeds} |"
        )
    return "\n".join(lines)


def ordering(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence on the ordering the relaxation papers report: which strategies beat
    ``strict`` on the mean primary metric here (empty without a strict row)."""
    strict = next((r for r in rows if r["strategy"] == "strict"), None)
    others = [r for r in rows if r["strategy"] != "strict"]
    if strict is None or not others:
        return ""
    primary = strict["primary"]
    ahead = [r["strategy"] for r in others if r[primary][0] < strict[primary][0]]
    behind = [r["strategy"] for r in others if r["strategy"] not in ahead]
    return (
        f"Ahead of strict (lower mean {primary} metric): {', '.join(ahead) or 'none'}; "
        f"not ahead: {', '.join(behind) or 'none'}. The CR and ACE papers report the relaxed "
        "strategies ahead of strict on the full protocol; a short run on small splits need not "
        "show it, and differences within a standard deviation are not evidence either way."
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
        f"Command: `{results.get('command') or 'equirelax.compare.compare(...)'}`",
        "",
        f"Machine: {machine.get('processor')}, {machine.get('cpus')} CPUs, "
        f"{machine.get('torch_threads')} torch threads, torch {machine.get('torch')}, "
        f"device {machine.get('device')}{', ' + machine['gpu'] if 'gpu' in machine else ''}",
        "",
        f"Task options: `{json.dumps(setup['task_options'])}`; training: "
        f"`{json.dumps(setup['config'])}`",
        "",
        format_table(rows, metric),
        "",
        ordering(rows),
        "",
        f"★: lowest mean {rows[0]['primary']} {metric}. Equivariance error: relative, float64, "
        "of the model each strategy evaluates (projected for strict/CR/ACE-equality), on the "
        "validation split. s / epoch: training time only; vs strict: its ratio to strict's.",
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
    _plot_curves(histories, metric, out / CURVES_PNG)
    _plot_levels(histories, out / LEVELS_PNG)


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _figure(ncols: int = 1) -> tuple[Any, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6.4 * ncols, 4.2), layout="constrained")
    axes = figure.subplots(1, ncols, squeeze=False)[0]
    return figure, axes


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
            axis.plot(epochs, values, label=label)
    axis.set(xlabel="epoch", ylabel=f"validation {metric} (mean over seeds)", yscale="log")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.savefig(path, dpi=120)


def _plot_levels(histories: dict[str, list], path: Path) -> None:
    figure, (levels, multipliers) = _figure(2)
    for label, runs in histories.items():
        for key, axis in (("levels", levels), ("multipliers", multipliers)):
            epochs, values = _series(runs, key)
            if epochs:
                axis.plot(epochs, values, label=label)
    levels.set(xlabel="epoch", ylabel="mean level over relaxed layers", title="levels")
    multipliers.set(xlabel="epoch", ylabel="mean multiplier", title="multipliers (ACE)")
    for axis in (levels, multipliers):
        axis.grid(alpha=0.3)
        if axis.get_legend_handles_labels()[0]:
            axis.legend()
    figure.savefig(path, dpi=120)
