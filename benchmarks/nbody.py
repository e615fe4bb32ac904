"""The N-body benchmark: ``equirelax compare nbody --full`` for EGNN and the steerable model,
then ``benchmarks/nbody.md`` with our numbers beside the papers'.

Usage (the exact commands of the report are written into it)::

    python benchmarks/nbody.py --epochs 10000 --seeds 3            # the papers' length
    python benchmarks/nbody.py --epochs 30 --seeds 3 --device cuda  # shorter, on a GPU

Each model's comparison goes to ``OUT/<model>/`` (``results.json``, ``results.md``, plots and
per-run directories) and can be resumed with ``--resume``. The step-time table divides each
strategy's training seconds per epoch by strict's, measured in the same comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from equirelax.experiments.cli import main as equirelax
from equirelax.experiments.report import format_table, ordering, summarize
from equirelax.experiments.task_registry import TASKS

STRATEGIES = "strict,cr,ace-equality,ace-resilient,rpp,augment,free"
PAPERS = {
    "egnn": "EGNN 7.1e-3 (Satorras et al. 2021, Table 3)",
    "segnn": "SEGNN 5.6e-3, +CR 4.9e-3, +ACE 3.8e-3 (the ACE paper's runs, arXiv 2505.13631)",
}


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="egnn,segnn")
    parser.add_argument("--strategies", default=STRATEGIES)
    parser.add_argument("--epochs", type=int, default=TASKS["nbody"].full["train"]["epochs"])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/nbody"))
    parser.add_argument("--report", type=Path, default=Path("benchmarks/nbody.md"))
    parser.add_argument("--resume", action="store_true")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report from the results so far (e.g. of an interrupted run)",
    )
    parser.add_argument("--option", action="append", default=[], help="passed to compare")
    return parser.parse_args()


def main() -> int:
    args = _arguments()
    sections = []
    machine = None
    for model in args.models.split(","):
        if args.report_only:
            path = args.out / model / "results.json"
            if path.exists():
                results = json.loads(path.read_text())
                machine = results["machine"]
                sections.append(_section(model, results, args))
            else:
                sections.append(f"\n## {model}\n\nNot run (no {path}).")
            continue
        argv = [
            "compare", "nbody", "--full", "--model", model, "--strategies", args.strategies,
            "--seeds", str(args.seeds), "--epochs", str(args.epochs), "--device", args.device,
            "--out", str(args.out / model), *(["--resume"] if args.resume else []),
            *[word for option in args.option for word in ("--option", option)],
        ]  # fmt: skip
        code = equirelax(argv)
        if code:
            return code
        results = json.loads((args.out / model / "results.json").read_text())
        machine = results["machine"]
        sections.append(_section(model, results, args))
    if machine is None:
        print("no results to report", file=sys.stderr)
        return 1
    header = [
        "# N-body benchmark (charged 5-body, EGNN/SEGNN protocol)",
        "",
        "Made by `python " + " ".join(sys.argv) + "`.",
        "",
        f"Machine: {machine['processor']}, {machine['cpus']} CPUs, torch {machine['torch']}, "
        f"device {machine['device']}{', ' + machine['gpu'] if 'gpu' in machine else ''}.",
        "",
        "Data: 3000 / 2000 / 2000 systems, frame 30 -> frame 40, test MSE of the model each "
        "strategy evaluates (projected for strict, CR and ACE-equality), mean ± std over seeds.",
    ]
    args.report.write_text("\n".join(header + sections) + "\n")
    print(f"wrote {args.report}")
    return 0


def _section(model: str, results: dict, args: argparse.Namespace) -> str:
    rows = summarize(results["runs"])
    config = results["setup"]["config"]
    planned = len(results["setup"]["strategies"]) * results["setup"]["seeds"]
    done = len(results["runs"])
    partial = (
        f"**Partial: {done} of {planned} runs finished** (the rest were not run).\n\n"
        if done < planned
        else ""
    )
    timing = ["| strategy | s / epoch | vs strict |", "|---|---|---|"] + [
        f"| {r['strategy']} | {r['seconds_per_epoch']:.3f} | {r['time_ratio']:.2f} |" for r in rows
    ]
    return "\n".join(
        [
            "",
            f"## {model}",
            "",
            f"Command: `{results['command']}`",
            "",
            partial,
            f"Training: {config['epochs']} epochs, batch {config['batch_size']}, "
            f"lr {config['lr']}, weight decay {config['weight_decay']}.",
            "",
            format_table(rows),
            "",
            ordering(rows),
            "",
            f"Published (full-length training): {PAPERS.get(model, 'none')}.",
            "",
            "Step time (training seconds per epoch, same run):",
            "",
            *timing,
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
