"""CR (scheduled constraint relaxation, arXiv 2408.13242): schedule, regulariser, training."""

import copy
import io
import math

import pytest
import torch
from torch import nn

from equirelax import Relaxed, assert_equivariant, relax, relaxed_layers
from equirelax.actions import (
    DirectSumAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
    increment_action,
)
from equirelax.free_branches import (
    DenseFreeBranch,
    EGNNFreeBranch,
    SteerableFreeBranch,
    VectorNeuronFreeBranch,
)
from equirelax.groups import O3, SO2, SO3, CyclicGroup, DihedralGroup, Euclidean
from equirelax.metrics import lie_derivative
from equirelax.nn import EGNNLayer, EquivariantLinear, GatedNonlinearity, VNLinear
from equirelax.strategies import CR, get
from equirelax.strategies.cr import free_branch_terms

F64 = torch.float64


def expected_theta(schedule, epoch, epochs):
    """The schedules of SPEC 2.1, written out independently of the implementation."""
    if schedule == "triangular":
        return 2 * epoch / epochs if epoch <= epochs / 2 else 2 - 2 * epoch / epochs
    return 1 - epoch / epochs


def two_layer_model(group=None):
    """EquivariantLinear -> EquivariantLinear under SO(3) irreps, relaxed, in float64."""
    group = group or SO3()
    model = nn.Sequential(
        EquivariantLinear(group.irreps("2x0e + 1x1o"), group.irreps("1x0e + 2x1o")),
        EquivariantLinear(group.irreps("1x0e + 2x1o"), group.irreps("1x0e + 1x1o")),
    )
    return relax(model).to(F64)


def regulariser_log(strategy, model, x):
    """Run one training forward pass and one ``loss`` call; return the strategy's log."""
    out = model(x)
    strategy.loss(out.sum() * 0.0, model, x, out)
    return strategy.log()


# --------------------------------------------------------------------------- schedule


@pytest.mark.parametrize("schedule", ["triangular", "linear"])
@pytest.mark.parametrize("epochs", [1, 4, 7])
def test_level_follows_the_schedule_every_epoch_and_ends_exactly_at_zero(schedule, epochs):
    model = two_layer_model()
    strategy = CR(schedule)
    model = strategy.attach(model, epochs=epochs)
    layers = list(relaxed_layers(model).values())
    assert len(layers) == 2
    seen = []
    for epoch in range(epochs):
        strategy.on_epoch_start(epoch)
        want = expected_theta(schedule, epoch, epochs)
        for layer in layers:  # one global level
            assert float(layer.level) == pytest.approx(want, abs=1e-15)
        assert strategy.log()["levels"] == pytest.approx([want, want], abs=1e-15)
        seen.append(want)
        strategy.on_epoch_end(epoch)
        if epoch < epochs - 1:  # the level only moves at epoch starts and after the last epoch
            assert float(layers[0].level) == pytest.approx(want, abs=1e-15)
    assert all(float(layer.level) == 0.0 for layer in layers)  # exactly 0, not approximately
    if schedule == "linear":
        assert seen[0] == 1.0
    if schedule == "triangular" and epochs == 4:
        assert seen == [0.0, 0.5, 1.0, 0.5]


def test_epochs_from_the_constructor_and_a_callable_schedule():
    model = two_layer_model()
    strategy = CR(lambda progress: (1 - progress) ** 2, epochs=5)
    model = strategy.attach(model)
    for epoch in range(5):
        strategy.on_epoch_start(epoch)
        assert float(next(iter(relaxed_layers(model).values())).level) == pytest.approx(
            (1 - epoch / 5) ** 2, abs=1e-15
        )
        strategy.on_epoch_end(epoch)
    assert strategy.log()["levels"] == [0.0, 0.0]


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match=r"schedule: expected one of \['linear', 'triangular'\]"):
        CR("cosine")
    with pytest.raises(ValueError, match=r"schedule: expected a callable with schedule\(1.0\)"):
        CR(lambda p: 1 - p / 2)
    with pytest.raises(ValueError, match="weight: expected a non-negative number"):
        CR(weight=-1.0)
    with pytest.raises(ValueError, match="epochs: CR needs the number of training epochs"):
        CR().attach(two_layer_model())
    with pytest.raises(ValueError, match="epochs: CR was built with epochs=3"):
        CR(epochs=3).attach(two_layer_model(), epochs=4)
    with pytest.raises(ValueError, match="model: CR needs Relaxed layers"):
        CR(epochs=2).attach(nn.Linear(3, 3))
    no_actions = nn.Sequential(Relaxed(nn.Linear(3, 3), nn.Linear(3, 3)))
    with pytest.raises(ValueError, match=r"layer '0' .*action_in"):
        CR(epochs=2).attach(no_actions)
    strategy = CR(epochs=2)
    strategy.attach(two_layer_model())
    with pytest.raises(ValueError, match=r"epoch: expected an integer in \[0, 2\)"):
        strategy.on_epoch_start(2)
    assert isinstance(get("cr", epochs=2), CR)


# --------------------------------------------------------------------------- R_LD, continuous


def single_layer(rep_in, rep_out, free):
    return nn.Sequential(Relaxed(EquivariantLinear(rep_in, rep_out), free)).to(F64)


@pytest.mark.parametrize("group", [SO3(), O3()], ids=["SO3", "O3"])
def test_lie_regulariser_vanishes_exactly_for_an_equivariant_free_branch(group, generator):
    rep_in, rep_out = group.irreps("2x0e + 1x1o + 1x2e"), group.irreps("1x0e + 2x1o + 1x2e")
    x = torch.randn(8, rep_in.dim, dtype=F64, generator=generator)
    torch.manual_seed(0)
    free = DenseFreeBranch((rep_in.dim,), (rep_out.dim,))
    model = single_layer(rep_in, rep_out, free)
    strategy = CR("linear", free_init_scale=None, epochs=2)  # level 1: the free branch is active
    model = strategy.attach(model)
    generic = regulariser_log(strategy, model, x)
    assert generic["r_ld"] > 1.0  # a dense weight is far from equivariant
    # Give the dense branch an equivariant weight and an invariant bias: R_LD must vanish.
    reference = EquivariantLinear(rep_in, rep_out).to(F64)
    with torch.no_grad():
        reference.bias_basis.coefficients[0].normal_()
        free = model[0].free
        free.linear.weight.copy_(reference.weight())
        free.linear.bias.copy_(reference.bias())
    equivariant = regulariser_log(strategy, model, x)
    assert equivariant["r_n"] > 0.1  # the branch is not zero ...
    assert equivariant["r_ld"] < 1e-12  # ... but exactly equivariant
    # An equivariant layer as the free branch, too.
    other = single_layer(rep_in, rep_out, EquivariantLinear(rep_in, rep_out))
    strategy = CR("linear", free_init_scale=None, epochs=2)
    other = strategy.attach(other)
    assert regulariser_log(strategy, other, x)["r_ld"] < 1e-12


class TanhBranch(nn.Module):
    """A nonlinear free branch ``W2 tanh(W1 x)``."""

    def __init__(self, d_in, d_out):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_in, 16), nn.Tanh(), nn.Linear(16, d_out))

    def forward(self, x):
        return self.net(x)


@torch.no_grad()
def lie_finite_difference(w, x, a_in, a_out, t=1e-5, **kwargs):
    """``sum_k sum_b ||L_{A_k} w(x_b)||^2`` by central differences of the group actions."""
    total = 0.0
    for a in a_in.group.lie_algebra():
        plus, minus = torch.linalg.matrix_exp(t * a)[None], torch.linalg.matrix_exp(-t * a)[None]
        forward = a_out(minus, w(a_in(plus, x), **kwargs))
        backward = a_out(plus, w(a_in(minus, x), **kwargs))
        derivative = (forward - backward).flatten(1) / (2 * t)
        total += float(derivative.pow(2).sum())
    return total


@pytest.mark.parametrize("group", [SO3(), O3()], ids=["SO3", "O3"])
def test_lie_regulariser_is_the_lie_derivative_of_the_free_branch(group, generator):
    """R_LD against central finite differences of the group actions, for a nonlinear branch
    (plus, for O(3), the difference under the discrete generator -I)."""
    rep_in, rep_out = group.irreps("1x0e + 1x1o + 1x2e"), group.irreps("2x1o + 1x0e")
    a_in, a_out = RepresentationAction(rep_in), RepresentationAction(rep_out)
    x = torch.randn(5, rep_in.dim, dtype=F64, generator=generator)
    torch.manual_seed(1)
    model = single_layer(rep_in, rep_out, TanhBranch(rep_in.dim, rep_out.dim))
    strategy = CR("linear", free_init_scale=None, epochs=3)
    model = strategy.attach(model)
    got = regulariser_log(strategy, model, x)["r_ld"]
    w = model[0].free
    expected = lie_finite_difference(w, x, a_in, a_out)
    with torch.no_grad():
        for h in group.discrete_generators():
            diff = w(a_in(h[None], x)) - a_out(h[None], w(x))
            expected += float(diff.pow(2).sum())
    assert expected > 0.1
    assert got == pytest.approx(expected, rel=1e-6)


class ScaledLinear(nn.Module):
    """An equivariant linear layer times a per-sample keyword tensor ``scale`` ``(B, 1)``."""

    def __init__(self, rep_in, rep_out):
        super().__init__()
        self.linear = EquivariantLinear(rep_in, rep_out)
        self.action_in, self.action_out = self.linear.action_in, self.linear.action_out

    def forward(self, x, *, scale):
        return self.linear(x) * scale


class ScaledTanhBranch(TanhBranch):
    def forward(self, x, *, scale):
        return self.net(x) * scale


def test_lie_regulariser_holds_batched_keyword_tensors_fixed(generator):
    group = SO3()
    rep_in, rep_out = group.irreps("1x0e + 1x1o + 1x2e"), group.irreps("2x1o + 1x0e")
    x = torch.randn(5, rep_in.dim, dtype=F64, generator=generator)
    scale = torch.rand(5, 1, dtype=F64, generator=generator) + 0.5
    torch.manual_seed(1)
    layer = Relaxed(ScaledLinear(rep_in, rep_out), ScaledTanhBranch(rep_in.dim, rep_out.dim))
    strategy = CR("linear", free_init_scale=None, epochs=3)
    model = strategy.attach(layer.to(F64))
    out = model(x, scale=scale)
    strategy.loss(out.sum() * 0.0, model, x, out)
    got = strategy.log()["r_ld"]
    expected = lie_finite_difference(layer.free, x, layer.action_in, layer.action_out, scale=scale)
    assert expected > 0.1
    assert got == pytest.approx(expected, rel=1e-6)


class PointsAndVelocities(nn.Module):
    """An E(3)-equivariant layer on (positions, velocities, charges) -> velocities."""

    def __init__(self):
        super().__init__()
        group = Euclidean(SO3())
        self.action_in = DirectSumAction(
            PointAction(group), VectorAction(group), TrivialAction(group)
        )
        self.action_out = VectorAction(group)

    def forward(self, p, v, q):
        return (p - p.mean(1, keepdim=True)) * q + v


class DenseOnParts(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(7, 3)

    def forward(self, p, v, q):
        return self.linear(torch.cat([p, v, q], dim=-1))


def vector_neurons(generator):
    layer = Relaxed(VNLinear(4, 2), VectorNeuronFreeBranch(4, 2)).to(F64)
    return layer, (torch.randn(3, 4, 3, 5, dtype=F64, generator=generator),)


def particles(generator):
    layer = Relaxed(PointsAndVelocities(), DenseOnParts()).to(F64)
    parts = [torch.randn(4, 5, d, dtype=F64, generator=generator) for d in (3, 3, 1)]
    return layer, tuple(parts)


@pytest.mark.parametrize("build", [vector_neurons, particles], ids=["VN-O3", "E3-tuple"])
def test_lie_regulariser_agrees_with_metrics_lie_derivative(build, generator):
    """Other actions: vector neurons (O(3) on axis 2, plus the generator -I) and a tuple input
    (points that translate, vectors, invariant charges) under E(3)."""
    torch.manual_seed(5)
    layer, args = build(generator)
    strategy = CR("linear", free_init_scale=None, epochs=2)
    model = strategy.attach(layer)  # the relaxed layer is the whole model
    out = model(*args)
    strategy.loss(out.sum() * 0.0, model, args, out)
    got = strategy.log()["r_ld"]
    free, a_in, a_out = layer.free, layer.action_in, layer.action_out
    x = args if len(args) > 1 else args[0]
    with torch.no_grad():
        derivative = lie_derivative(free, x, a_in, a_out)  # (k, B, D)
        expected = float(derivative.pow(2).sum())
        for h in a_in.group.discrete_generators():
            moved = a_in(h[None], x)
            moved = free(*moved) if isinstance(moved, tuple) else free(moved)
            diff = (moved - a_out(h[None], free(*args))).flatten(1)
            expected += float(diff.pow(2).sum())
    assert expected > 0.1
    assert got == pytest.approx(expected, rel=1e-10)
    # The equivariant layer itself as the free branch: exactly 0.
    equivariant = Relaxed(copy.deepcopy(layer.equivariant), copy.deepcopy(layer.equivariant))
    strategy = CR("linear", free_init_scale=None, epochs=2)
    model = strategy.attach(equivariant)
    out = model(*args)
    strategy.loss(out.sum() * 0.0, model, args, out)
    assert strategy.log()["r_ld"] < 1e-12


class SteerableOnParts(nn.Module):
    """A :class:`SteerableFreeBranch` on (points, vectors, charges): its concatenated dense map
    is affine in the three parts jointly."""

    def __init__(self):
        super().__init__()
        self.branch = SteerableFreeBranch([3, 3], 1, 3)
        self.affine = True

    def forward(self, p, v, q):
        return self.branch(p, v, q)


def _affine_cases(generator):
    """(affine branch, input, action_in, action_out): a dense map on SO(3) irreps, a steerable
    branch on an E(3) tuple (translations, an invariant part) and a vector-neuron map under
    O(3)."""
    so3, e3 = SO3(), Euclidean(SO3())
    irreps_in, irreps_out = so3.irreps("2x0e + 1x1o + 1x2e"), so3.irreps("1x0e + 2x1o")
    dense = DenseFreeBranch((irreps_in.dim,), (irreps_out.dim,))
    tuple_action = DirectSumAction(PointAction(e3), VectorAction(e3), TrivialAction(e3))
    points = tuple(torch.randn(4, 5, d, dtype=F64, generator=generator) for d in (3, 3, 1))
    return [
        (
            dense,
            torch.randn(6, irreps_in.dim, dtype=F64, generator=generator),
            RepresentationAction(irreps_in),
            RepresentationAction(irreps_out),
        ),
        (SteerableOnParts(), points, tuple_action, VectorAction(e3)),
        (
            VectorNeuronFreeBranch(4, 2),
            torch.randn(3, 4, 3, 5, dtype=F64, generator=generator),
            VectorAction(O3(), dim=2),
            VectorAction(O3(), dim=2),
        ),
    ]


def test_closed_form_lie_derivative_of_affine_branches_equals_the_jvp(generator):
    """``L_A W(x) = W(dA x) - W(0) - dA' W(x)`` for the affine free branches: value and
    parameter gradients equal to the Jacobian-vector-product form, with non-zero biases."""
    torch.manual_seed(3)
    for branch, x, a_in, a_out in _affine_cases(generator):
        branch = branch.to(F64)
        for parameter in branch.parameters():
            nn.init.normal_(parameter)
        assert getattr(branch, "affine", False), type(branch).__name__
        forms = []
        for affine in (True, False):
            branch.zero_grad()
            derivative = lie_derivative(branch, x, a_in, a_out, affine=affine)
            derivative.pow(2).sum().backward()
            forms.append((derivative.detach(), [p.grad.clone() for p in branch.parameters()]))
        (closed, closed_grads), (jvp, jvp_grads) = forms
        assert jvp.abs().max() > 0.1
        torch.testing.assert_close(closed, jvp, rtol=1e-10, atol=1e-10)
        for got, expected in zip(closed_grads, jvp_grads, strict=True):
            torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_closed_form_is_not_taken_for_a_non_affine_branch(generator):
    """The closed form is exact only for affine maps: on a tanh branch it differs from the jvp
    (so the equality above is a real check), and CR leaves such branches on the jvp."""
    so3 = SO3()
    irreps = so3.irreps("1x0e + 1x1o")
    branch = nn.Sequential(nn.Linear(irreps.dim, irreps.dim), nn.Tanh()).to(F64)
    x = torch.randn(5, irreps.dim, dtype=F64, generator=generator)
    action = RepresentationAction(irreps)
    closed = lie_derivative(branch, x, action, action, affine=True)
    jvp = lie_derivative(branch, x, action, action)
    assert (closed - jvp).abs().max() > 1e-3
    assert not getattr(branch, "affine", False)


@pytest.mark.parametrize("centred", [True, False])
def test_translation_generators_are_skipped_only_where_they_vanish(centred, generator):
    """The EGNN branch on centroid-relative coordinates is translation invariant: its Lie
    derivatives along the 3 translations of E(3) are exactly 0, so CR computes only the
    rotations and gets the same R_LD as with all 6 generators; on raw coordinates they are not
    0 and all 6 are kept."""
    torch.manual_seed(2)
    layer = EGNNLayer(4, 8, velocity=True, group=Euclidean(O3()))
    free = EGNNFreeBranch(4, 4, 8, velocity=True, centred=centred).to(F64)
    args = tuple(torch.randn(3, 5, d, dtype=F64, generator=generator) for d in (4, 3, 3))
    action_out = increment_action(layer.action_out)  # the branch's dx is a vector
    derivative = lie_derivative(free, args, layer.action_in, action_out)  # (6, B, D)
    translations = float(derivative[3:].abs().max())
    assert free.translation_invariant == centred
    assert (translations < 1e-12) if centred else (translations > 1e-3)
    r_ld, _ = free_branch_terms(free, args, {}, layer.action_in, layer.action_out)
    free.translation_invariant = False  # every generator
    r_ld_all, _ = free_branch_terms(free, args, {}, layer.action_in, layer.action_out)
    assert float(r_ld_all) > 0.1
    assert float(r_ld) == pytest.approx(float(r_ld_all), rel=1e-12)


@pytest.mark.parametrize("centred", [True, False])
@pytest.mark.parametrize("velocity", [True, False])
@pytest.mark.parametrize("masked", [True, False])
def test_egnn_branch_pushforward_equals_the_jvp(centred, velocity, masked, generator):
    """The EGNN branch's closed-form Jacobian-vector products (CR's Lie derivative without a
    jvp) equal torch.func.jvp's, in value and parameter gradients, with padding masks."""
    torch.manual_seed(6)
    layer = EGNNLayer(4, 8, velocity=velocity, group=Euclidean(O3()))
    free = EGNNFreeBranch(4, 4, 8, velocity=velocity, centred=centred).to(F64)
    args = tuple(
        torch.randn(3, 5, d, dtype=F64, generator=generator) for d in (4, 3, 3)[: 2 + velocity]
    )
    kwargs = {}
    if masked:
        kwargs["mask"] = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 4 + [False]])
    action_out = increment_action(layer.action_out)
    forms = []
    for pushforward in (free.pushforward, None):
        free.zero_grad()
        derivative = lie_derivative(
            free, args, layer.action_in, action_out, kwargs=kwargs, pushforward=pushforward
        )
        derivative.pow(2).sum().backward()
        forms.append((derivative.detach(), [p.grad.clone() for p in free.parameters()]))
    (closed, closed_grads), (jvp, jvp_grads) = forms
    assert jvp.abs().max() > 0.1
    torch.testing.assert_close(closed, jvp, rtol=1e-10, atol=1e-12)
    for got, expected in zip(closed_grads, jvp_grads, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-12)


class EGNNIncrement(nn.Module):
    """An E(3)-equivariant free branch for an EGNN layer: the layer's own update
    ``(h', x' - x)``, whose coordinate part is a vector."""

    def __init__(self, layer):
        super().__init__()
        self.layer = layer

    def forward(self, h, x, v):
        h_out, x_out = self.layer(h, x, v)
        return h_out, x_out - x


def test_lie_regulariser_vanishes_for_an_equivariant_egnn_update(generator):
    """The coordinate output of a relaxed EGNN layer is a point, so its free branch's is a
    vector (it is added to the point): an equivariant update gives R_LD = 0 exactly, with the
    translations (a point action on the branch's output would leave 1 per node and
    translation, whatever the branch)."""
    torch.manual_seed(4)
    layer = EGNNLayer(4, 8, velocity=True, group=Euclidean(O3())).to(F64)
    branch = EGNNIncrement(copy.deepcopy(layer))
    branch.layer.phi_x[-1].weight.data.normal_()  # a coordinate update of size ~1
    args = tuple(torch.randn(3, 5, d, dtype=F64, generator=generator) for d in (4, 3, 3))
    r_ld, r_n = free_branch_terms(branch, args, {}, layer.action_in, layer.action_out)
    assert float(r_n) > 1.0
    assert float(r_ld) < 1e-12
    points, vectors = layer.action_out.actions[1], increment_action(layer.action_out).actions[1]
    assert isinstance(points, PointAction)
    assert not isinstance(vectors, PointAction)


def test_gradient_flows_through_the_lie_derivative_to_the_free_branch_only(generator):
    """At theta = 0 (epoch 0 of the triangular schedule) the task loss does not reach the free
    branch: its gradient is the regulariser's. The inputs are detached, so the regulariser adds
    nothing to the equivariant layers' gradients."""
    model = two_layer_model()
    strategy = CR(epochs=4)
    model = strategy.attach(model)
    strategy.on_epoch_start(0)
    assert strategy.log()["levels"] == [0.0, 0.0]
    x = torch.randn(6, 5, dtype=F64, generator=generator)
    layers = list(relaxed_layers(model).values())
    eq_params = [p for layer in layers for p in layer.equivariant.parameters()]
    free_params = [p for layer in layers for p in layer.free.parameters() if p.requires_grad]
    out = model(x)
    task = out.pow(2).mean()
    task_grads = torch.autograd.grad(task, eq_params, retain_graph=True)
    objective = strategy.loss(task, model, x, out)
    assert float(objective.detach() - task.detach()) == pytest.approx(
        strategy.log()["penalty"], rel=1e-12
    )
    grads = torch.autograd.grad(objective, eq_params + free_params)
    for got, want in zip(grads[: len(eq_params)], task_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)
    free_grads = grads[len(eq_params) :]
    assert all(torch.isfinite(g).all() for g in free_grads)
    assert sum(float(g.abs().sum()) for g in free_grads) > 1e-3


# --------------------------------------------------------------------------- R_LD, finite


@pytest.mark.parametrize("group", [CyclicGroup(4), DihedralGroup(4)], ids=["C4", "D4"])
def test_finite_group_regulariser_is_the_generator_difference(group, generator):
    rep = group.regular_representation()
    x = torch.randn(7, rep.dim, dtype=F64, generator=generator)
    torch.manual_seed(2)
    model = single_layer(rep, rep, DenseFreeBranch((rep.dim,), (rep.dim,)))
    strategy = CR("linear", free_init_scale=None, epochs=2)
    model = strategy.attach(model)
    got = regulariser_log(strategy, model, x)
    # By hand: sum over the generators h of mean_b ||W rho(h) x_b - rho(h) W x_b||^2.
    free = model[0].free
    weight, bias = free.linear.weight.detach(), free.linear.bias.detach()
    gens = group.discrete_generators()
    assert gens.shape[0] == (1 if isinstance(group, CyclicGroup) else 2)
    expected = 0.0
    for rho in rep(gens):
        wx = x @ weight.T + bias
        diff = (x @ rho.T) @ weight.T + bias - wx @ rho.T
        expected += float(diff.pow(2).sum())
    assert expected > 0.1
    assert got["r_ld"] == pytest.approx(expected, rel=1e-10)
    # An equivariant (group-convolution) weight and an invariant bias: exactly 0.
    reference = EquivariantLinear(rep, rep).to(F64)
    with torch.no_grad():
        reference.bias_basis.coefficients[0].normal_()
        free.linear.weight.copy_(reference.weight())
        free.linear.bias.copy_(reference.bias())
    equivariant = regulariser_log(strategy, model, x)
    assert equivariant["r_n"] > 0.1
    assert equivariant["r_ld"] < 1e-12


# --------------------------------------------------------------------------- R_N and the penalty


def test_norm_regulariser_and_penalty_match_a_hand_computation():
    rep = SO2().irrep(1)
    model = single_layer(rep, rep, DenseFreeBranch((2,), (2,)))
    strategy = CR("linear", free_init_scale=None, weight=0.5, epochs=2)
    model = strategy.attach(model)
    with torch.no_grad():
        model[0].free.linear.weight.copy_(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
        model[0].free.linear.bias.copy_(torch.tensor([0.5, -1.0]))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=F64)
    log = regulariser_log(strategy, model, x)
    # W x + b = (1.5, 2), (2.5, 3), (3.5, 6): squared norms 6.25, 15.25, 48.25; summed over the
    # batch, as the official code.
    assert log["r_n"] == pytest.approx(69.75, rel=1e-12)
    # Linear branch: L_A W(x) = W A x - A (W x + b) with A the so(2) generator.
    a = torch.tensor([[0.0, -1.0], [1.0, 0.0]], dtype=F64)
    weight, bias = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=F64), torch.tensor([0.5, -1.0])
    lie = x @ a.T @ weight.T - (x @ weight.T + bias.to(F64)) @ a.T
    r_ld = float(lie.pow(2).sum())
    assert log["r_ld"] == pytest.approx(r_ld, rel=1e-12)
    assert log["penalty"] == pytest.approx(0.5 * (math.sqrt(r_ld) + math.sqrt(69.75)))


def test_terms_sum_over_layers_and_each_layer_sees_its_own_detached_input(generator):
    model = two_layer_model()
    strategy = CR("linear", free_init_scale=None, epochs=2)
    model = strategy.attach(model)
    x = torch.randn(4, 5, dtype=F64, generator=generator)
    inputs = {}
    hooks = [
        layer.register_forward_pre_hook(lambda m, args, n=name: inputs.setdefault(n, args[0]))
        for name, layer in relaxed_layers(model).items()
    ]
    log = regulariser_log(strategy, model, x)
    for hook in hooks:
        hook.remove()
    with torch.no_grad():
        expected = sum(
            float(layer.free(inputs[name]).pow(2).sum())
            for name, layer in relaxed_layers(model).items()
        )
    assert log["r_n"] == pytest.approx(expected, rel=1e-12)


def test_gradient_is_finite_when_the_regulariser_is_exactly_zero(generator):
    """Zero free branches: R_LD = R_N = 0, where a bare sqrt has an infinite derivative."""
    model = two_layer_model()
    for layer in relaxed_layers(model).values():
        layer.configure_free(init="zero")
    strategy = CR(epochs=3, free_init_scale=None)
    model = strategy.attach(model)
    x = torch.randn(4, 5, dtype=F64, generator=generator)
    out = model(x)
    objective = strategy.loss(out.pow(2).mean(), model, x, out)
    log = strategy.log()
    assert log["r_ld"] == 0.0
    assert log["r_n"] == 0.0
    assert log["penalty"] == 0.0
    objective.backward()
    for p in model.parameters():
        assert p.grad is None or torch.isfinite(p.grad).all()
    free = [p for layer in relaxed_layers(model).values() for p in layer.free.parameters()]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in free)


def test_inputs_are_recorded_only_under_autograd_and_cleared_after_use(generator):
    model = two_layer_model()
    strategy = CR("linear", free_init_scale=None, epochs=2)
    model = strategy.attach(model)
    x = torch.randn(4, 5, dtype=F64, generator=generator)
    once = regulariser_log(strategy, model, x)["r_n"]
    with torch.no_grad():
        model(x)  # an evaluation pass: not recorded
    assert regulariser_log(strategy, model, x)["r_n"] == pytest.approx(once, rel=1e-12)
    with pytest.warns(RuntimeWarning, match="no relaxed-layer inputs were recorded"):
        zero = strategy.loss(torch.zeros((), dtype=F64), model, x, None)
    assert float(zero) == 0.0


# --------------------------------------------------------------------------- training


def emlp():
    group = O3()
    gate = GatedNonlinearity(4, group.irreps("4x1o"))
    model = nn.Sequential(
        EquivariantLinear(group.irreps("2x0e + 2x1o"), gate.representation_in),
        gate,
        EquivariantLinear(gate.representation_out, group.irreps("1x0e + 1x1o")),
    )
    return relax(model).to(F64)


def train(strategy, model, epochs, x, y, start=0, steps=2):
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    trace = []
    for epoch in range(start, epochs):
        strategy.on_epoch_start(epoch)
        for _ in range(steps):
            out = model(x)
            objective = strategy.loss((out - y).pow(2).mean(), model, x, out)
            optimiser.zero_grad()
            objective.backward()
            optimiser.step()
            strategy.after_step()
            trace.append(strategy.log())
        strategy.on_epoch_end(epoch)
    return trace


def test_training_ends_at_level_zero_and_the_projected_model_is_equivariant(generator):
    torch.manual_seed(3)
    model = emlp()
    strategy = CR(epochs=4)
    model = strategy.attach(model)
    x = torch.randn(16, 8, dtype=F64, generator=generator)
    y = torch.randn(16, 4, dtype=F64, generator=generator)
    trace = train(strategy, model, 4, x, y)
    assert [entry["theta"] for entry in trace[::2]] == [0.0, 0.5, 1.0, 0.5]
    assert all(math.isfinite(entry[key]) for entry in trace for key in ("r_ld", "r_n", "penalty"))
    assert all(entry["r_ld"] > 0 for entry in trace)  # generic dense branches
    assert strategy.log()["levels"] == [0.0, 0.0]
    action_in = RepresentationAction(O3().irreps("2x0e + 2x1o"))
    action_out = RepresentationAction(O3().irreps("1x0e + 1x1o"))
    assert_equivariant(model, x, action_in, action_out, generator=generator)  # level 0
    final = strategy.evaluation_model(model)
    assert not relaxed_layers(final)
    assert_equivariant(final, x, action_in, action_out, generator=generator)
    with torch.no_grad():
        torch.testing.assert_close(final(x), model(x), rtol=0, atol=1e-12)


def test_state_dict_resumes_the_schedule(generator):
    x = torch.randn(8, 8, dtype=F64, generator=generator)
    y = torch.randn(8, 4, dtype=F64, generator=generator)
    torch.manual_seed(4)
    model = emlp()
    strategy = CR(epochs=5)
    model = strategy.attach(model)
    train(strategy, model, 2, x, y, steps=1)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "cr": strategy.state_dict()}, buffer)
    levels_then = strategy.log()["levels"]
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    resumed_model = emlp()
    resumed = CR()
    resumed_model = resumed.attach(resumed_model, epochs=5)
    resumed_model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved["cr"])
    assert resumed.log()["levels"] == levels_then == pytest.approx([0.4, 0.4], abs=1e-15)
    later = [e["theta"] for e in train(resumed, resumed_model, 5, x, y, start=2, steps=1)]
    assert later == pytest.approx([0.8, 0.8, 0.4], abs=1e-15)
    assert resumed.log()["levels"] == [0.0, 0.0]
    # Restored before attach (a fresh model starts at level 1): attach resumes at epoch 1.
    fresh = CR()
    fresh.load_state_dict(saved["cr"])
    fresh_model = fresh.attach(emlp())
    assert fresh.log()["levels"] == pytest.approx([0.4, 0.4], abs=1e-15)
    assert [e["theta"] for e in train(fresh, fresh_model, 5, x, y, start=2, steps=1)] == later
    torch.save(fresh_model, io.BytesIO())  # the recording hooks do not stop pickling
    with pytest.raises(ValueError, match="state: expected a CR state with schedule 'linear'"):
        CR("linear").load_state_dict(saved["cr"])
    with pytest.raises(ValueError, match="state: expected a CR state for epochs=3"):
        CR(epochs=3).load_state_dict(saved["cr"])


# --------------------------------------------------------------------------- official details


def test_regulariser_does_not_depend_on_theta(generator):
    """The same free branches and layer inputs give the same R_LD, R_N and penalty at every
    level (one relaxed layer, so that its input does not pass through a relaxed layer)."""
    group = SO3()
    layer = EquivariantLinear(group.irreps("2x0e + 1x1o"), group.irreps("1x0e + 2x1o"))
    model = relax(nn.Sequential(layer)).to(F64)
    strategy = CR("triangular", epochs=4, free_init_scale=None)
    model = strategy.attach(model)
    x = torch.randn(6, 5, dtype=F64, generator=generator)
    logs = []
    for epoch in (1, 2, 3):  # theta = 0.5, 1, 0.5 ... and 0 below
        strategy.on_epoch_start(epoch)
        logs.append(regulariser_log(strategy, model, x))
    strategy.on_epoch_start(0)
    logs.append(regulariser_log(strategy, model, x))
    assert len({log["theta"] for log in logs}) == 3
    for key in ("r_ld", "r_n", "penalty"):
        assert {log[key] for log in logs} == {logs[0][key]}, key
    assert logs[0]["penalty"] > 0


def test_attach_gives_free_branches_the_official_bias_free_normal_init():
    torch.manual_seed(0)
    model = CR(epochs=2).attach(two_layer_model())
    weights = []
    for layer in relaxed_layers(model).values():
        linear = layer.free.linear
        assert torch.equal(linear.bias, torch.zeros_like(linear.bias))
        assert not linear.bias.requires_grad  # held at 0: bias-free
        weights.append(linear.weight.detach().flatten())
    std = float(torch.cat(weights).std())
    assert 0.7e-4 < std < 1.3e-4


def test_rotate_batches_moves_the_whole_batch_by_one_group_element(generator):
    group = SO3()
    rep = group.irreps("1x1o")
    model = relax(nn.Sequential(EquivariantLinear(rep, rep))).to(F64)
    action = RepresentationAction(rep)
    strategy = CR(epochs=2, rotate_batches=True)
    strategy.attach(model, action_in=action, action_out=action, generator=generator)
    x = torch.randn(5, 3, dtype=F64, generator=generator)
    y = 2.0 * x
    moved_x, moved_y = strategy.transform_batch(x, y)
    rotation = torch.linalg.lstsq(x, moved_x).solution  # one matrix for every sample
    torch.testing.assert_close(x @ rotation, moved_x)
    torch.testing.assert_close(rotation.T @ rotation, torch.eye(3, dtype=F64))
    assert not torch.allclose(rotation, torch.eye(3, dtype=F64))
    torch.testing.assert_close(moved_y, 2.0 * moved_x)
    assert CR(epochs=2).transform_batch(x, y) == (x, y)  # off by default
