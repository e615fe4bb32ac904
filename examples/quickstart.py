"""Relax an EGNN built from equirelax blocks, measure its equivariance, project it back.

Run: python examples/quickstart.py
"""

import torch

import equirelax
from equirelax.actions import DirectSumAction, PointAction, TrivialAction
from equirelax.groups import O3, Euclidean
from equirelax.nn import EGNN


def main() -> None:
    torch.manual_seed(0)
    e3 = Euclidean(O3())
    action = DirectSumAction(TrivialAction(e3), PointAction(e3))  # h invariant, x moved
    h, x = torch.randn(32, 5, 16), torch.randn(32, 5, 3)

    model = EGNN(16, 32, num_layers=4)
    relaxed = equirelax.relax(model, level=1.0, example_input=(h, x))
    projected = equirelax.project(relaxed)

    rows = [
        ("EGNN (strict)", model),
        ("relaxed, level 1.0", relaxed),
        ("projected (level := 0)", projected),
    ]
    print(f"{'model':<26}{'relaxed layers':>16}{'equivariance error (mean / max)':>36}")
    for name, module in rows:
        err = equirelax.equivariance_error(module, (h, x), action, action, dtype=torch.float64)
        layers = len(equirelax.relaxed_layers(module))
        print(f"{name:<26}{layers:>16}{err.mean:>20.2e} / {err.max:.2e}")


if __name__ == "__main__":
    main()
