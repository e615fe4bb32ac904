"""Relaxation sites (SPEC 2.7): every built-in model declares where relaxation goes, ``relax``
relaxes exactly those sites (hidden / update maps; never the embedding, the head or the maps
inside a bilinear product), ``select=`` and ``placement=`` override it, each strategy asks for
its method's placement, and bad placements are errors that name them."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import equirelax
from equirelax.experiments.compare import make_strategy
from equirelax.free_branches import EGNNFreeBranch, GatedResidualFreeBranch
from equirelax.groups import O3
from equirelax.models import EMLP, NBodyEGNN
from equirelax.models.segnn import NBodySEGNN
from equirelax.nn import EquivariantLinear, GatedNonlinearity
from equirelax.strategies import RPP, STRATEGIES

V, T0 = O3().standard_representation(), O3().trivial_representation()


def test_relax_relaxes_exactly_each_built_in_models_declared_hidden_sites():
    egnn = equirelax.relax(NBodyEGNN(hidden_features=8, num_layers=3))
    assert list(equirelax.relaxed_layers(egnn)) == ["layers.0", "layers.1", "layers.2"]
    segnn = equirelax.relax(NBodySEGNN("4x0e + 2x1o", num_layers=2))
    assert list(equirelax.relaxed_layers(segnn)) == [
        "layers.0.update_1", "layers.0.update_2", "layers.1.update_1", "layers.1.update_2",
    ]  # fmt: skip
    emlp = equirelax.relax(EMLP(5 * T0 + 5 * V, V.tensor(V), num_layers=3))
    assert list(equirelax.relaxed_layers(emlp)) == [f"blocks.{i}.linear" for i in range(3)]
    for model in (egnn, segnn, emlp):
        assert list(equirelax.relaxed_layers(model)) == equirelax.relaxation_sites(
            equirelax.project(model)
        )


def test_linear_placement_adds_every_linear_map_and_rpp_asks_for_it():
    emlp = EMLP(5 * T0 + 5 * V, V.tensor(V), num_layers=2)
    assert RPP.placement == "linear"
    assert {name: cls.placement for name, cls in STRATEGIES.items() if name != "rpp"} == {
        name: "hidden" for name in STRATEGIES if name != "rpp"
    }
    relaxed = equirelax.relax(emlp, placement=RPP.placement)
    assert list(equirelax.relaxed_layers(relaxed)) == [
        "blocks.0.gate", "blocks.0.linear", "blocks.1.gate", "blocks.1.linear", "head",
    ]  # fmt: skip
    everything = equirelax.relax(emlp, placement="all")
    assert "blocks.0.bilinear" in "".join(equirelax.relaxed_layers(everything))


def test_select_overrides_the_declared_sites():
    model = NBodyEGNN(hidden_features=8, num_layers=2)
    relaxed = equirelax.relax(model, lambda name, _: name == "layers.1")
    assert list(equirelax.relaxed_layers(relaxed)) == ["layers.1"]


def test_a_model_without_declared_sites_relaxes_every_registered_layer():
    model = nn.Sequential(EquivariantLinear(4 * V, 2 * V), nn.Tanh(), EquivariantLinear(2 * V, V))
    assert equirelax.relaxation_sites(model) is None
    assert list(equirelax.relaxed_layers(equirelax.relax(model))) == ["0", "2"]


def test_a_gate_of_a_model_without_declared_sites_is_relaxed_by_rpps_placement_only():
    gate = GatedNonlinearity(2, V)
    model = nn.Sequential(EquivariantLinear(V, gate.representation_in), gate, EquivariantLinear(
        gate.representation_out, V))  # fmt: skip
    assert list(equirelax.relaxed_layers(equirelax.relax(model))) == ["0", "2"]
    for placement in ("linear", "all"):
        relaxed = equirelax.relax(model, placement=placement)
        assert list(equirelax.relaxed_layers(relaxed)) == ["0", "1", "2"]
        assert isinstance(relaxed[1].free, GatedResidualFreeBranch)


def test_bad_placements_are_errors_that_name_them():
    model = NBodyEGNN(hidden_features=8, num_layers=2)
    with pytest.raises(ValueError, match=r"placement: expected one of .*received 'everywhere'"):
        equirelax.relax(model, placement="everywhere")

    class Declares(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = EquivariantLinear(V, V)

        def relaxation_sites(self, placement: str) -> list[str]:
            return ["linear", "missing"]

    with pytest.raises(ValueError, match=r"placement: .*names \['missing'\]"):
        equirelax.relax(Declares())
    with pytest.raises(ValueError, match=r"select: .* matched no layer"):
        equirelax.relax(model, nn.Conv3d)


def test_egnn_free_branch_sees_centroid_relative_coordinates():
    """The free branch breaks rotations but keeps the data's exact translation symmetry."""
    torch.manual_seed(0)
    branch = EGNNFreeBranch(4, 4, 8, velocity=True)
    h, x, v = torch.randn(2, 5, 4), torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    shift = torch.randn(2, 1, 3)
    for got, want in zip(branch(h, x + shift, v), branch(h, x, v), strict=True):
        torch.testing.assert_close(got, want)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    moved = x.clone()
    moved[1, 3:] += 100.0  # padded nodes do not move the centroid
    masked = branch(h, moved + shift, v, mask=mask), branch(h, x, v, mask=mask)
    for got, want in zip(*masked, strict=True):
        torch.testing.assert_close(got[mask], want[mask])
    raw = EGNNFreeBranch(4, 4, 8, velocity=True, centred=False)
    assert not torch.allclose(raw(h, x + shift, v)[1], raw(h, x, v)[1])


def test_an_option_that_changes_a_labelled_preset_is_refused():
    refused = "strategy 'ace-equality': the label means mode='equality'"
    with pytest.raises(ValueError, match=refused):
        make_strategy("ace-equality", mode="resilient")
    assert make_strategy("ace-equality", mode="equality").mode == "equality"
    assert make_strategy("ace-resilient", rho=2.0).rho == 2.0
