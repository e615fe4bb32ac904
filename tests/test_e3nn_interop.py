"""e3nn interoperability (issue 21): relax() gives e3nn's o3.Linear and
o3.FullyConnectedTensorProduct free branches from their irreps, the relaxed and projected e3nn
models behave as relaxed and equivariant models must, and the metrics take e3nn irreps in place
of actions with the numbers of the equivalent equirelax action and of e3nn's D_from_matrix."""

import runpy
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from torch import nn

from _tolerances import ATOL, F64
from equirelax import (
    assert_equivariant,
    equivariance_error,
    layer_actions,
    project,
    register_free_branch,
    relax,
    relaxed_layers,
)
from equirelax import relaxed as relaxed_module
from equirelax.actions import (
    DirectSumAction,
    RepresentationAction,
    VectorAction,
    as_action,
    irreps_action,
)
from equirelax.free_branches import DenseFreeBranch, E3nnFreeBranch
from equirelax.groups import O3, SO2, SO3
from equirelax.metrics import invariance_error, layer_equivariance_errors, lie_derivative
from equirelax.strategies.base import set_levels

e3nn_nn = pytest.importorskip("e3nn.nn")
o3 = pytest.importorskip("e3nn.o3")

IRREPS_IN, IRREPS_HIDDEN, IRREPS_OUT = "1x0e + 2x1o", "4x0e + 4x1o", "1x0e + 1x1o"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BROKEN = 1e-3  # a relaxed model with default-initialised free branches at level 0.5 errs far more


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """e3nn builds its coefficient buffers in the default dtype."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class E3nnNet(nn.Module):
    """o3.Linear -> FullyConnectedTensorProduct(h, h) -> Gate -> o3.Linear, e3nn only."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = e3nn_nn.Gate("4x0e", [torch.tanh], "4x0e", [torch.sigmoid], "4x1o")
        self.embed = o3.Linear(IRREPS_IN, IRREPS_HIDDEN)
        self.product = o3.FullyConnectedTensorProduct(
            IRREPS_HIDDEN, IRREPS_HIDDEN, self.gate.irreps_in
        )
        self.head = o3.Linear(self.gate.irreps_out, IRREPS_OUT)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        return self.head(self.gate(self.product(h, h)))


def e3nn_net(dtype: torch.dtype = F64) -> nn.Module:
    torch.manual_seed(0)
    with default_dtype(dtype):
        return E3nnNet()


def inputs(dtype: torch.dtype = F64, batch: int = 8) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randn(batch, o3.Irreps(IRREPS_IN).dim, generator=generator, dtype=F64).to(dtype)


def o3_elements(k: int = 12) -> torch.Tensor:
    """Haar samples of O(3), float64, with proper and improper elements."""
    g = O3().sample(k, torch.Generator().manual_seed(2), dtype=F64)
    assert {1.0, -1.0} <= set(torch.linalg.det(g).round().tolist())
    return g


# ------------------------------------------------------------------------ relax and project


def test_relax_wraps_e3nns_linear_and_tensor_product_and_leaves_the_gate_alone() -> None:
    relaxed = relax(e3nn_net())
    layers = relaxed_layers(relaxed)
    assert list(layers) == ["embed", "product", "head"]  # not the Gate's elementwise products
    irreps_in, hidden = o3.Irreps(IRREPS_IN), o3.Irreps(IRREPS_HIDDEN)
    gate_in, gate_out = relaxed.gate.irreps_in, relaxed.gate.irreps_out
    expected = {
        "embed": ([irreps_in.dim], hidden.dim),
        "product": ([hidden.dim, hidden.dim], gate_in.dim),
        "head": ([gate_out.dim], o3.Irreps(IRREPS_OUT).dim),
    }
    for name, layer in layers.items():
        assert isinstance(layer.free, E3nnFreeBranch)  # built at relax, not lazily
        sizes, out = expected[name]
        assert (layer.free.sizes, layer.free.linear.out_features) == (sizes, out)
        assert layer.free.linear.weight.dtype == F64  # follows the e3nn layer's dtype


def test_relaxed_e3nn_model_is_exact_at_level_zero_and_not_above(dtype: torch.dtype) -> None:
    model, x = e3nn_net(dtype), inputs(dtype)
    relaxed = relax(model, level=0.0)
    with torch.no_grad():
        torch.testing.assert_close(relaxed(x), model(x), atol=0, rtol=0)
    assert_equivariant(relaxed, x, IRREPS_IN, IRREPS_OUT, atol=ATOL[dtype], elements=o3_elements())
    for name, err in layer_equivariance_errors(relaxed, x, elements=o3_elements()).items():
        assert err.max_absolute <= ATOL[dtype], name  # every layer, by its registered actions
    with torch.no_grad():
        set_levels(relaxed, 0.5)
    err = equivariance_error(relaxed, x, IRREPS_IN, IRREPS_OUT, elements=o3_elements())
    assert err.mean > BROKEN
    per_layer = layer_equivariance_errors(relaxed, x, elements=o3_elements())
    assert set(per_layer) == {"embed", "product", "head"}
    assert all(e.mean > BROKEN for e in per_layer.values()), per_layer  # every branch acts


def test_projected_e3nn_model_is_plain_e3nn_and_equivariant_in_float64() -> None:
    relaxed, x = relax(e3nn_net(), level=1.0), inputs()
    assert equivariance_error(relaxed, x, IRREPS_IN, IRREPS_OUT).mean > BROKEN
    projected = project(relaxed)
    assert not relaxed_layers(projected)
    assert isinstance(projected.product, o3.FullyConnectedTensorProduct)
    assert isinstance(projected.embed, o3.Linear)
    err = assert_equivariant(
        projected, x, IRREPS_IN, IRREPS_OUT, atol=ATOL[F64], elements=o3_elements()
    )
    assert err.max < 1e-12
    with torch.no_grad():
        set_levels(relaxed, 0.0)
        torch.testing.assert_close(projected(x), relaxed(x), atol=0, rtol=0)


def test_free_branches_train_with_an_optimiser_built_right_after_relax() -> None:
    relaxed, x = relax(e3nn_net(), level=1.0), inputs()
    optimiser = torch.optim.SGD(relaxed.parameters(), lr=0.1)
    free = {
        name: p.detach().clone() for name, p in relaxed.named_parameters() if ".free." in f".{name}"
    }
    assert len(free) == 6  # weight and bias of three free branches
    loss = relaxed(x).pow(2).sum()
    optimiser.zero_grad()
    loss.backward()
    optimiser.step()
    params = dict(relaxed.named_parameters())
    for name, before in free.items():
        assert not torch.equal(params[name].detach(), before), name


def test_external_weights_go_to_the_equivariant_map_only() -> None:
    with default_dtype(F64):
        tp = o3.FullyConnectedTensorProduct(
            "2x0e + 1x1o", "1x1o", "1x0e + 1x1e", shared_weights=False, internal_weights=False
        )
    relaxed = relax(nn.Sequential(tp), level=0.5)[0]
    x, y = torch.randn(5, 5, dtype=F64), torch.randn(5, 3, dtype=F64)
    weight = torch.randn(5, tp.weight_numel, dtype=F64)
    with torch.no_grad():
        expected = tp(x, y, weight) + 0.5 * relaxed.free(x, y)
        torch.testing.assert_close(relaxed(x, y, weight), expected, atol=0, rtol=0)
        torch.testing.assert_close(relaxed(x, y, weight=weight), expected, atol=0, rtol=0)


def test_a_users_registration_for_an_e3nn_type_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """Before e3nn's entries are added (a fresh registry) and after."""
    factories = {
        t: f for t, f in relaxed_module._FACTORIES.items() if not t.__module__.startswith("e3nn")
    }
    monkeypatch.setattr(relaxed_module, "_FACTORIES", factories)
    monkeypatch.setattr(relaxed_module, "_ACTIONS", {})
    monkeypatch.setattr(relaxed_module, "_INTEROP_LOADED", set())

    def mine(layer: nn.Module) -> nn.Module:
        return DenseFreeBranch((layer.irreps_in.dim,), (layer.irreps_out.dim,))

    register_free_branch(o3.Linear, mine)
    relaxed = relax(e3nn_net())
    assert isinstance(relaxed.embed.free, DenseFreeBranch)
    assert isinstance(relaxed.product.free, E3nnFreeBranch)  # e3nn's entries, added lazily
    assert isinstance(relaxed.embed.action_out, RepresentationAction)  # actions still added
    register_free_branch(o3.Linear, lambda layer: nn.Identity())
    assert isinstance(relax(e3nn_net()).embed.free, nn.Identity)


def test_import_equirelax_and_relax_without_e3nn_layers_do_not_import_e3nn() -> None:
    code = (
        "import sys, torch, equirelax\n"
        "model = torch.nn.Sequential(torch.nn.Linear(3, 3))\n"
        "model = equirelax.relax(model, select=torch.nn.Linear)\n"
        "equirelax.layer_actions(model[0]); equirelax.project(model)\n"
        "print('e3nn' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------------- irreps as actions


# e3nn's D_from_matrix and equirelax's float64 matrices, on float64 elements: 8.8e-15 measured.
E3NN_ACCURACY = 1e-12


def _d_from_matrix(irreps: object, g: torch.Tensor) -> torch.Tensor:
    """e3nn's own ``irreps.D_from_matrix`` for each element of ``g``, float64."""
    with default_dtype(F64):
        return torch.stack([o3.Irreps(irreps).D_from_matrix(r) for r in g])


def test_the_irreps_action_is_e3nns_d_from_matrix_in_float64() -> None:
    irreps = o3.Irreps("2x0e + 1x0o + 1x1o + 1x1e + 1x2e")
    g, x = o3_elements(), torch.randn(12, irreps.dim, dtype=F64)
    expected = torch.einsum("bij,bj->bi", _d_from_matrix(irreps, g), x)
    for action in (irreps_action(irreps), irreps_action(str(irreps)), as_action(irreps)):
        torch.testing.assert_close(action(g, x), expected, atol=E3NN_ACCURACY, rtol=0)
    assert irreps_action(irreps) is irreps_action(str(irreps))  # cached
    action, h = irreps_action(irreps), o3_elements().flip(0)
    torch.testing.assert_close(  # a homomorphism, in float64
        action(O3().compose(g, h), x), action(g, action(h, x)), atol=1e-12, rtol=0
    )
    rotations = SO3().sample(4, torch.Generator().manual_seed(3), dtype=F64)
    torch.testing.assert_close(
        irreps_action(irreps, SO3())(rotations, x[:4]),
        torch.einsum("bij,bj->bi", _d_from_matrix(irreps, rotations), x[:4]),
        atol=E3NN_ACCURACY,
        rtol=0,
    )


def test_metrics_with_irreps_match_the_equivalent_action_and_a_direct_computation() -> None:
    model, x, g = relax(e3nn_net(), level=0.3), inputs(), o3_elements()
    action_in = RepresentationAction(O3().irreps(IRREPS_IN))
    action_out = RepresentationAction(O3().irreps(IRREPS_OUT))
    with_irreps = equivariance_error(model, x, o3.Irreps(IRREPS_IN), IRREPS_OUT, elements=g)
    assert with_irreps == equivariance_error(model, x, action_in, action_out, elements=g)
    # the definition, with e3nn's own matrices
    d_in, d_out = _d_from_matrix(IRREPS_IN, g), _d_from_matrix(IRREPS_OUT, g)
    with torch.no_grad():
        moved = model(torch.einsum("kij,bj->kbi", d_in, x).flatten(0, 1)).unflatten(0, (12, -1))
        diff = (moved - torch.einsum("kij,bj->kbi", d_out, model(x))).norm(dim=-1)
        scale = float(model(x).norm(dim=-1).mean())
    assert with_irreps.mean == pytest.approx(float(diff.mean()) / scale, rel=E3NN_ACCURACY)
    assert with_irreps.max == pytest.approx(float(diff.max()) / scale, rel=E3NN_ACCURACY)
    # the other metrics
    assert invariance_error(model, x, IRREPS_IN, elements=g) == invariance_error(
        model, x, action_in, elements=g
    )
    torch.testing.assert_close(
        lie_derivative(model, x, IRREPS_IN, IRREPS_OUT),
        lie_derivative(model, x, action_in, action_out),
        atol=0,
        rtol=0,
    )
    named = layer_equivariance_errors(model, x, {"head": ("4x0e + 4x1o", IRREPS_OUT)}, elements=g)
    head_actions = (RepresentationAction(O3().irreps("4x0e + 4x1o")), action_out)
    assert named == layer_equivariance_errors(model, x, {"head": head_actions}, elements=g)


def test_tuple_irreps_act_on_a_tensor_products_inputs() -> None:
    with default_dtype(F64):
        tp = o3.FullyConnectedTensorProduct("2x0e + 1x1o", "1x1o", "1x0e + 1x1e")
    x, y, g = torch.randn(6, 5, dtype=F64), torch.randn(6, 3, dtype=F64), o3_elements()
    by_irreps = assert_equivariant(tp, (x, y), ("2x0e + 1x1o", "1x1o"), "1x0e + 1x1e", elements=g)
    action_in = DirectSumAction(
        RepresentationAction(O3().irreps("2x0e + 1x1o")), RepresentationAction(O3().irreps("1x1o"))
    )
    by_action = assert_equivariant(
        tp, (x, y), action_in, RepresentationAction(O3().irreps("1x0e + 1x1e")), elements=g
    )
    assert by_irreps == by_action
    assert assert_equivariant(tp, (x, y), elements=g) == by_action  # read off the e3nn layer
    wrong = equivariance_error(tp, (x, y), ("2x0e + 1x1o", "1x1o"), "1x0e + 1x1o", elements=g)
    assert wrong.mean > 0.1  # 1e output checked as 1o: the improper elements tell them apart


def test_e3nn_layers_and_their_relaxed_layers_carry_their_actions() -> None:
    relaxed, x = relax(e3nn_net(), level=1.0), inputs()
    assert layer_actions(relaxed.embed) == (
        irreps_action(IRREPS_IN),  # O(3) through D_from_matrix (cached: the same object)
        irreps_action(IRREPS_HIDDEN),
    )
    action_in, action_out = layer_actions(relaxed.product)
    assert isinstance(action_in, DirectSumAction)
    assert len(action_in.actions) == 2
    assert layer_actions(relaxed.product.equivariant)[1] is action_out
    assert layer_actions(relaxed.gate) == (None, None)  # no registration for the Gate
    with pytest.raises(AssertionError, match="not equivariant"):
        assert_equivariant(relaxed.embed, x)  # level 1: the free branch breaks it
    assert_equivariant(relaxed.embed.equivariant, x)


def test_bad_irreps_and_groups_are_named() -> None:
    with pytest.raises(
        TypeError, match=r"action_in: expected an Action, e3nn irreps .*'rotations'"
    ):
        equivariance_error(lambda v: v, torch.zeros(2, 3), "rotations")
    with pytest.raises(TypeError, match=r"action_out\[1\]: expected an Action"):
        as_action(("1x1o", 3), "action_out")
    with pytest.raises(TypeError, match="group: expected SO3"):
        irreps_action("1x1o", SO2())
    with pytest.raises(ValueError, match="action_out: expected an action of SO"):
        equivariance_error(lambda v: v, torch.zeros(2, 3), VectorAction(SO3()), "1x1o")


def test_the_example_runs_and_ends_equivariant(capsys: pytest.CaptureFixture[str]) -> None:
    """examples/relax_e3nn.py as a script: it asserts its projected model's equivariance."""
    runpy.run_path(str(EXAMPLES / "relax_e3nn.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "relaxed e3nn layers: embed, product, head" in out
    assert "projected: equivariance error in float64" in out
