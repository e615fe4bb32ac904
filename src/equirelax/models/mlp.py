"""A plain multilayer perceptron for particle systems: the baseline with no symmetry."""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from equirelax._checks import check_positive_int
from equirelax.models.particles import check_particle_inputs

__all__ = ["NBodyMLP"]


class NBodyMLP(nn.Module):
    r"""``\hat x = x + \mathrm{MLP}([x, v, q])`` on the flattened system of ``N`` particles.

    No symmetry at all: not equivariant to rotations, translations or permutations. It has no
    equivariant layers to relax, so the strategies that move levels (CR, RPP, ACE) refuse it;
    ``free``, ``augment`` and ``penalty`` train it as it is.

    Parameters
    ----------
    num_particles:
        ``N``, fixed by the flattening.
    hidden_features, num_layers:
        Width and number of hidden layers (SiLU activations).
    """

    def __init__(
        self, num_particles: int = 5, hidden_features: int = 128, num_layers: int = 3
    ) -> None:
        super().__init__()
        self.num_particles = check_positive_int("num_particles", num_particles)
        hidden = check_positive_int("hidden_features", hidden_features)
        depth = check_positive_int("num_layers", num_layers)
        widths = [7 * num_particles] + [hidden] * depth
        layers: list[nn.Module] = []
        for a, b in itertools.pairwise(widths):
            layers += [nn.Linear(a, b), nn.SiLU()]
        layers.append(nn.Linear(hidden, 3 * num_particles))
        self.mlp = nn.Sequential(*layers)

    def forward(self, positions: Tensor, velocities: Tensor, charges: Tensor) -> Tensor:
        positions, velocities, charges = check_particle_inputs(positions, velocities, charges)
        if positions.shape[1] != self.num_particles:
            raise ValueError(
                f"positions: expected {self.num_particles} particles, "
                f"received shape {tuple(positions.shape)}"
            )
        features = torch.cat([positions, velocities, charges], dim=-1).flatten(1)
        return positions + self.mlp(features).view_as(positions)
