"""Milliseconds per training step of each strategy on relaxed EGNN, side by side in one process.

One batch of 50 N-body systems, one torch thread, 3 warm-up and 10 timed steps per strategy
(forward, strategy loss, backward, Adam step, strategy hooks)::

    python benchmarks/step_time.py
"""

from __future__ import annotations

import time

import torch

import equirelax
from equirelax import models
from equirelax.compare import make_strategy
from equirelax.tasks import nbody_task

STRATEGIES = ("strict", "free", "augment", "cr", "rpp", "penalty", "ace-equality")


def main() -> None:
    torch.set_num_threads(1)
    task = nbody_task(train_size=50, val_size=10, test_size=0, progress=False)
    (inputs, targets) = task.train
    times = {}
    for label in STRATEGIES:
        torch.manual_seed(0)
        strategy = make_strategy(label)
        model = strategy.attach(
            equirelax.relax(models.build("egnn", task)),
            action_in=task.action_in,
            action_out=task.action_out,
            epochs=4,
        )
        optimiser = torch.optim.Adam([*model.parameters(), *strategy.parameters()], 1e-3)
        strategy.on_epoch_start(1)

        def step(model=model, strategy=strategy, optimiser=optimiser) -> None:
            x, y = strategy.transform_batch(inputs, targets)
            out = model(*x)
            loss = strategy.loss(((out - y) ** 2).mean(), model, x, out)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            strategy.after_step()

        for _ in range(3):
            step()
        started = time.perf_counter()
        for _ in range(10):
            step()
        times[label] = (time.perf_counter() - started) / 10 * 1000
    print("| strategy | ms / step | vs strict |\n|---|---|---|")
    for label, ms in times.items():
        print(f"| {label} | {ms:.1f} | {ms / times['strict']:.2f} |")


if __name__ == "__main__":
    main()
