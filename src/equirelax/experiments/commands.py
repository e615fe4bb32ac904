"""The ``equirelax`` commands behind :mod:`~equirelax.experiments.cli`: ``train`` and
``compare`` (:func:`run`), ``adapt``, ``break`` and ``tasks``. The command line parses its
arguments without this module (and so without torch) and imports it to run one."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from equirelax._checks import check_device, check_options, first_line, option_names
from equirelax.canonical import ImageCanonicalizer
from equirelax.engine import TrainConfig
from equirelax.experiments import model_registry
from equirelax.experiments.adapt import ARMS, adapt, format_adapt_table, pretrain
from equirelax.experiments.breaking import ARMS as BREAKING_ARMS
from equirelax.experiments.breaking import compare_breaking, format_breaking_table
from equirelax.experiments.cli import error_line
from equirelax.experiments.compare import (
    RUN_RESULT,
    STRATEGY_PRESETS,
    compare,
    make_strategy,
    run_one,
)
from equirelax.experiments.config_file import CONFIG_TOML, format_config
from equirelax.experiments.report import (
    CURVES_PNG,
    LEVELS_PNG,
    RESULTS_MD,
    format_table,
    ordering,
    summarize,
)
from equirelax.experiments.runner import RESULTS_JSON
from equirelax.experiments.task_registry import TASKS, TaskInfo
from equirelax.tasks.base import Task

__all__ = ["adapt_command", "break_command", "list_tasks", "run"]


def run(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """``equirelax train`` and ``equirelax compare``: check the names and options, train, print
    the record or the table; the exit status."""
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
            _save_config(out, args)
            if args.json:
                print(json.dumps(record, indent=2))
            else:
                _print_record(record)
                print(f"wrote {out}/{RUN_RESULT}, metrics.jsonl, {CONFIG_TOML}")
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
        return _refused(args, error)
    print()
    rows = summarize(results["runs"])
    print(format_table(rows, task.metric_name))
    print(ordering(rows))
    _save_config(out, args)
    files = (RESULTS_JSON, RESULTS_MD, CURVES_PNG, LEVELS_PNG, CONFIG_TOML)
    written = [name for name in files if (out / name).exists()]
    print(f"\nwrote {out}/{', '.join(written)}")
    return 0


_FAMILIES = {
    False: (
        "no gap detectable: the data look exactly symmetric, so a strictly equivariant model "
        "fits (strict; ACE-equality or CR if you want a relaxed start that ends equivariant). "
        "Measured (benchmarks/claims.md): on inertia, exact O(3), nothing beat strict E-MLP "
        "beyond noise (strict 0.689 +- 0.394 test MSE, 3 seeds)"
    ),
    True: (
        "a clear gap: the data break the symmetry measurably, so a relaxed method that keeps "
        "what the data need fits (ACE-resilient, RECM or RPP). Measured "
        "(benchmarks/claims.md): on modified-inertia, O(3) broken to O(2), RPP and RECM beat "
        "strict E-MLP (1.12 and 1.15 against 2.27 test MSE, 3 seeds)"
    ),
}


def gap_command(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``equirelax gap``: the symmetry gap of a regression task's data (training and
    validation splits) with its interval, and the family of strategies it points to."""
    from dataclasses import asdict

    from equirelax._batches import concatenate
    from equirelax.gap import symmetry_gap

    if args.task not in TASKS:
        parser.error(f"task: expected one of {', '.join(TASKS)}, received {args.task!r}")
    info = TASKS[args.task]
    preset = info.full if args.full else info.quick
    options = {**preset["task"], "progress": not args.quiet, **dict(args.task_option)}
    task = _build_task(parser, args, info, options)
    if task.metric_name not in ("mse", "rmse"):
        parser.error(
            f"task: expected a regression task (MSE), received {args.task!r} with metric "
            f"{task.metric_name!r}"
        )
    inputs = concatenate([task.train[0], task.val[0]])
    targets = concatenate([task.train[1], task.val[1]])
    result = symmetry_gap(inputs, targets, task.action_in, task.action_out, steps=args.steps,
                          seed=args.seed)  # fmt: skip
    if args.json:
        print(json.dumps({"task": args.task, **asdict(result), "detected": result.detected}))
        return 0
    print(f"{args.task} ({info.symmetry}), {targets.shape[0]} samples: {result}")
    print(_FAMILIES[result.detected] + ".")
    return 0


def _print_record(record: dict[str, Any]) -> None:
    """A run's outcome in one line: the test metric at the best validation epoch and at the
    last one, the best validation metric and the time."""
    final, metric = record["final"], record["metric"]

    def shown(key: str) -> str:
        value = final.get(key)
        return f"{value:.4g}" if isinstance(value, (int, float)) else "-"

    print(
        f"{record['task']} / {record['model']} / {record['strategy']} (seed {record['seed']}): "
        f"test {metric} {shown('test')} at the best validation epoch {final.get('best_epoch')} "
        f"(final epoch: {shown('test_final')}); validation {shown('best_val')}; "
        f"{record['wall_seconds']:.1f} s"
    )


def _save_config(out: Path, args: argparse.Namespace) -> None:
    """Write the command's resolved options to ``out/config.toml`` (``--config`` reads it)."""
    (out / CONFIG_TOML).write_text(
        f"# resolved options of `equirelax {args.command}`; run again with --config\n"
        + format_config(args)
    )


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
    loggers = {"loggers": [args.logger]} if args.logger is not None else {}
    return loggers | {
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


def adapt_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, words: list[str]
) -> int:
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
        return _refused(args, error)
    return _finish(out, args, words, format_adapt_table(records))


def break_command(
    parser: argparse.ArgumentParser, args: argparse.Namespace, words: list[str]
) -> int:
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
        return _refused(args, error)
    return _finish(out, args, words, format_breaking_table(records))


def _refused(args: argparse.Namespace, error: Exception) -> int:
    """Report a runner's refusal of its inputs; the usage exit status."""
    print(error_line(args.command, error), file=sys.stderr)
    return 2


def _finish(out: Path, args: argparse.Namespace, words: list[str], table: str) -> int:
    """Save the resolved options and ``results.md``, print the table; the exit status."""
    _save_config(out, args)
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
    print(f"\nwrote {out}/results.json, results.md, {CONFIG_TOML}")


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


def list_tasks() -> None:
    """``equirelax tasks``: the tasks with their symmetry, models and full splits."""
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
