"""The ``equirelax`` command line: ``tasks``, ``train``, ``compare``, ``adapt`` and ``break``.

Examples
--------
``equirelax tasks``
    List the tasks with their symmetry, splits and models.
``equirelax compare nbody``
    The quick comparison (small splits, few epochs) of the default strategies with EGNN.
``equirelax compare nbody --model segnn --strategies strict,cr,ace-equality --seeds 3 --full``
    The published protocol.
``equirelax compare nbody --seeds 3 --jobs 4``
    Four runs at a time in worker processes (default: one per core).
``equirelax train nbody --model egnn --strategy cr --option weight=0.1 --epochs 20``
    One run.
``equirelax adapt mnist --group c8``
    Pretrain a CNN on upright digits (or load ``--predictor PATH``), then fine-tune it at equal
    budget with and without canonicalization and report upright, C4- and C8-averaged accuracy.
``equirelax break polygon --seeds 3``
    Train the strict, noise-injected and relaxed-equivariant arms of a symmetry-breaking task
    and report failure rates, losses and the relaxed-equivariance checks.

Every run writes ``metrics.jsonl`` and an atomic ``checkpoint.pt``; ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equirelax._checks import (
    MAX_SPLIT_SIZE,
    check_device,
    check_options,
    first_line,
    option_names,
)
from equirelax.breaking.objects import TIE_BREAKS
from equirelax.canonical import ImageCanonicalizer
from equirelax.engine import MAX_EPOCHS, MAX_SEED, TrainConfig
from equirelax.experiments import model_registry
from equirelax.experiments.adapt import ARMS, adapt, format_adapt_table, pretrain
from equirelax.experiments.breaking import ARMS as BREAKING_ARMS
from equirelax.experiments.breaking import compare_breaking, format_breaking_table
from equirelax.experiments.compare import (
    DEFAULT_STRATEGIES,
    STRATEGY_PRESETS,
    compare,
    make_strategy,
    run_one,
)
from equirelax.experiments.report import format_table, ordering, summarize
from equirelax.experiments.runner import MAX_SEEDS
from equirelax.experiments.task_registry import TASKS, TaskInfo
from equirelax.tasks.base import Task

__all__ = ["DEBUG_ENV", "main"]

DEBUG_ENV = "EQUIRELAX_DEBUG"
"""The environment variable that makes the command line show tracebacks (``1``)."""


def _number(cast: type, *, positive: bool, at_most: float | None = None) -> Any:
    """An argparse type: ``cast(text)``, required to be finite and > 0 (``positive``) or
    >= 0, and at most ``at_most``."""
    kind = ("a positive " if positive else "a non-negative ") + (
        "integer" if cast is int else "finite number"
    )
    if at_most is not None:
        kind += f" of at most {at_most}"

    def parse(text: str) -> Any:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {kind}, received {text!r}") from None
        in_range = value > 0 if positive else value >= 0
        if not (math.isfinite(value) and in_range and (at_most is None or value <= at_most)):
            raise argparse.ArgumentTypeError(f"expected {kind}, received {value}")
        return value

    return parse


_positive_int = _number(int, positive=True)
_split_size = _number(int, positive=True, at_most=MAX_SPLIT_SIZE)
_epochs = _number(int, positive=True, at_most=MAX_EPOCHS)
_seeds = _number(int, positive=True, at_most=MAX_SEEDS)
_seed = _number(int, positive=False, at_most=MAX_SEED)
_positive_float = _number(float, positive=True)
_non_negative_float = _number(float, positive=False)


def _key_value(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with VALUE read as a Python literal when it is one (``0.1``, ``True``)."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, received {text!r}")
    try:
        value = ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        value = raw
    return key, value


def _add_common(parser: argparse.ArgumentParser, *, resume: bool = True) -> None:
    parser.add_argument("task", help=f"one of: {', '.join(TASKS)}")
    parser.add_argument("--model", help="model name (default: the task's first model)")
    parser.add_argument("--full", action="store_true", help="the published protocol")
    sizes = parser.add_argument_group("data")
    for split in ("train", "val", "test"):
        sizes.add_argument(f"--{split}-size", type=_split_size, help=f"number of {split} samples")
    training = parser.add_argument_group("training (defaults: the task's preset)")
    training.add_argument("--epochs", type=_epochs)
    training.add_argument("--batch-size", type=_positive_int)
    training.add_argument("--lr", type=_positive_float)
    training.add_argument("--weight-decay", type=_non_negative_float)
    training.add_argument("--lr-schedule", choices=("constant", "cosine", "exponential"))
    training.add_argument(
        "--max-grad-norm", type=_positive_float, help="clip the gradient norm (default: no clip)"
    )
    training.add_argument(
        "--eval-every", type=_positive_int, help="validate every N epochs (and after the last)"
    )
    training.add_argument(
        "--compile",
        nargs="?",
        const=True,
        metavar="BACKEND",
        help="run the training forward pass through torch.compile (default backend: inductor; "
        "the first steps compile)",
    )
    training.add_argument(
        "--patience",
        type=_positive_int,
        help="stop after N epochs without a better validation metric (default: never)",
    )
    training.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument(
        "--model-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model constructor option (repeatable), e.g. hidden_features=32",
    )
    parser.add_argument(
        "--task-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="task builder option (repeatable), e.g. delta=0.5 for gap-dial",
    )
    parser.add_argument("--out", type=Path, help="output directory")
    if resume:
        parser.add_argument("--resume", action="store_true", help="continue an interrupted job")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="equirelax",
        description="Train equivariant models between strict equivariance and none.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help=f"show the Python traceback of an error (anywhere on the line; also {DEBUG_ENV}=1)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("tasks", help="list the tasks with their symmetry and models")

    train = commands.add_parser("train", help="train one model with one strategy")
    _add_common(train)
    train.set_defaults(subparser=train)
    train.add_argument("--strategy", default="strict", help="a strategy label (see compare)")
    train.add_argument("--seed", type=_seed, default=0)
    train.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="strategy option (repeatable), e.g. weight=0.1",
    )

    comp = commands.add_parser("compare", help="run several strategies and seeds side by side")
    _add_common(comp)
    comp.set_defaults(subparser=comp)
    comp.add_argument(
        "--strategies",
        default=",".join(DEFAULT_STRATEGIES),
        help=f"comma-separated labels from: {', '.join(STRATEGY_PRESETS)}",
    )
    comp.add_argument("--seeds", type=_seeds, default=1, help="seeds per strategy")
    comp.add_argument(
        "--jobs",
        type=_positive_int,
        metavar="N",
        help="train N runs at a time in worker processes, each on cores/N torch threads "
        "(default: one per available core, at most one per run left to do; 1: one after "
        "the other in this process, on torch's default threads)",
    )
    comp.add_argument(
        "--option",
        type=_key_value,
        action="append",
        default=[],
        metavar="STRATEGY.KEY=VALUE",
        help="strategy option (repeatable), e.g. cr.weight=0.1",
    )

    adapt = commands.add_parser(
        "adapt",
        help="make a pretrained classifier rotation-invariant by canonicalization",
        description=(
            "Fine-tune a predictor pretrained on upright images at equal budget in each arm "
            f"({', '.join(ARMS)}) and report upright, C4- and C8-averaged test accuracy and the "
            "fraction of upright images canonicalized to the identity (Mondal et al. 2023). "
            "The training options set the fine-tuning budget."
        ),
    )
    _add_common(adapt, resume=False)
    adapt.set_defaults(subparser=adapt)
    adapt.add_argument(
        "--predictor",
        type=Path,
        help="state dict of the task's model: loaded if the file exists, else the model is "
        "pretrained on upright images and saved there (default OUT/predictor.pt)",
    )
    adapt.add_argument("--group", default="c8", help="canonicalizer group: cN or dN (default c8)")
    adapt.add_argument(
        "--arms", default=",".join(ARMS), help=f"comma-separated arms from: {', '.join(ARMS)}"
    )
    adapt.add_argument("--seeds", type=_seeds, default=1, help="fine-tuning seeds per arm")
    adapt.add_argument("--pretrain-epochs", type=_epochs, help="epochs of pretraining")
    adapt.add_argument(
        "--prior-weight", type=_non_negative_float, default=100.0, help="lambda_prior"
    )
    adapt.add_argument(
        "--canonicalizer-lr-scale",
        type=_positive_float,
        default=10.0,
        help="the canonicalizer's learning rate as a multiple of --lr (default 10)",
    )
    adapt.add_argument(
        "--canonicalizer-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="ImageCanonicalizer option (repeatable), e.g. hidden=16 or beta=0.5",
    )

    breaking = commands.add_parser(
        "break",
        help="strict vs noise injection vs relaxed equivariance on a symmetry-breaking task",
        description=(
            "Train the task's model in each arm (strict: equivariant; noise: noise injection; "
            "relaxed: a symmetry-breaking object) and report the test failure rate and loss, "
            "and on the first test inputs the fractions that pass the relaxed-equivariance "
            "checker and that keep their stabiliser (Kaba & Ravanbakhsh 2023)."
        ),
    )
    _add_common(breaking, resume=False)
    breaking.set_defaults(subparser=breaking)
    breaking.add_argument(
        "--arms",
        default=",".join(BREAKING_ARMS),
        help=f"comma-separated arms from: {', '.join(BREAKING_ARMS)}",
    )
    breaking.add_argument("--seeds", type=_seeds, default=3, help="seeds per arm")
    breaking.add_argument(
        "--tie-break", choices=TIE_BREAKS, default="first", help="the relaxed arm's tie breaking"
    )
    breaking.add_argument(
        "--check-samples", type=_positive_int, help="test inputs checked (default: the preset)"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``equirelax`` console script; returns the exit status: 0, 2 for a
    usage error, 1 for a runtime error, which is reported as one message (with ``--debug`` or
    ``EQUIRELAX_DEBUG=1``: the traceback), 130 when interrupted."""
    words = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in words or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    words = [word for word in words if word != "--debug"]
    try:
        return _main(words)
    except KeyboardInterrupt:
        if debug:
            raise
        print("equirelax: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if debug:
            raise
        print(_error_message(words, error), file=sys.stderr)
        return 1


def _error_message(words: Sequence[str], error: Exception) -> str:
    """One message for an error that reached the command line: what it says, and for an error
    that is not a report of bad input or a file problem, how to report it."""
    command = next((word for word in words if not word.startswith("-")), "")
    notes = "".join(f"\n  {note}" for note in getattr(error, "__notes__", ()))
    prefix = f"equirelax {command}" if command else "equirelax"
    message = f"{prefix}: error: {error}{notes}"
    if not isinstance(error, (ValueError, TypeError, OSError, ImportError, RuntimeError)):
        message += (
            f"\n({type(error).__name__}; run again with --debug for the traceback and report it)"
        )
    return message


def _main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "tasks":
        _list_tasks()
        return 0
    parser = args.subparser
    if args.command == "adapt":
        return _adapt(parser, args, argv)
    if args.command == "break":
        return _break(parser, args, argv)
    if args.task not in TASKS:
        parser.error(f"task: expected one of {', '.join(TASKS)}, received {args.task!r}")
    info = TASKS[args.task]
    model = _model_and_device(parser, args, info)
    labels = [args.strategy] if args.command == "train" else _labels(parser, args.strategies)
    for label in labels:
        if label not in STRATEGY_PRESETS:
            parser.error(
                f"strategy: expected one of {', '.join(STRATEGY_PRESETS)}, received {label!r}"
            )
    preset = info.full if args.full else info.quick
    task_options = _task_options(args, preset)
    config = _train_config(parser, args, preset["train"])
    model_options = dict(args.model_option)
    command = _command_line(argv)
    task = _build_task(parser, args, info, task_options)
    _build_model(parser, model, task, model_options)
    recorded_task_options = {k: v for k, v in task_options.items() if k != "progress"}
    options = _strategy_options(parser, args.option, labels, preset.get("strategies", {}))
    try:
        if args.command == "train":
            out = _output_dir(parser, args, f"train-{args.task}-{model}-{args.strategy}")
            record = run_one(
                task,
                model,
                args.strategy,
                seed=args.seed,
                config=config,
                out_dir=out,
                resume=args.resume,
                progress=not args.quiet,
                model_options=model_options,
                strategy_options=options.get(args.strategy, {}),
            )
            print(json.dumps(record["final"], indent=2))
            print(f"wrote {out}")
            return 0
        out = _output_dir(parser, args, f"compare-{args.task}-{model}")
        results = compare(
            task,
            model,
            labels,
            seeds=args.seeds,
            config=config,
            out_dir=out,
            resume=args.resume,
            progress=not args.quiet,
            model_options=model_options,
            strategy_options=options,
            task_options=recorded_task_options,
            command=command,
            reference=info.reference if args.full else None,
            jobs=args.jobs,
        )
    except (TypeError, ValueError) as error:
        notes = "".join(f"\n  {note}" for note in getattr(error, "__notes__", ()))
        print(f"equirelax {args.command}: error: {error}{notes}", file=sys.stderr)
        return 2
    print()
    rows = summarize(results["runs"])
    print(format_table(rows, task.metric_name))
    print(ordering(rows))
    print(f"\nwrote {out}/results.json, results.md, curves.png, levels.png")
    return 0


def _model_and_device(
    parser: argparse.ArgumentParser, args: argparse.Namespace, info: TaskInfo
) -> str:
    """The model name (default: the task's first) after checking it and ``--device``."""
    model = args.model or info.models[0]
    if model not in info.models:
        parser.error(
            f"--model: expected one of {', '.join(info.models)} for task {args.task!r}, "
            f"received {model!r}"
        )
    try:
        check_device("--device", args.device)
    except ValueError as error:
        parser.error(str(error))
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device: {args.device!r} requested but no CUDA device is available")
    return model


def _build_task(
    parser: argparse.ArgumentParser, args: argparse.Namespace, info: TaskInfo, options: dict
) -> Task:
    """``info.builder(**options)``; a usage error naming the option it refuses (or the extra to
    install)."""
    try:
        return info.builder(**options)
    except ImportError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")
    except (TypeError, ValueError) as error:
        unknown = _unexpected_keyword(error)
        if unknown is None:
            parser.error(f"--task-option: task {args.task!r} refused its options: {error}")
        flag = f"--{unknown.replace('_', '-')}" if unknown.endswith("_size") else "--task-option"
        accepted = option_names(info.builder) or []
        parser.error(
            f"{flag}: task {args.task!r} has no option {unknown!r}; its options are "
            f"{', '.join(accepted) or '(none)'}"
        )


def _build_model(
    parser: argparse.ArgumentParser, model: str, task: Task, options: dict[str, Any]
) -> nn.Module:
    """The registry's model ``model`` for ``task``; a usage error naming a refused option."""
    try:
        return model_registry.build(model, task, **options)
    except (TypeError, ValueError) as error:
        unknown = _unexpected_keyword(error)
        if unknown is None:
            parser.error(f"--model-option: model {model!r} refused its options: {error}")
        parser.error(
            f"--model-option: model {model!r} has no option {unknown!r} ({first_line(error)}); "
            "`equirelax tasks` lists the models, their classes document the options"
        )


def _unexpected_keyword(error: Exception) -> str | None:
    """The keyword a ``TypeError`` says a callable did not expect, or ``None``."""
    match = re.search(r"unexpected keyword argument '([^']+)'", str(error))
    return match.group(1) if isinstance(error, TypeError) and match else None


def _train_config(
    parser: argparse.ArgumentParser, args: argparse.Namespace, preset: dict[str, Any]
) -> TrainConfig:
    """The preset's TrainConfig with the command line's settings; a usage error naming the
    flag of a setting it refuses."""
    try:
        return TrainConfig(**{**preset, **_overrides(args), "device": args.device})
    except (TypeError, ValueError) as error:
        field, _, rest = str(error).partition(":")
        parser.error(f"--{field.replace('_', '-')}:{rest}")


def _output_dir(parser: argparse.ArgumentParser, args: argparse.Namespace, default: str) -> Path:
    """``--out`` (default ``runs/<default>``), created; a usage error when it is a file or
    cannot be created or written."""
    out = args.out or Path("runs") / default
    if out.exists() and not out.is_dir():
        parser.error(f"--out: expected a directory, received {out}, which is a file")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        parser.error(
            f"--out: cannot create the directory {out} ({error.strerror or error}); choose a "
            "directory you can write to"
        )
    if not os.access(out, os.W_OK | os.X_OK):
        parser.error(f"--out: {out} is not writable; choose a directory you can write to")
    return out


def _task_options(args: argparse.Namespace, preset: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The preset's task options with the split sizes and ``--task-option`` s given."""
    options = {**preset["task"], "progress": not args.quiet}
    for split in ("train", "val", "test"):
        size = getattr(args, f"{split}_size")
        if size is not None:
            options[f"{split}_size"] = size
    return {**options, **dict(args.task_option)}


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig fields given on the command line."""
    return {
        name: getattr(args, name)
        for name in (
            "epochs",
            "batch_size",
            "lr",
            "weight_decay",
            "lr_schedule",
            "max_grad_norm",
            "eval_every",
            "patience",
            "compile",
        )
        if getattr(args, name) is not None
    }


def _adapt(parser: argparse.ArgumentParser, args: argparse.Namespace, words: list[str]) -> int:
    """``equirelax adapt``: pretrain or load the predictor, run the arms, print the table."""
    if args.task not in TASKS or "adapt" not in TASKS[args.task].quick:
        adaptable = [name for name, info in TASKS.items() if "adapt" in info.quick]
        parser.error(f"task: expected one of {', '.join(adaptable)}, received {args.task!r}")
    info = TASKS[args.task]
    model = _model_and_device(parser, args, info)
    arms = _arms(parser, args.arms, ARMS)
    preset = info.full if args.full else info.quick
    task_options = {**_task_options(args, preset), "group": args.group}
    try:
        check_options("--canonicalizer-option", ImageCanonicalizer, dict(args.canonicalizer_option))
    except TypeError as error:
        parser.error(str(error))
    task = _build_task(parser, args, info, task_options)
    finetune = _train_config(parser, args, preset["adapt"])
    pretrain_epochs = {"epochs": args.pretrain_epochs} if args.pretrain_epochs else {}
    pretraining = TrainConfig(**{**preset["train"], **pretrain_epochs, "device": args.device})
    out = _output_dir(parser, args, f"adapt-{args.task}-{model}")
    predictor_path = args.predictor or out / "predictor.pt"
    torch.manual_seed(0)
    predictor = _build_model(parser, model, task, dict(args.model_option))
    try:
        if predictor_path.exists():
            try:
                state = torch.load(predictor_path, map_location="cpu", weights_only=True)
            except Exception as error:
                raise ValueError(
                    f"--predictor: expected a file of weights saved with torch.save, "
                    f"{predictor_path} is not one ({type(error).__name__}: "
                    f"{first_line(error)}); pass the predictor.pt an earlier run wrote, or none "
                    "to pretrain one"
                ) from None
            try:
                predictor.load_state_dict(state)
            except (RuntimeError, AttributeError, TypeError) as error:
                raise ValueError(
                    f"--predictor: {predictor_path} is not a state dict of model {model!r} "
                    f"with options {dict(args.model_option)} ({error})"
                ) from None
            print(f"loaded the predictor from {predictor_path}")
        else:
            print(
                f"pretraining {model} on upright {args.task} images ({pretraining.epochs} epochs)"
            )
            predictor = pretrain(
                task, predictor, pretraining, out_dir=out / "pretrain", progress=not args.quiet
            )
            predictor_path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(predictor.state_dict(), predictor_path)
            print(f"saved the predictor to {predictor_path}")
        records = adapt(
            task,
            predictor,
            args.group,
            arms=arms,
            seeds=args.seeds,
            config=finetune,
            prior_weight=args.prior_weight,
            canonicalizer_options=dict(args.canonicalizer_option),
            canonicalizer_lr_scale=args.canonicalizer_lr_scale,
            out_dir=out,
            progress=not args.quiet,
        )
    except (TypeError, ValueError) as error:
        print(f"equirelax adapt: error: {error}", file=sys.stderr)
        return 2
    table = format_adapt_table(records)
    _write_table(out, words, table)
    return 0


def _break(parser: argparse.ArgumentParser, args: argparse.Namespace, words: list[str]) -> int:
    """``equirelax break``: train every arm of the task's model, print the table."""
    breakable = [name for name, info in TASKS.items() if "break" in info.quick]
    if args.task not in breakable:
        parser.error(f"task: expected one of {', '.join(breakable)}, received {args.task!r}")
    info = TASKS[args.task]
    model = _model_and_device(parser, args, info)
    arms = _arms(parser, args.arms, BREAKING_ARMS)
    if "breaking" in dict(args.model_option):
        parser.error("--model-option: 'breaking' is set by each arm; choose the arms with --arms")
    preset = info.full if args.full else info.quick
    task = _build_task(parser, args, info, _task_options(args, preset))
    config = _train_config(parser, args, preset["train"])
    model_options = {"tie_break": args.tie_break, **dict(args.model_option)}
    _build_model(parser, model, task, model_options)
    out = _output_dir(parser, args, f"break-{args.task}-{model}")
    try:
        records = compare_breaking(
            task,
            model,
            arms,
            seeds=args.seeds,
            config=config,
            model_options=model_options,
            check_samples=args.check_samples or preset["break"]["check_samples"],
            out_dir=out,
            progress=not args.quiet,
        )
    except (TypeError, ValueError) as error:
        print(f"equirelax break: error: {error}", file=sys.stderr)
        return 2
    table = format_breaking_table(records)
    _write_table(out, words, table)
    return 0


def _arms(parser: argparse.ArgumentParser, text: str, valid: Sequence[str]) -> list[str]:
    """The ``--arms`` labels, each checked against ``valid``."""
    arms = _labels(parser, text, "--arms")
    for arm in arms:
        if arm not in valid:
            parser.error(f"--arms: expected names from {', '.join(valid)}, received {arm!r}")
    return arms


def _command_line(words: Sequence[str]) -> str:
    """The command as a user would type it again (shell-quoted)."""
    return "equirelax " + " ".join(shlex.quote(word) for word in words)


def _write_table(out: Path, words: list[str], table: str) -> None:
    """Write ``out/results.md`` (the command, then ``table``) and print the table."""
    (out / "results.md").write_text(f"`{_command_line(words)}`\n\n{table}\n")
    print()
    print(table)
    print(f"\nwrote {out}/results.json, results.md")


def _labels(parser: argparse.ArgumentParser, text: str, option: str = "--strategies") -> list[str]:
    labels = [label.strip() for label in text.split(",") if label.strip()]
    if not labels:
        parser.error(f"{option}: expected comma-separated labels, received {text!r}")
    if len(set(labels)) != len(labels):
        parser.error(f"{option}: expected distinct labels, received {text!r}")
    return labels


def _strategy_options(
    parser: argparse.ArgumentParser,
    options: list[tuple[str, Any]],
    labels: list[str],
    preset: dict[str, dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Options per label: the task preset's for the label's strategy, then ``--option``s
    (``LABEL.KEY=VALUE``; plain ``KEY=VALUE`` when there is one label)."""
    out = {
        label: dict(preset[STRATEGY_PRESETS[label][0]])
        for label in labels
        if STRATEGY_PRESETS[label][0] in preset
    }
    for key, value in options:
        label, dot, name = key.partition(".")
        if not dot and len(labels) == 1:  # one strategy (train): KEY=VALUE is its option
            label, dot, name = labels[0], ".", key
        if not dot or label not in labels:
            parser.error(
                f"--option: expected STRATEGY.KEY=VALUE with STRATEGY one of "
                f"{', '.join(labels)}, received {key!r}"
            )
        out.setdefault(label, {})[name] = value
    for label in labels:
        try:
            make_strategy(label, **out.get(label, {}))
        except (TypeError, ValueError) as error:
            parser.error(f"--option: {error}")
    return out


def _list_tasks() -> None:
    rows = [
        (name, info.symmetry, ",".join(info.models), info.description, info.full["task"])
        for name, info in TASKS.items()
    ]
    width_name = max(len("task"), *(len(r[0]) for r in rows))
    width_symmetry = max(len("symmetry"), *(len(r[1]) for r in rows))
    width_models = max(len("models"), *(len(r[2]) for r in rows))
    print(
        f"{'task':<{width_name}} {'symmetry':<{width_symmetry}} {'models':<{width_models}} "
        "description"
    )
    for name, symmetry, names, description, sizes in rows:
        if any(f"{s}_size" in sizes for s in ("train", "val", "test")):
            counts = (str(sizes.get(f"{s}_size", "-")) for s in ("train", "val", "test"))
            full = f"full splits {'/'.join(counts)}"
        else:
            full = "full preset " + ", ".join(f"{k}={v}" for k, v in sizes.items())
        print(
            f"{name:<{width_name}} {symmetry:<{width_symmetry}} {names:<{width_models}} "
            f"{description}; {full}"
        )
    print(
        f"\nmodels: {', '.join(f'{k} ({v.description})' for k, v in model_registry.MODELS.items())}"
    )
    print(f"strategies: {', '.join(STRATEGY_PRESETS)}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
