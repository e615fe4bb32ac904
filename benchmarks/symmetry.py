"""The symmetry benchmark: strategies on exact (inertia) and broken (modified-inertia) O(3)
symmetry with the E-MLP, and every method's final levels against the gap knob of gap-dial.

Usage (the command is written into the report)::

    python benchmarks/symmetry.py --epochs 30 --seeds 3          # what benchmarks/symmetry.md ran
    python benchmarks/symmetry.py --part sweep --epochs 30        # only the gap-dial sweep

Part ``table``: ``equirelax compare TASK --model emlp`` for inertia and modified-inertia at
training sizes 100 and 1000, plus the plain MLP (``free``) as the no-symmetry row; results go to
``OUT/<task>-n<size>/``. Part ``sweep``: gap-dial at several ``delta``; for each delta the
dataset's symmetry gap (:func:`equirelax.gap.symmetry_gap`) and each method's final levels
(mean over layers, and the largest), plotted as ``OUT/gap-dial-levels.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from equirelax.engine import TrainConfig
from equirelax.experiments.cli import main as equirelax
from equirelax.experiments.compare import run_one
from equirelax.experiments.report import colour, format_table, ordering, summarize
from equirelax.experiments.task_registry import TASKS
from equirelax.gap import symmetry_gap
from equirelax.tasks import gap_dial_task

STRATEGIES = "strict,free,rpp,cr,ace-equality,ace-resilient,recm"
SWEEP_STRATEGIES = ("free", "rpp", "cr", "ace-equality", "ace-resilient", "recm")
PAPER = "EMLP 0.136, MLP 3.24 (inertia, N = 1000, test MSE; Finzi et al. 2021, arXiv 2104.09459)"


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("all", "table", "sweep"), default="all")
    parser.add_argument("--tasks", default="inertia,modified-inertia")
    parser.add_argument("--sizes", default="100,1000")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--deltas", default="0,0.25,0.5,1,2")
    parser.add_argument("--sweep-size", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/symmetry"))
    parser.add_argument("--report", type=Path, default=Path("benchmarks/symmetry.md"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--report-only", action="store_true")
    return parser.parse_args()


def _table(args: argparse.Namespace) -> list[str]:
    sections = []
    for task in args.tasks.split(","):
        for size in (int(s) for s in args.sizes.split(",")):
            common = [
                "--train-size", str(size), "--epochs", str(args.epochs), "--seeds",
                str(args.seeds), "--quiet", *(["--resume"] if args.resume else []),
            ]  # fmt: skip
            out = args.out / f"{task}-n{size}"
            baseline = args.out / f"{task}-n{size}-mlp"
            if not args.report_only:
                for argv in (
                    ["compare", task, "--model", "emlp", "--strategies", args.strategies,
                     "--out", str(out), *common],
                    ["compare", task, "--model", "mlp", "--strategies", "free",
                     "--out", str(baseline), *common],
                ):  # fmt: skip
                    code = equirelax(argv)
                    if code:
                        raise SystemExit(code)
            sections.append(_section(task, size, out, baseline))
    return sections


def _section(task: str, size: int, out: Path, baseline: Path) -> str:
    lines = [f"\n### {task}, {size} training samples\n"]
    for path, name in ((out, "E-MLP"), (baseline, "plain MLP")):
        file = path / "results.json"
        if not file.exists():
            lines.append(f"{name}: not run (no {file}).\n")
            continue
        results = json.loads(file.read_text())
        rows = summarize(results["runs"])
        lines.append(f"**{name}**\n\n" + format_table(rows) + "\n")
        if name == "E-MLP":
            lines.append(ordering(rows) + "\n")
            lines.append(_levels(results["runs"]))
    return "\n".join(lines)


def _levels(runs: list[dict[str, Any]]) -> str:
    """Final levels (mean over layers, then over seeds) of each strategy, from its history."""
    rows = []
    for label in dict.fromkeys(run["strategy"] for run in runs):
        finals = []
        for run in runs:
            if run["strategy"] != label or "history" not in run:
                continue
            lines = Path(run["history"]).read_text().splitlines()
            levels = json.loads(lines[-1]).get("levels") if lines else None
            if levels:
                finals.append((sum(levels) / len(levels), max(levels)))
        if finals:
            mean = sum(f[0] for f in finals) / len(finals)
            top = sum(f[1] for f in finals) / len(finals)
            rows.append(f"| {label} | {mean:.3g} | {top:.3g} |")
    if not rows:
        return ""
    return (
        "\nFinal levels (as trained; mean over layers / largest layer, averaged over seeds):\n\n"
        "| strategy | mean level | largest level |\n|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def _sweep(args: argparse.Namespace) -> str:
    path = args.out / "gap-dial.json"
    deltas = [float(d) for d in args.deltas.split(",")]
    records: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    if not args.report_only:
        for delta in deltas:
            key = f"{delta:g}"
            if args.resume and key in records:
                continue
            task = gap_dial_task(
                delta=delta, train_size=args.sweep_size, val_size=500, test_size=500
            )
            gap = symmetry_gap(*task.train, task.action_in, task.action_out)
            exact = task.extra["symmetry_gap"] / task.extra["target_energy"]
            entry: dict[str, Any] = {
                "delta": delta, "gap": gap.estimate, "gap_low": gap.low, "gap_high": gap.high,
                "exact_gap": exact, "methods": {},
            }  # fmt: skip
            config = TrainConfig(**{**TASKS["gap-dial"].quick["train"], "epochs": args.epochs})
            for label in SWEEP_STRATEGIES:
                options = TASKS["gap-dial"].quick["strategies"].get(label.split("-")[0], {})
                record = run_one(
                    task, "emlp", label, seed=0, config=config, progress=False,
                    out_dir=args.out / "gap-dial" / key / label, strategy_options=options,
                )  # fmt: skip
                lines = Path(record["history"]).read_text().splitlines()
                last = json.loads(lines[-1])
                levels = last.get("levels") or [0.0]
                entry["methods"][label] = {
                    "mean_level": sum(levels) / len(levels),
                    "max_level": max(levels),
                    "test": record["final"]["test"],
                    "gap_estimates": last.get("gap_estimates"),
                }
                print(
                    f"delta {delta:g} {label}: levels {levels} test {record['final']['test']:.4g}"
                )
            records[key] = entry
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(records, indent=2) + "\n")
    if not records:
        return "\nNot run.\n"
    _plot(records, args.out / "gap-dial-levels.png")
    header = "| delta | exact gap | estimated gap (95% interval) | " + " | ".join(
        f"{m} mean / max level (test MSE)" for m in SWEEP_STRATEGIES
    )
    lines = [header + " |", "|" + "---|" * (3 + len(SWEEP_STRATEGIES))]
    for key in sorted(records, key=float):
        r = records[key]
        cells = [
            f"{m['mean_level']:.3g} / {m['max_level']:.3g} ({m['test']:.3g})"
            for m in (r["methods"][label] for label in SWEEP_STRATEGIES)
        ]
        lines.append(
            f"| {r['delta']:g} | {r['exact_gap']:.3g} | {r['gap']:.3g} "
            f"[{r['gap_low']:.3g}, {r['gap_high']:.3g}] | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines) + "\n\n![levels against delta](results/symmetry/gap-dial-levels.png)\n"


def _plot(records: dict[str, Any], path: Path) -> None:
    ordered = [records[k] for k in sorted(records, key=float)]
    deltas = [r["delta"] for r in ordered]
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for label in SWEEP_STRATEGIES:
        mean_levels = [r["methods"][label]["mean_level"] for r in ordered]
        left.plot(deltas, mean_levels, "o-", label=label, color=colour(label))
        max_levels = [r["methods"][label]["max_level"] for r in ordered]
        right.plot(deltas, max_levels, "o-", label=label, color=colour(label))
    for axis, title in ((left, "mean level over layers"), (right, "largest layer level")):
        axis.set_xlabel("delta (gap-dial)")
        axis.set_title(title)
        axis.grid(alpha=0.3)
    gap = right.twinx()
    gap.plot(deltas, [r["gap"] for r in ordered], "k--", label="estimated gap (data)")
    gap.set_ylabel("estimated symmetry gap")
    left.legend(fontsize=8)
    gap.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> int:
    args = _arguments()
    command = "python benchmarks/symmetry.py " + " ".join(sys.argv[1:])
    parts = []
    if args.part in ("all", "table"):
        parts += ["\n## Strategies on inertia and modified-inertia (E-MLP)\n", *_table(args)]
    if args.part in ("all", "sweep"):
        parts += ["\n## Final levels against the gap (gap-dial)\n", _sweep(args)]
    machine = (
        f"{platform.platform()}, {platform.processor() or platform.machine()}, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads"
    )
    header = (
        "# Symmetry benchmark: exact, broken and dialled O(3) symmetry\n\n"
        f"Command: `{command}`  \nMachine: {machine}  \nReference: {PAPER}\n"
    )
    args.report.write_text(header + "\n".join(parts))
    print(f"wrote {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
