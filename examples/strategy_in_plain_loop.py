"""A relaxation strategy in a plain PyTorch training loop: the strategy's lines are marked.

Task: 4 vectors v_i in R^3 (flattened to 12 features) -> sum_i |v_i| v_i, exactly
O(3)-equivariant. Model: EquivariantLinear -> NormNonlinearity -> EquivariantLinear with both
linears relaxed (y = f_eq(x) + level * f_free(x)). The same model (same seed) is trained with
Strict, CR and ACE in one loop (Adam, lr 3e-3, cosine decay, 150 epochs of 4 batches). The
first table shows how each strategy moves the levels of the two relaxed layers; the second gives
the validation MSE and equivariance error of the model each strategy evaluates (projected,
level := 0, for all three) and the final levels. CR appears twice: with its default regulariser
weight (0.01) it ends above Strict on this task, with weight 10 it matches it.

Run: python examples/strategy_in_plain_loop.py   (about 10 s on 2 CPU cores)
"""

import torch
from torch import nn

import equirelax
from equirelax.actions import RepresentationAction
from equirelax.groups import O3
from equirelax.nn import EquivariantLinear, NormNonlinearity
from equirelax.strategies import ACE, CR, Strict

V = O3().standard_representation()  # the vector representation of O(3)
ACTION_IN, ACTION_OUT = RepresentationAction(4 * V), RepresentationAction(V)
EPOCHS, BATCH, LR = 150, 128, 3e-3


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 12, generator=generator)
    v = x.view(n, 4, 3)
    return x, (v.norm(dim=-1, keepdim=True) * v).sum(1)


def make_model(hidden: int = 8) -> nn.Module:
    torch.manual_seed(0)  # every strategy starts from the same weights
    model = nn.Sequential(
        EquivariantLinear(4 * V, hidden * V),
        NormNonlinearity(hidden * V),
        EquivariantLinear(hidden * V, V),
    )
    return equirelax.relax(model, select=EquivariantLinear, example_input=torch.zeros(2, 12))


def train(model: nn.Module, strategy, train_data, epochs: int = EPOCHS):
    """The plain loop; returns the trained model and the levels after every epoch."""
    x_train, y_train = train_data
    model = strategy.attach(model, action_in=ACTION_IN, action_out=ACTION_OUT)  # strategy
    params = [*model.parameters(), *strategy.parameters()]  # strategy: + its own parameters
    optimiser = torch.optim.Adam(params, lr=LR)
    steps = epochs * -(-len(x_train) // BATCH)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    shuffle, history = torch.Generator().manual_seed(0), []
    for epoch in range(epochs):
        strategy.on_epoch_start(epoch)  # strategy (CR sets its scheduled level here)
        for batch in torch.randperm(len(x_train), generator=shuffle).split(BATCH):
            x, y = strategy.transform_batch(x_train[batch], y_train[batch])  # strategy
            out = model(x)
            loss = strategy.loss(((out - y) ** 2).mean(), model, x, out)  # strategy
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            strategy.after_step()  # strategy (ACE's level and multiplier steps)
            schedule.step()
        strategy.on_epoch_end(epoch)  # strategy
        history.append(strategy.log().get("levels", []))  # strategy: levels, multipliers...
    return model, history


def main() -> None:
    data = torch.Generator().manual_seed(0)
    train_data, (x_val, y_val) = make_data(512, data), make_data(256, data)
    strategies = {
        "strict": Strict(),
        "cr": CR(epochs=EPOCHS),
        "cr-weight10": CR(epochs=EPOCHS, weight=10.0),
        # short run: the gradient level rule with a fast nuPI dual on bounded branches (see the
        # ACE docstring)
        "ace": ACE(
            level_rule="gradient",
            norm_bound="spectral",
            dual_lr=0.1,
            dual_optimizer="nupi",
            kp=10.0,
            level_lr=0.1,
        ),
    }
    shown = [0, 29, 59, 89, 119, EPOCHS - 1]  # epochs whose levels are printed
    print(f"{'levels after epoch':<20}" + "".join(f"{e + 1:>14}" for e in shown))
    rows = []
    for name, strategy in strategies.items():
        model, history = train(make_model(), strategy, train_data)
        final = strategy.evaluation_model(model)  # strategy: projected for strict, CR, ACE
        with torch.no_grad():
            mse = float(((final(x_val) - y_val) ** 2).mean())
        error = equirelax.equivariance_error(
            final, x_val[:64], ACTION_IN, ACTION_OUT, dtype=torch.float64
        )
        rows.append((name, mse, error.mean, history[-1]))
        cells = ["/".join(f"{v:.2f}" for v in history[e]) or "-" for e in shown]
        print(f"{name:<20}" + "".join(f"{c:>14}" for c in cells))

    print(f"\nmean square of the validation targets: {float((y_val**2).mean()):.2f}")
    print(f"{'strategy':<16}{'val MSE':>9}{'equivariance error':>20}   final levels")
    for name, mse, error, levels in rows:
        print(f"{name:<16}{mse:>9.3f}{error:>20.2e}   {[float(f'{v:.1e}') for v in levels]}")


if __name__ == "__main__":
    main()
