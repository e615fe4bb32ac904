"""The equivariant MLP (EMLP, arXiv 2104.09459) and its bilinear layer: equivariance in float64
for O(3), SO(3) and O(5), what the bilinear map can represent, relaxation and projection, input
checks, the registry, and a quick fit of the O(3) inertia function."""

from __future__ import annotations

import pytest
import torch

import equirelax
from _tolerances import ATOL
from equirelax import metrics
from equirelax.actions import (
    DirectSumAction,
    PointAction,
    RepresentationAction,
    TrivialAction,
    VectorAction,
)
from equirelax.experiments import model_registry
from equirelax.groups import O3, SO3, Euclidean, MatrixGroup, Orthogonal
from equirelax.models import EMLP, MLP
from equirelax.models.emlp import EMLPBlock, default_hidden, default_mid, uniform_representation
from equirelax.nn import EquivariantBilinear, FeatureBilinear
from equirelax.representations import Representation
from equirelax.tasks import Task

TOL = 1e-10  # relative equivariance error in float64


@pytest.fixture(autouse=True)
def _float64_bases():
    """Build every layer under float64 defaults: the equivariant bases are stored in the default
    dtype when a layer is built, and float32-rounded bases are equivariant only to ~1e-8."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _reps(group):
    """``(T0, V, T2)`` of an orthogonal group."""
    scalar, vector = group.trivial_representation(), group.standard_representation()
    return scalar, vector, vector.tensor(vector)


def _inertia_reps():
    """The inertia task: 5 masses then 5 positions -> the 3x3 tensor, row-major."""
    scalar, vector, tensor = _reps(O3())
    return 5 * scalar + 5 * vector, tensor


CASES = {
    "O3-inertia": _inertia_reps,
    "O5-invariant": lambda: (2 * _reps(Orthogonal(5))[1], _reps(Orthogonal(5))[0]),
    "SO3-vector": lambda: (2 * _reps(SO3())[0] + 3 * _reps(SO3())[1], _reps(SO3())[1]),
}


def _randomise_biases(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Nonzero invariant biases (the basis ones start at 0), so that the bias bases are tested
    too, and dense projected weights of unit scale (their projections start small)."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "bias_basis" in name or "bias_projection" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
            elif "weight_projection" in name:
                dense = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.copy_(dense / p.shape[1] ** 0.5)


def _inputs(dim: int, batch: int = 8, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, dim, generator=gen, dtype=torch.float64)


def _error(model, x, action_in=None, action_out=None) -> metrics.EquivarianceError:
    gen = torch.Generator().manual_seed(1)
    return metrics.equivariance_error(
        model,
        x,
        action_in or model.action_in,
        action_out or model.action_out,
        num_samples=8,
        generator=gen,
    )


@pytest.mark.parametrize("case", CASES)
def test_bilinear_is_equivariant_in_float64(case: str) -> None:
    rep_in, rep_out = CASES[case]()
    torch.manual_seed(0)
    layer = EquivariantBilinear(rep_in, rep_out, default_mid(rep_in.group)).double()
    _randomise_biases(layer, torch.Generator().manual_seed(2))
    err = _error(layer, _inputs(rep_in.dim))
    assert err.output_norm > 0.1
    assert err.max < TOL, err


@pytest.mark.parametrize("case", CASES)
def test_bilinear_passes_assert_equivariant(case: str, dtype: torch.dtype, generator) -> None:
    rep_in, rep_out = CASES[case]()
    torch.manual_seed(0)
    layer = EquivariantBilinear(rep_in, rep_out, default_mid(rep_in.group)).to(dtype)
    _randomise_biases(layer, generator)
    x = _inputs(rep_in.dim).to(dtype)
    err = equirelax.assert_equivariant(
        layer, x, num_samples=8, generator=generator, atol=ATOL[dtype]
    )
    assert err.output_norm > 0.1


# orthogonal hidden representations for the official bilinear map: O(3) with every type it can
# fill from (vectors, matrices), O(5) vectors, SO(3) with two matrix blocks
FEATURE_CASES = {
    "O3-T0-V-T2": lambda: (lambda t0, v, t2: 6 * t0 + 3 * v + 2 * t2)(*_reps(O3())),
    "O5-T0-V": lambda: (lambda t0, v, _t2: 4 * t0 + 2 * v)(*_reps(Orthogonal(5))),
    "SO3-T2-twice": lambda: (lambda t0, v, t2: 2 * t0 + v + t2 + t2)(*_reps(SO3())),
}


@pytest.mark.parametrize("case", FEATURE_CASES)
def test_feature_bilinear_is_equivariant_in_float64(case: str) -> None:
    rep = FEATURE_CASES[case]()
    torch.manual_seed(0)
    layer = FeatureBilinear(rep).double()
    err = _error(layer, _inputs(rep.dim))
    assert err.output_norm > 0.01
    assert err.max < TOL, err


def test_feature_bilinear_is_the_official_formula() -> None:
    """``T0 + V`` of O(3): ``W = [[0, a v^T], [b v, 0]]`` (the scalar-to-scalar block and the
    vector-to-vector one, whose type T2 the features lack, stay 0), ``y = 0.1 W x``."""
    t0, v, _ = _reps(O3())
    torch.manual_seed(0)
    layer = FeatureBilinear(t0 + v)
    x = _inputs(4)
    s, vec = x[:, :1], x[:, 1:]
    pairs = [(layer._spans[o][2].key, layer._spans[i][2].key) for o, i, _ in layer._pairs]
    thetas = [float(theta.detach().reshape(())) for theta in layer.theta]  # one copy each
    coefficient = dict(zip(pairs, thetas, strict=True))
    scalar_from_vector = coefficient[(t0.key, v.key)]
    vector_from_scalar = coefficient[(v.key, t0.key)]
    expected = 0.1 * torch.cat(
        [
            scalar_from_vector * (vec * vec).sum(dim=1, keepdim=True),
            vector_from_scalar * vec * s,
        ],
        dim=1,
    )
    torch.testing.assert_close(layer(x), expected, rtol=0, atol=1e-14)


def test_feature_bilinear_keeps_its_chosen_copies_in_the_state_dict() -> None:
    rep = FEATURE_CASES["O3-T0-V-T2"]()
    torch.manual_seed(0)
    layer = FeatureBilinear(rep)
    torch.manual_seed(1)
    other = FeatureBilinear(rep)
    x = _inputs(rep.dim)
    assert not torch.allclose(layer(x), other(x))
    other.load_state_dict(layer.state_dict())
    torch.testing.assert_close(other(x), layer(x), rtol=0, atol=0)


def test_feature_bilinear_refuses_a_representation_that_is_not_orthogonal() -> None:
    vector = O3().standard_representation()
    shear = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    conjugated = Representation(
        O3(), 3, lambda g: shear @ g.to(shear) @ torch.linalg.inv(shear), key="sheared"
    )
    FeatureBilinear(vector)  # orthogonal: fine
    with pytest.raises(ValueError, match=r"^representation: expected an orthogonal.*sheared"):
        FeatureBilinear(conjugated)


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize(
    ("bilinear", "linear"),
    [("low-rank", "basis"), ("official", "basis"), ("official", "projected")],
)
def test_emlp_is_equivariant_in_float64(case: str, bilinear: str, linear: str) -> None:
    rep_in, rep_out = CASES[case]()
    torch.manual_seed(0)
    model = EMLP(rep_in, rep_out, bilinear=bilinear, linear=linear).double()
    _randomise_biases(model, torch.Generator().manual_seed(2))
    x = _inputs(rep_in.dim)
    assert model(x).shape == (8, rep_out.dim)
    err = metrics.assert_equivariant(
        model, x, num_samples=8, generator=torch.Generator().manual_seed(1), atol=1e-9
    )
    assert err.output_norm > 1e-3
    assert err.max < TOL, err


def test_uniform_representation_spreads_channels_over_tensor_ranks_as_the_official() -> None:
    scalar, vector, tensor = _reps(O3())
    official_384 = uniform_representation(384, O3())  # emlp.nn.uniform_rep(384, O(3))
    assert official_384 == 102 * scalar + 34 * vector + 11 * tensor + 3 * tensor.tensor(vector)
    for channels, group in ((1, O3()), (7, O3()), (100, SO3()), (384, Orthogonal(5))):
        assert uniform_representation(channels, group).dim == channels
    assert uniform_representation(6, O3()) == 3 * scalar + vector


def test_uniform_representation_refuses_a_group_that_is_not_orthogonal() -> None:
    order_three = torch.tensor([[[0.0, -1.0], [1.0, -1.0]]])  # a non-orthogonal rotation of Z^2
    with pytest.raises(NotImplementedError, match="orthogonal standard representation"):
        uniform_representation(10, MatrixGroup(order_three))
    with pytest.raises(ValueError, match="channels: expected a positive int"):
        uniform_representation(0, O3())


def test_default_representations_follow_the_group() -> None:
    scalar, vector, tensor = _reps(O3())
    assert default_hidden(O3()) == 32 * scalar + 16 * vector + 4 * tensor
    assert default_hidden(O3()).dim == 116
    o5_scalar, o5_vector, _ = _reps(Orthogonal(5))
    assert default_hidden(Orthogonal(5)) == 32 * o5_scalar + 16 * o5_vector
    assert default_mid(O3()) == 8 * scalar + 8 * vector
    # The block output puts the scalars first, whatever the order of the hidden blocks.
    block = EMLPBlock(2 * vector, vector + 3 * scalar, scalar + vector)
    assert block.representation_out == 3 * scalar + vector


def _fit_weights(layer: EquivariantBilinear, x: torch.Tensor, target: torch.Tensor) -> float:
    """Relative residual of the best output map ``L_c`` (in its equivariant weight space, with
    ``L_a, L_b`` fixed) for ``target``: the least-squares problem is linear in ``W_c``."""
    with torch.no_grad():
        features = layer.outer(layer.left(x), layer.right(x))  # (N, d_outer)
    projector = layer.out.projector
    # An orthonormal basis B_k of the equivariant weights, as the range of the projector.
    eigenvalues, eigenvectors = torch.linalg.eigh(projector.matrix())
    basis = eigenvectors[:, eigenvalues > 0.5].T.reshape(-1, layer.out_features, features.shape[1])
    design = torch.einsum("kij,nj->nik", basis, features).reshape(-1, basis.shape[0])
    coefficients = torch.linalg.lstsq(design, target.reshape(-1, 1)).solution
    residual = design @ coefficients - target.reshape(-1, 1)
    return float(residual.norm() / target.norm())


@pytest.mark.parametrize("group", [O3(), Orthogonal(5)], ids=str)
def test_bilinear_represents_squared_norms_and_outer_products(group) -> None:
    """Linear maps and gates cannot form ``|v|^2`` or ``v v^T``; the bilinear layer can.

    For O(5) only ``|v|^2``: the basis of ``Hom(T2, T2)`` (625 unknowns) takes seconds to
    compute, which the default hidden representation of O(5) avoids too."""
    scalar, vector, tensor = _reps(group)
    with_tensor = group.d <= 3
    torch.manual_seed(0)
    rep_out = scalar + tensor if with_tensor else scalar
    layer = EquivariantBilinear(vector, rep_out, vector, bias=False).double()
    v = _inputs(group.d, batch=20)
    target = v.pow(2).sum(1, keepdim=True)
    if with_tensor:
        target = torch.cat([target, torch.einsum("ni,nj->nij", v, v).flatten(1)], 1)
    assert _fit_weights(layer, v, target) < 1e-10
    # A linear function of v has no such fit: the best one leaves most of the target.
    linear_fit = torch.linalg.lstsq(v, target).solution
    assert float((v @ linear_fit - target).norm() / target.norm()) > 0.5


def test_bilinear_without_biases_is_homogeneous_of_degree_two() -> None:
    rep_in, rep_out = _inertia_reps()
    torch.manual_seed(0)
    layer = EquivariantBilinear(rep_in, rep_out, default_mid(O3()), bias=False).double()
    x = _inputs(rep_in.dim)
    with torch.no_grad():
        y, y2 = layer(x), layer(2 * x)
    torch.testing.assert_close(y2, 4 * y, rtol=1e-12, atol=1e-12)
    assert float((y2 - 2 * y).norm()) > 0.1 * float(y.norm())  # not linear


def test_relaxed_emlp_breaks_equivariance_and_projection_restores_it() -> None:
    rep_in, rep_out = _inertia_reps()
    torch.manual_seed(0)
    model = EMLP(rep_in, rep_out, num_layers=2).double()
    relaxed = equirelax.relax(model)
    # The declared sites: each block's linear map (not the head, not inside the bilinear map).
    assert list(equirelax.relaxed_layers(relaxed)) == ["blocks.0.linear", "blocks.1.linear"]
    # placement="all": also the three maps of each bilinear layer, each gate and the head.
    assert len(equirelax.relaxed_layers(equirelax.relax(model, placement="all"))) == 2 * 5 + 1
    x = _inputs(rep_in.dim)
    broken = _error(relaxed, x, model.action_in, model.action_out)
    assert broken.max > 1e-2
    projected = equirelax.project(relaxed)
    assert not equirelax.relaxed_layers(projected)
    assert _error(projected, x).max < TOL
    torch.testing.assert_close(projected(x), model(x))  # the same equivariant weights
    lie = metrics.lie_derivative(projected, x, projected.action_in, projected.action_out)
    assert lie.shape == (3, 8, rep_out.dim)
    assert float(lie.detach().abs().max()) < 1e-9
    lie_relaxed = metrics.lie_derivative(relaxed, x, model.action_in, model.action_out)
    assert float(lie_relaxed.detach().abs().max()) > 1e-3


def test_emlp_and_mlp_check_their_inputs() -> None:
    rep_in, rep_out = _inertia_reps()
    model = EMLP(rep_in, rep_out, num_layers=1)
    with pytest.raises(ValueError, match="x: expected size 20 along dimension -1"):
        model(torch.zeros(4, 19))
    with pytest.raises(ValueError, match="x: expected a tensor with 2 dimensions"):
        model(torch.zeros(4, 2, 20))
    with pytest.raises(TypeError, match=r"x: expected a torch\.Tensor"):
        model([[0.0] * 20])
    layer = EquivariantBilinear(rep_in, rep_out, default_mid(O3()))
    with pytest.raises(ValueError, match="x: expected size 20 along dimension -1"):
        layer(torch.zeros(4, 3))
    mlp = MLP(20, 9, hidden_features=8)
    assert mlp(torch.zeros(4, 20)).shape == (4, 9)
    with pytest.raises(ValueError, match="x: expected size 20 along dimension -1"):
        mlp(torch.zeros(4, 21))
    with pytest.raises(ValueError, match="hidden_features: expected a positive int"):
        MLP(20, 9, hidden_features=0)


def test_emlp_rejects_bad_representations() -> None:
    rep_in, rep_out = _inertia_reps()
    scalar = O3().trivial_representation()
    with pytest.raises(ValueError, match="num_layers: expected a positive int"):
        EMLP(rep_in, rep_out, num_layers=0)
    with pytest.raises(ValueError, match=r"hidden: expected a representation of O\(3\)"):
        EMLP(rep_in, rep_out, hidden=4 * Orthogonal(5).standard_representation())
    with pytest.raises(ValueError, match="hidden: expected at least one non-scalar block"):
        EMLP(rep_in, rep_out, hidden=8 * scalar)
    with pytest.raises(TypeError, match="mid: expected a Representation or None"):
        EMLP(rep_in, rep_out, mid="8x0e")
    with pytest.raises(TypeError, match="hidden: expected a Representation, an int or None"):
        EMLP(rep_in, rep_out, hidden=True)
    with pytest.raises(ValueError, match=r"linear: expected one of \('basis', 'projected'\)"):
        EMLP(rep_in, rep_out, linear="dense")
    assert EMLP(rep_in, rep_out, hidden=20).hidden == uniform_representation(20, O3())
    with pytest.raises(ValueError, match=r"representation_out: expected a representation of"):
        EquivariantBilinear(rep_in, SO3().standard_representation(), scalar)


def _flat_task(action_in, action_out, d_in: int, d_out: int) -> Task:
    split = (torch.zeros(4, d_in), torch.zeros(4, d_out))
    return Task("flat", train=split, val=split, action_in=action_in, action_out=action_out)


def test_registry_builds_emlp_and_mlp_for_flat_tasks_and_refuses_others() -> None:
    rep_in, rep_out = _inertia_reps()
    task = _flat_task(RepresentationAction(rep_in), RepresentationAction(rep_out), 20, 9)
    model = model_registry.build("emlp", task, num_layers=1)
    assert isinstance(model, EMLP)
    assert model.representation_in == rep_in
    assert model.representation_out == rep_out
    assert model_registry.MODELS["emlp"].equivariant
    mlp = model_registry.build("mlp", task, hidden_features=16)
    assert isinstance(mlp, MLP)
    assert (mlp.in_features, mlp.out_features) == (20, 9)
    # An invariant task (trivial output action): as many scalar outputs as target features.
    invariant = _flat_task(VectorAction(O3()), TrivialAction(O3()), 3, 2)
    assert model_registry.build("emlp", invariant, num_layers=1).representation_out.dim == 2

    points = Euclidean(O3())
    affine = _flat_task(PointAction(points), PointAction(points), 3, 3)
    with pytest.raises(ValueError, match="task: model 'emlp' needs action_in to be a Repr"):
        model_registry.build("emlp", affine)
    x = (torch.zeros(4, 5, 3), torch.zeros(4, 5, 3), torch.zeros(4, 5, 1))
    particles = Task(
        "particles",
        train=(x, x[0]),
        val=(x, x[0]),
        action_in=DirectSumAction(PointAction(points), VectorAction(points), TrivialAction(points)),
        action_out=PointAction(points),
    )
    with pytest.raises(ValueError, match=r"task: model 'emlp' needs flat \(N, d_in\) tensor"):
        model_registry.build("emlp", particles)
    assert model_registry.build("mlp", particles).num_particles == 5  # the particle MLP, as before


def _inertia_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``sum_i m_i (|r_i|^2 I - r_i r_i^T)`` for 5 masses (softplus of normals) and 5 positions."""
    masses = torch.nn.functional.softplus(torch.randn(n, 5, generator=generator))
    positions = torch.randn(n, 5, 3, generator=generator)
    eye = torch.eye(3)
    tensor = torch.einsum(
        "ni,nijk->njk",
        masses,
        positions.pow(2).sum(-1)[..., None, None] * eye
        - torch.einsum("nij,nik->nijk", positions, positions),
    )
    return torch.cat([masses, positions.flatten(1)], 1), tensor.flatten(1)


@pytest.mark.slow
def test_small_emlp_fits_the_inertia_function() -> None:
    """100 full-batch Adam steps on 300 systems (about 4 s on one CPU thread) bring the test
    MSE far below that of predicting 0."""
    gen = torch.Generator().manual_seed(0)
    x_train, y_train = _inertia_data(300, gen)
    x_test, y_test = _inertia_data(300, gen)
    rep_in, rep_out = _inertia_reps()
    scalar, vector, tensor = _reps(O3())
    torch.manual_seed(0)
    model = EMLP(rep_in, rep_out, hidden=16 * scalar + 16 * vector + 2 * tensor, num_layers=2,
                 mid=8 * scalar + 8 * vector)  # fmt: skip
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        optimiser.zero_grad()
        loss = torch.mean((model(x_train) - y_train) ** 2)
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        test_mse = float(torch.mean((model(x_test) - y_test) ** 2))
    baseline = float(torch.mean(y_test**2))  # predicting 0
    assert test_mse < 0.1 * baseline, (test_mse, baseline)
