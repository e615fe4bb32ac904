"""ACE in a PyTorch Lightning Trainer, then projection to an exactly equivariant model.

Task: 4 vectors v_i in R^3 (flattened to 12 features) -> sum_i |v_i| v_i, exactly
O(3)-equivariant. Model: EquivariantLinear -> NormNonlinearity -> EquivariantLinear with both
linears relaxed (y = f_eq(x) + level * f_free(x)). `RelaxedLightningModule` makes every call of
the strategy (attach, the Lagrangian, ACE's dual step after each optimiser step, its state in
the checkpoints); the Trainer is an ordinary one. ACE's equality mode drives every level to 0,
and `equirelax.project` then removes the free branches: the exported model is exactly
equivariant. Short run: ACE's gradient level rule with a fast nuPI dual on bounded branches, as
in examples/strategy_in_plain_loop.py (the ACE docstring says why the class defaults need the
papers' long runs).

Needs the `lightning` extra (pip install "equirelax[lightning]").
Run: python examples/lightning_ace.py   (about 12 s on 2 busy CPU cores, 5 s of it importing)
"""

import lightning
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import equirelax
from equirelax.actions import RepresentationAction
from equirelax.groups import O3
from equirelax.integrations.lightning import RelaxedLightningModule
from equirelax.nn import EquivariantLinear, NormNonlinearity
from equirelax.strategies import ACE

V = O3().standard_representation()  # the vector representation of O(3)
ACTION_IN, ACTION_OUT = RepresentationAction(4 * V), RepresentationAction(V)


def make_data(n: int, generator: torch.Generator) -> TensorDataset:
    x = torch.randn(n, 12, generator=generator)
    v = x.view(n, 4, 3)
    return TensorDataset(x, (v.norm(dim=-1, keepdim=True) * v).sum(1))


def make_model(hidden: int = 8) -> nn.Module:
    model = nn.Sequential(
        EquivariantLinear(4 * V, hidden * V),
        NormNonlinearity(hidden * V),
        EquivariantLinear(hidden * V, V),
    )
    return equirelax.relax(model, select=EquivariantLinear, example_input=torch.zeros(2, 12))


def main() -> None:
    torch.set_num_threads(1)  # a tiny model: one intra-op thread is faster on a shared CPU
    lightning.seed_everything(0, verbose=False)
    data = torch.Generator().manual_seed(0)
    train, val = make_data(512, data), make_data(256, data)
    strategy = ACE(
        level_rule="gradient",
        norm_bound="spectral",
        dual_lr=0.1,
        dual_optimizer="nupi",
        kp=10.0,
        level_lr=0.1,
    )
    module = RelaxedLightningModule(
        make_model(),
        strategy,
        nn.functional.mse_loss,
        action_in=ACTION_IN,
        action_out=ACTION_OUT,
        lr=3e-3,
    )
    trainer = lightning.Trainer(
        max_epochs=100,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        check_val_every_n_epoch=25,
    )
    trainer.fit(module, DataLoader(train, batch_size=128), DataLoader(val, batch_size=256))

    log = strategy.log()
    print(f"levels {[f'{v:.1e}' for v in log['levels']]}")
    print(f"multipliers {[f'{v:.2f}' for v in log['multipliers']]}")
    x_val, y_val = val.tensors
    projected = equirelax.project(module.model)  # no free branch left
    print(f"{'model':<12}{'relaxed layers':>16}{'val MSE':>10}{'equivariance error':>20}")
    for name, model in (("trained", module.model), ("projected", projected)):
        with torch.no_grad():
            mse = float(nn.functional.mse_loss(model(x_val), y_val))
        error = equirelax.equivariance_error(
            model, x_val[:64], ACTION_IN, ACTION_OUT, dtype=torch.float64
        )
        layers = len(equirelax.relaxed_layers(model))
        print(f"{name:<12}{layers:>16}{mse:>10.3f}{error.mean:>20.2e}")
    val_loss = float(trainer.callback_metrics["val_loss"])
    print(f"Lightning's val_loss (of the model ACE evaluates, the projected one): {val_loss:.3f}")


if __name__ == "__main__":
    main()
