"""Baseline strategies: Strict, Free, Augment, EquivariancePenalty, RPP and strategies.get."""

import math

import pytest
import torch
from torch import nn

from equirelax import (
    Relaxed,
    assert_equivariant,
    equivariance_error,
    project,
    relax,
    relaxed_layers,
)
from equirelax.actions import (
    DirectSumAction,
    ImageAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
)
from equirelax.groups import O3, SO2, CyclicGroup
from equirelax.models import EMLP
from equirelax.nn import EquivariantLinear
from equirelax.strategies import RPP, Augment, EquivariancePenalty, Free, Strict, get
from equirelax.strategies.base import levels

J = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=torch.float64)


class RotScale(nn.Module):
    """``f(x) = a x + b J x`` on planar vectors: commutes with every rotation (SO(2))."""

    def __init__(self, a: float = 1.5, b: float = -0.5) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(a, dtype=torch.float64))
        self.b = nn.Parameter(torch.tensor(b, dtype=torch.float64))

    def forward(self, x):
        return self.a * x + self.b * x @ J.T


def relaxed_so2_model(level: float = 0.3) -> nn.Module:
    """Relaxed SO(2) E-linear layer (vector + scalar features) whose free branch breaks symmetry."""
    group = SO2()
    rep = group.irrep(1) + group.irrep(0)
    torch.manual_seed(0)
    model = nn.Sequential(Relaxed(EquivariantLinear(rep, rep), level=level))
    return model.double()


def so2_actions():
    action = VectorAction(SO2())
    return action, action


def rot90(k: int) -> torch.Tensor:
    """Rotation by ``k`` quarter turns, written out by hand."""
    return torch.linalg.matrix_power(J, k % 4)


# ----------------------------------------------------------------------------- Strict, Free, get


def test_strict_attach_returns_a_projected_exactly_equivariant_model():
    model = relaxed_so2_model(level=1.0)
    rep = model[0].equivariant.representation_in
    action = RepresentationAction(rep)
    x = torch.randn(8, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    assert equivariance_error(model, x, action, action, num_samples=8).max > 1e-3
    strict = Strict().attach(model, action_in=action, action_out=action)
    assert relaxed_layers(strict) == {}
    assert relaxed_layers(model)  # the input model is left unchanged
    assert_equivariant(strict, x, action, action, atol=1e-10, num_samples=8)


def test_free_sets_levels_to_one_and_keeps_the_model():
    model = relaxed_so2_model(level=0.3)
    before = {k: v.clone() for k, v in model.state_dict().items() if not k.endswith("level")}
    attached = Free().attach(model)
    assert attached is model
    assert levels(model) == [1.0]
    for key, value in model.state_dict().items():
        if not key.endswith("level"):
            assert torch.equal(value, before[key])


def test_get_builds_by_name_and_rejects_unknown_names():
    assert isinstance(get("augment"), Augment)
    assert get("penalty", beta=0.25).beta == 0.25
    assert get("rpp", free_prior=3.0).free_prior == 3.0
    with pytest.raises(ValueError, match=r"name: expected one of .*'rpp'.*received 'nope'"):
        get("nope")


# ----------------------------------------------------------------------------- Augment


def test_augment_moves_inputs_and_targets_by_the_same_element_per_sample():
    action_in, action_out = so2_actions()
    f = RotScale()
    x = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = f(x)
    strategy = Augment()
    strategy.attach(nn.Identity(), action_in=action_in, action_out=action_out)
    x_aug, y_aug = strategy.transform_batch(x, y)
    with torch.no_grad():
        torch.testing.assert_close(f(x_aug), y_aug, atol=1e-12, rtol=0)
    # each sample is rotated (norms kept) by its own angle, not all by one
    torch.testing.assert_close(x_aug.norm(dim=1), x.norm(dim=1))
    angles = torch.atan2(x_aug[:, 1], x_aug[:, 0]) - torch.atan2(x[:, 1], x[:, 0])
    angles = torch.remainder(angles, 2 * math.pi)
    assert angles.std() > 0.5


def test_augment_images_with_invariant_labels_uses_the_seeded_generator():
    group = CyclicGroup(4)
    images = torch.randn(16, 1, 5, 5, generator=torch.Generator().manual_seed(0))
    labels = torch.arange(16)
    strategy = Augment()
    strategy.attach(nn.Identity(), action_in=ImageAction(group), generator=_seeded(7))
    moved, moved_labels = strategy.transform_batch(images, labels)
    assert torch.equal(moved_labels, labels)  # default action_out: trivial
    ks = group.sample(16, _seeded(7))
    assert len(set(ks.tolist())) > 1
    for b, k in enumerate(ks.tolist()):
        # rot90 turns (rows, cols) counter-clockwise as displayed, like the C4 image action
        torch.testing.assert_close(moved[b], torch.rot90(images[b], k, dims=(-2, -1)))


def test_augment_is_reproducible_with_a_seeded_generator_and_resumes_from_state():
    action_in, action_out = so2_actions()
    x = torch.randn(10, 2, dtype=torch.float64)
    a, b = Augment(), Augment()
    a.attach(nn.Identity(), action_in=action_in, action_out=action_out, generator=_seeded(3))
    b.attach(nn.Identity(), action_in=action_in, action_out=action_out, generator=_seeded(3))
    first = a.transform_batch(x, x)
    torch.testing.assert_close(first, b.transform_batch(x, x))
    state = a.state_dict()
    second = a.transform_batch(x, x)[0]
    assert not torch.allclose(first[0], second)  # a fresh draw each batch
    a.load_state_dict(state)
    torch.testing.assert_close(a.transform_batch(x, x)[0], second)


def test_augment_tuple_inputs_and_levels():
    group = SO2()
    action_in = DirectSumAction(VectorAction(group), TrivialAction(group))
    vectors = torch.randn(6, 2, dtype=torch.float64)
    charges = torch.randn(6, 1, dtype=torch.float64)
    targets = vectors * charges  # equivariant target
    model = relaxed_so2_model(level=0.2)
    strategy = Augment()
    assert strategy.attach(model, action_in=action_in, action_out=VectorAction(group)) is model
    assert levels(model) == [1.0]
    (v_aug, c_aug), t_aug = strategy.transform_batch((vectors, charges), targets)
    assert torch.equal(c_aug, charges)
    torch.testing.assert_close(v_aug * c_aug, t_aug)
    assert not torch.allclose(v_aug, vectors)
    Augment().attach(nn.Linear(2, 2), action_in=VectorAction(group))  # no relaxed layers: fine


def test_augment_and_penalty_need_action_in():
    for strategy in (Augment(), EquivariancePenalty()):
        with pytest.raises(ValueError, match=r"action_in: .*received None"):
            strategy.attach(nn.Linear(2, 2))
        with pytest.raises(ValueError, match="action_out: expected an action of SO"):
            strategy.attach(
                nn.Linear(2, 2),
                action_in=VectorAction(SO2()),
                action_out=VectorAction(CyclicGroup(4)),
            )


# ----------------------------------------------------------------------------- penalty


def test_penalty_equals_its_formula_on_a_hand_computed_case():
    W = torch.tensor([[1.0, 2.0], [0.0, 1.0]], dtype=torch.float64)
    model = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(W)
    action = VectorAction(CyclicGroup(4))
    x = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-1.0, 3.0]], dtype=torch.float64)
    strategy = EquivariancePenalty(beta=0.5)
    strategy.attach(model, action_in=action, action_out=action, generator=_seeded(11))
    outputs = model(x)
    task = torch.tensor(0.75, dtype=torch.float64)
    objective = strategy.loss(task, model, x, outputs)

    ks = CyclicGroup(4).sample(4, _seeded(11)).tolist()  # the elements the strategy drew
    assert any(k % 2 for k in ks)  # a quarter turn, which W does not commute with
    diffs = [(W @ rot90(k) @ x[b] - rot90(k) @ W @ x[b]).norm() for b, k in enumerate(ks)]
    scale = sum((W @ x[b]).norm() for b in range(4)) / 4
    expected = (sum(diffs) / 4) / (scale + 1e-8)
    assert float(expected) > 0.1
    torch.testing.assert_close(objective, task + 0.5 * expected)
    assert strategy.log()["equivariance_error"] == pytest.approx(float(expected))
    assert strategy.log()["beta"] == 0.5


def test_penalty_gradient_reaches_the_model():
    model = nn.Linear(2, 2, bias=False).double()
    action_in, action_out = so2_actions()
    strategy = EquivariancePenalty(beta=2.0)
    strategy.attach(model, action_in=action_in, action_out=action_out, generator=_seeded(5))
    x = torch.randn(8, 2, dtype=torch.float64, generator=_seeded(0))
    objective = strategy.loss(torch.zeros((), dtype=torch.float64), model, x, model(x))
    objective.backward()
    grad = model.weight.grad.clone()

    # the same objective written out independently (normaliser held constant)
    g = SO2().sample(8, _seeded(5), dtype=torch.float64)
    W = model.weight.detach().clone().requires_grad_(True)
    diff = torch.einsum("ij,bjk,bk->bi", W, g, x) - torch.einsum("bij,jk,bk->bi", g, W, x)
    scale = (x @ W.detach().T).norm(dim=1).mean()
    (2.0 * diff.norm(dim=1).mean() / (scale + 1e-8)).backward()
    assert grad.abs().max() > 1e-3
    torch.testing.assert_close(grad, W.grad)


def test_penalty_is_zero_for_equivariant_models_and_calls_tuple_inputs_unpacked():
    action_in, action_out = so2_actions()
    strategy = EquivariancePenalty()
    model = RotScale()
    strategy.attach(model, action_in=action_in, action_out=action_out)
    x = torch.randn(16, 2, dtype=torch.float64)
    assert float(strategy.loss(torch.zeros(()), model, x, model(x)).detach()) < 1e-12

    group = SO2()
    pair_action = DirectSumAction(VectorAction(group), TrivialAction(group))

    class Scaled(nn.Module):
        def forward(self, v, c):
            return v * c

    strategy = EquivariancePenalty()
    strategy.attach(Scaled(), action_in=pair_action, action_out=VectorAction(group))
    inputs = (x, torch.randn(16, 1, dtype=torch.float64))
    penalty = strategy.loss(torch.zeros(()), Scaled(), inputs, Scaled()(*inputs))
    assert float(penalty) < 1e-12


def test_penalty_options_state_and_levels():
    with pytest.raises(ValueError, match=r"beta: expected a finite number >= 0, received -1"):
        EquivariancePenalty(beta=-1)
    model = relaxed_so2_model(level=0.0)
    EquivariancePenalty().attach(model, action_in=VectorAction(SO2()))
    assert levels(model) == [1.0]

    action_in, action_out = so2_actions()
    model = nn.Linear(2, 2).double()
    x = torch.randn(8, 2, dtype=torch.float64)
    a = EquivariancePenalty(beta=0.3)
    a.attach(model, action_in=action_in, action_out=action_out, generator=_seeded(2))
    state = a.state_dict()
    first = a.loss(torch.zeros(()), model, x, model(x))
    b = EquivariancePenalty()
    b.attach(model, action_in=action_in, action_out=action_out)
    b.load_state_dict(state)
    assert b.beta == 0.3
    torch.testing.assert_close(b.loss(torch.zeros(()), model, x, model(x)), first)


# ----------------------------------------------------------------------------- RPP


class HandModel(nn.Module):
    """A relaxed layer (equivariant RotScale + free Linear) followed by a plain linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = Relaxed(RotScale(), nn.Linear(2, 2).double(), level=0.5)
        self.head = nn.Linear(2, 1).double()

    def forward(self, x):
        return self.head(self.layer(x))


def test_rpp_loss_equals_its_formula_on_a_hand_computed_case():
    model = HandModel()
    strategy = RPP(free_prior=0.5, equivariant_prior=0.01)
    strategy.attach(model)
    model.layer.set_level_learnable()  # a learnable level is not a prior'd parameter
    with torch.no_grad():
        model.layer.free.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model.layer.free.bias.copy_(torch.tensor([0.5, -1.0]))
        model.layer.equivariant.a.fill_(2.0)
        model.layer.equivariant.b.fill_(-1.0)
        model.head.weight.copy_(torch.tensor([[1.0, 1.0]]))
        model.head.bias.fill_(3.0)
    # the official prior: the relaxed layer's weights only (no biases, no head)
    free_sq = 1 + 4 + 9 + 16  # 30
    equivariant_sq = 4 + 1  # a and b
    task = torch.tensor(0.125, dtype=torch.float64)
    objective = strategy.loss(task, model, None, None)
    torch.testing.assert_close(
        objective, torch.tensor(0.125 + 0.5 * free_sq + 0.01 * equivariant_sq, dtype=torch.float64)
    )
    logged = strategy.log()
    assert logged["free_prior_term"] == pytest.approx(0.5 * free_sq)
    assert logged["equivariant_prior_term"] == pytest.approx(0.01 * equivariant_sq)
    assert logged["levels"] == [1.0]


def _rms(tensors) -> float:
    return math.sqrt(
        sum(float(t.detach().pow(2).sum()) for t in tensors) / sum(t.numel() for t in tensors)
    )


@pytest.mark.parametrize("parametrisation", ["basis", "projected"])
def test_rpp_starts_each_free_linear_map_at_1e_3_times_its_equivariant_matrix(parametrisation):
    """The official ``MixedLinear`` init: ``w_basic = 1e-3 * w_equiv``, ``b_basic = 1e-3 * b``
    (the raw dense matrices with ``parametrisation="projected"``, as the official's; the
    expanded equivariant ones with the basis parametrisation)."""
    group = SO2()
    rep = group.irrep(1) + group.irrep(0)
    torch.manual_seed(0)
    layer = EquivariantLinear(rep, 2 * rep, parametrisation=parametrisation).double()
    with torch.no_grad():  # a non-zero bias, so that its copy is seen
        for name, p in layer.named_parameters():
            if "bias" in name:
                p.normal_()
    model = nn.Sequential(Relaxed(layer, level=0.2))
    equivariant_before = [p.detach().clone() for p in layer.parameters()]
    RPP().attach(model)
    assert levels(model) == [1.0]
    if parametrisation == "projected":
        weight, bias = layer.weight_dense, layer.bias_dense
        assert not torch.allclose(weight, layer.weight())  # raw W0, not its projection
    else:
        weight, bias = layer.weight(), layer.bias()
    free = model[0].free.linear
    torch.testing.assert_close(free.weight, 1e-3 * weight, rtol=0, atol=0)
    torch.testing.assert_close(free.bias, 1e-3 * bias, rtol=0, atol=0)
    assert float(bias.detach().abs().max()) > 0
    for p, p0 in zip(layer.parameters(), equivariant_before, strict=True):
        assert torch.equal(p, p0)


def test_rpp_rescales_other_free_branches_to_1e_3_of_the_equivariant_scale():
    """Where the free branch is not a dense copy of an equivariant matrix (here a rotation-scale
    layer with two weights and a lazily built branch), it keeps its own init, rescaled to
    ``1e-3`` times the equivariant weights' root-mean-square."""
    model = nn.Sequential(Relaxed(RotScale(), nn.Linear(2, 2).double(), level=0.2))
    before = [p.detach().clone() for p in model[0].free.parameters()]
    RPP().attach(model)
    assert levels(model) == [1.0]
    free = model[0].free
    reference = _rms([model[0].equivariant.a, model[0].equivariant.b])
    assert _rms([free.weight]) == pytest.approx(1e-3 * reference, rel=1e-9)
    factor = float(free.weight[0, 0].detach() / before[0][0, 0])
    for p, p0 in zip(free.parameters(), before, strict=True):
        torch.testing.assert_close(p, factor * p0)

    lazy = nn.Sequential(Relaxed(nn.Identity(), level=0.0))  # dense branch built at first call
    RPP().attach(lazy)
    lazy(torch.randn(3, 4))
    weight = lazy[0].free.linear.weight
    assert 0 < weight.abs().max() <= 1e-3 / math.sqrt(4)


def test_rpp_gives_the_emlp_gates_the_official_residual_pathway_under_the_free_prior():
    """The official ``RPPGatedNonlinearity``: ``gate(x) + w_basic * swish(x_ungated)`` with
    ``w_basic`` starting at ``1e-3`` and under the free prior (its name ends in ``w_basic``)."""
    V, T0 = O3().standard_representation(), O3().trivial_representation()
    torch.manual_seed(0)
    model = EMLP(2 * T0 + 2 * V, V, hidden=4 * T0 + 2 * V, num_layers=2)
    model = relax(model, placement=RPP.placement).double()
    strategy = RPP()
    strategy.attach(model)
    gate = model.blocks[0].gate
    assert isinstance(gate, Relaxed)
    assert float(gate.level) == 1.0
    torch.testing.assert_close(
        gate.free.weight, torch.full_like(gate.free.weight, 1e-3), rtol=0, atol=0
    )
    x = torch.randn(5, gate.equivariant.representation_in.dim, dtype=torch.float64)
    s, k = gate.equivariant.scalars, gate.equivariant.gates
    ungated = torch.cat([x[:, :s], x[:, s + k :]], dim=-1)
    torch.testing.assert_close(
        gate(x), gate.equivariant(x) + 1e-3 * nn.functional.silu(ungated), rtol=0, atol=1e-15
    )
    free_term, _ = strategy.prior_terms(model)
    gates = [model.blocks[i].gate.free.weight for i in range(2)]
    linears = [layer.free.linear.weight for layer in relaxed_layers(model).values()
               if hasattr(layer.free, "linear")]  # fmt: skip
    expected = strategy.free_prior * sum(float(w.detach().pow(2).sum()) for w in gates + linears)
    assert float(free_term) == pytest.approx(expected, rel=1e-12)
    x_model = torch.randn(4, model.in_features, dtype=torch.float64)
    actions = (model.action_in, model.action_out)
    assert equivariance_error(model, x_model, *actions).max > 1e-6  # swish on vectors
    assert_equivariant(project(model), x_model, atol=1e-10)


def test_rpp_prior_gradient_is_larger_on_free_than_on_equivariant_weights():
    model = HandModel()
    strategy = RPP()
    strategy.attach(model)
    with torch.no_grad():
        model.layer.free.weight[0, 0] = 0.7
        model.layer.equivariant.a.fill_(0.7)
    strategy.loss(torch.zeros((), dtype=torch.float64), model, None, None).backward()
    free_grad = float(model.layer.free.weight.grad[0, 0])
    equivariant_grad = float(model.layer.equivariant.a.grad)
    assert free_grad == pytest.approx(2 * strategy.free_prior * 0.7)
    assert equivariant_grad == pytest.approx(2 * strategy.equivariant_prior * 0.7)
    assert free_grad > 100 * equivariant_grad > 0


def test_rpp_needs_relaxed_layers_and_checks_options():
    with pytest.raises(ValueError, match=r"model: rpp needs Relaxed layers"):
        RPP().attach(nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"free_prior: expected a finite number >= 0"):
        RPP(free_prior=float("nan"))


def test_rpp_state_round_trip():
    strategy = RPP(free_prior=0.2, equivariant_prior=1e-5)
    model = HandModel()
    strategy.attach(model)
    strategy.loss(torch.zeros(()), model, None, None)
    restored = RPP()
    restored.load_state_dict(strategy.state_dict())
    assert (restored.free_prior, restored.equivariant_prior) == (0.2, 1e-5)
    assert restored.free_init_scale == strategy.free_init_scale
    assert restored.log()["free_prior_term"] == strategy.log()["free_prior_term"]


# ----------------------------------------------------------------------------- in a loop


@pytest.mark.parametrize("name", ["augment", "penalty", "rpp"])
def test_strategies_run_in_the_training_loop_and_log_plain_floats(name):
    model = relaxed_so2_model(level=0.0)
    action = RepresentationAction(model[0].equivariant.representation_in)
    strategy = get(name)
    model = strategy.attach(model, action_in=action, action_out=action, generator=_seeded(0))
    optimiser = torch.optim.SGD(model.parameters(), lr=1e-2)
    x = torch.randn(8, 3, dtype=torch.float64, generator=_seeded(1))
    for _ in range(3):
        inputs, targets = strategy.transform_batch(x, 2 * x)
        outputs = model(inputs)
        task = nn.functional.mse_loss(outputs, targets)
        objective = strategy.loss(task, model, inputs, outputs)
        optimiser.zero_grad()
        objective.backward()
        optimiser.step()
        strategy.after_step()
    assert torch.isfinite(objective)
    logged = strategy.log()
    assert logged["levels"] == [1.0]
    assert all(isinstance(v, float) for k, v in logged.items() if k != "levels")
    assert strategy.evaluation_model(model) is model  # all three are evaluated as trained


def _seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)
