"""A small O(3) regression task and relaxed E-MLP shared by the strategy and engine tests.

Inputs are 4 vectors ``v_i`` in R^3 (flattened to 12 features), the target the vector
``sum_i |v_i| v_i + offset * e_z``: exactly O(3)-equivariant for ``offset = 0``; the constant
``offset e_z`` is a known symmetry break that only the output layer's free branch can produce.
"""

from __future__ import annotations

import torch
from torch import nn

import equirelax
from equirelax.actions import RepresentationAction
from equirelax.groups import O3
from equirelax.nn import EquivariantLinear, NormNonlinearity
from equirelax.tasks import Task

GROUP = O3()
VECTOR = GROUP.standard_representation()


def vector_target(x: torch.Tensor, offset: float = 0.0) -> torch.Tensor:
    v = x.view(-1, 4, 3)
    y = (v.norm(dim=-1, keepdim=True) * v).sum(1)
    y[:, 2] += offset
    return y


def vector_task(n_train: int = 128, n_val: int = 64, offset: float = 0.0, seed: int = 0) -> Task:
    gen = torch.Generator().manual_seed(seed)
    x_train = torch.randn(n_train, 12, generator=gen)
    x_val = torch.randn(n_val, 12, generator=gen)
    return Task(
        name="toy-vectors",
        train=(x_train, vector_target(x_train, offset)),
        val=(x_val, vector_target(x_val, offset)),
        action_in=RepresentationAction(4 * VECTOR),
        action_out=RepresentationAction(VECTOR),
    )


def vector_model(hidden: int = 8, seed: int = 0) -> nn.Module:
    """EquivariantLinear -> norm nonlinearity -> EquivariantLinear, both linears relaxed."""
    torch.manual_seed(seed)
    rep_hidden = hidden * VECTOR
    model = nn.Sequential(
        EquivariantLinear(4 * VECTOR, rep_hidden),
        NormNonlinearity(rep_hidden),
        EquivariantLinear(rep_hidden, VECTOR),
    )
    return equirelax.relax(model, select=EquivariantLinear, example_input=torch.zeros(2, 12))


def train_plain(model, strategy, task, steps: int, lr: float = 3e-3):
    """The plain loop of the strategy interface, full batch, Adam with cosine decay (so the
    weights settle and the constraint game can); returns the largest |multiplier| seen."""
    model = strategy.attach(model, action_in=task.action_in, action_out=task.action_out, epochs=1)
    opt = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    x, y = task.train
    largest = 0.0
    strategy.on_epoch_start(0)
    for _ in range(steps):
        out = model(x)
        objective = strategy.loss(((out - y) ** 2).mean(), model, x, out)
        opt.zero_grad()
        objective.backward()
        opt.step()
        strategy.after_step()
        schedule.step()
        largest = max(largest, max(abs(v) for v in strategy.log().get("multipliers", [0.0])))
    strategy.on_epoch_end(0)
    return model, largest


class InterruptError(Exception):
    """Raised by :func:`interrupt_at`: stands in for a killed job."""


def interrupt_at(strategy, epoch: int):
    """Make ``strategy`` raise :class:`InterruptError` at the start of ``epoch``."""
    start = strategy.on_epoch_start

    def on_epoch_start(current: int) -> None:
        if current == epoch:
            raise InterruptError
        start(current)

    strategy.on_epoch_start = on_epoch_start
    return strategy
