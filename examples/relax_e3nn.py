"""Relax an e3nn network with equirelax, train it with CR, project it back and check it.

Task: a scalar c and two vectors u, v (e3nn irreps "1x0e + 2x1o", 7 features) -> the vector
tanh(u . v) u + c v ("1x1o"), exactly O(3)-equivariant. Model, built from e3nn's layers only:
o3.Linear -> o3.FullyConnectedTensorProduct (of the hidden features with themselves) -> e3nn's
Gate -> o3.Linear. ``equirelax.relax`` gives each o3.Linear and the tensor product a free branch
(a dense map of its flattened irreps features, y = f_eq(x) + level * f_free(x)); the tensor
products inside the Gate are left alone. CR (scheduled level 0 -> 1 -> 0, Lie-derivative and
norm regulariser on the free branches, which uses the actions equirelax reads off each e3nn
layer's irreps) trains it for 20 epochs of 4 batches; ``equirelax.project`` drops the free
branches and ``equirelax.assert_equivariant`` checks the result in float64 under O(3), with the
irreps given directly in place of actions.

Run: python examples/relax_e3nn.py   (a few seconds on a CPU)
"""

import torch
from e3nn import nn as e3nn_nn
from e3nn import o3
from torch import nn

import equirelax
from equirelax.strategies import CR

IRREPS_IN, IRREPS_OUT = o3.Irreps("1x0e + 2x1o"), o3.Irreps("1x1o")
EPOCHS, BATCH, LR = 20, 64, 1e-2


class GatedTensorProductNet(nn.Module):
    """o3.Linear -> FullyConnectedTensorProduct(h, h) -> Gate -> o3.Linear."""

    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.gate = e3nn_nn.Gate(
            f"{hidden}x0e", [torch.tanh], f"{hidden}x0e", [torch.sigmoid], f"{hidden}x1o"
        )
        irreps_hidden = o3.Irreps(f"{hidden}x0e + {hidden}x1o")
        self.embed = o3.Linear(IRREPS_IN, irreps_hidden)
        self.product = o3.FullyConnectedTensorProduct(
            irreps_hidden, irreps_hidden, self.gate.irreps_in
        )
        self.head = o3.Linear(self.gate.irreps_out, IRREPS_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head(self.gate(self.product(h, h)))


def make_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` samples ``[c, u, v] -> tanh(u . v) u + c v``."""
    x = torch.randn(n, IRREPS_IN.dim, generator=generator)
    c, u, v = x[:, :1], x[:, 1:4], x[:, 4:]
    return x, torch.tanh((u * v).sum(-1, keepdim=True)) * u + c * v


def train(
    model: nn.Module, strategy: CR, data: tuple[torch.Tensor, torch.Tensor], x_check: torch.Tensor
) -> nn.Module:
    """A plain Adam loop with the strategy's hooks; returns the model the strategy evaluates.
    Prints the loss, the levels and the relaxed model's equivariance error (float64, O(3)
    acting through the irreps) after the first epoch, the schedule's peak and the last."""
    x_train, y_train = data
    model = strategy.attach(model, action_in=IRREPS_IN, action_out=IRREPS_OUT)
    optimiser = torch.optim.Adam([*model.parameters(), *strategy.parameters()], lr=LR)
    shuffle = torch.Generator().manual_seed(0)
    for epoch in range(EPOCHS):
        strategy.on_epoch_start(epoch)
        for batch in torch.randperm(len(x_train), generator=shuffle).split(BATCH):
            x, y = strategy.transform_batch(x_train[batch], y_train[batch])
            out = model(x)
            loss = strategy.loss(((out - y) ** 2).mean(), model, x, out)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            strategy.after_step()
        if epoch in (0, EPOCHS // 2 - 1, EPOCHS - 1):
            levels = ", ".join(f"{level:.2f}" for level in strategy.log()["levels"])
            error = equirelax.equivariance_error(
                model, x_check, IRREPS_IN, IRREPS_OUT, dtype=torch.float64
            )
            print(f"{epoch + 1:>5}{float(loss.detach()):>8.4f}   {levels:<20}{error.mean:>10.2e}")
        strategy.on_epoch_end(epoch)
    return strategy.evaluation_model(model)


def main() -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    data, (x_val, y_val) = make_data(256, generator), make_data(128, generator)

    relaxed = equirelax.relax(GatedTensorProductNet())  # free branches exist from here on
    print("relaxed e3nn layers:", ", ".join(equirelax.relaxed_layers(relaxed)))
    print(f"{'epoch':>5}{'loss':>8}   {'levels':<20}{'relaxed model equivariance error':>10}")
    evaluated = train(relaxed, CR(epochs=EPOCHS), data, x_val)  # CR evaluates it projected
    projected = equirelax.project(evaluated)  # a plain e3nn model: no free branch left
    with torch.no_grad():
        mse = float(((projected(x_val) - y_val) ** 2).mean())
    error = equirelax.assert_equivariant(
        projected, x_val, IRREPS_IN, IRREPS_OUT, dtype=torch.float64
    )
    print(f"projected: validation MSE {mse:.4f} (targets' mean square {y_val.pow(2).mean():.4f})")
    print(f"projected: equivariance error in float64: {error}")


if __name__ == "__main__":
    main()
