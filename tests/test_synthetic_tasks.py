"""The synthetic O(3)/O(5) tasks of :mod:`equirelax.tasks.synthetic`: exact, broken and dialled
symmetry of the target functions, the known symmetry gap, the splits and the registry."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from _tolerances import ATOL, F64
from equirelax.experiments import task_registry
from equirelax.groups import O2, O3, Orthogonal
from equirelax.metrics import equivariance_error
from equirelax.tasks import (
    gap_dial_function,
    gap_dial_task,
    inertia_task,
    inertia_tensor,
    modified_inertia_task,
    modified_inertia_tensor,
    o5_function,
    o5_task,
)
from equirelax.tasks.base import Task

FLOAT32_RTOL = 1e-5  # stored float32 targets against the float64 target function
SMALL = {"train_size": 64, "val_size": 32, "test_size": 16}
BUILDERS: dict[str, Callable[..., Task]] = {
    "inertia": inertia_task,
    "modified-inertia": modified_inertia_task,
    "o5": o5_task,
    "gap-dial": gap_dial_task,
}
SHAPES = {"inertia": (20, 9), "modified-inertia": (20, 9), "o5": (10, 1), "gap-dial": (6, 3)}
E_Z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)


def _generator(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _axis_stabiliser(n: int, generator: torch.Generator) -> Tensor:
    """``n`` random elements ``diag(Q, s)`` of O(3), ``Q`` in O(2), ``s = +-1``: the R with
    ``R e_z = +-e_z``."""
    out = torch.zeros(n, 3, 3, dtype=torch.float64)
    out[:, :2, :2] = O2().sample(n, generator, dtype=torch.float64)
    out[:, 2, 2] = 1.0 - 2.0 * torch.randint(2, (n,), generator=generator).to(torch.float64)
    return out


def _split_inertia(inputs: Tensor, k: int = 5) -> tuple[Tensor, Tensor]:
    return inputs[:, :k], inputs[:, k:].reshape(-1, k, 3)


def _relative_error(moved_then_f: Tensor, f_then_moved: Tensor) -> Tensor:
    diff = torch.linalg.vector_norm(moved_then_f - f_then_moved, dim=-1)
    return diff / torch.linalg.vector_norm(f_then_moved, dim=-1)


# --- inertia ------------------------------------------------------------------------------------


def test_inertia_targets_are_exactly_o3_equivariant_under_the_task_actions() -> None:
    task = inertia_task(**SMALL)
    x = task.train[0].double()
    g = O3().sample(x.shape[0], _generator(), dtype=torch.float64)
    moved = task.action_in(g, x)
    assert torch.equal(moved[:, :5], x[:, :5])  # masses are scalars
    moved_then_f = inertia_tensor(*_split_inertia(moved)).reshape(-1, 9)
    f_then_moved = task.action_out(g, inertia_tensor(*_split_inertia(x)).reshape(-1, 9))
    torch.testing.assert_close(moved_then_f, f_then_moved, atol=ATOL[F64], rtol=0)
    # the flattening is row-major: action_out(g) vec(I) = vec(R I R^T)
    matrices = inertia_tensor(*_split_inertia(x))
    torch.testing.assert_close(
        f_then_moved.reshape(-1, 3, 3), g @ matrices @ g.transpose(1, 2), atol=ATOL[F64], rtol=0
    )


def test_inertia_task_targets_are_the_inertia_tensor_of_its_inputs() -> None:
    task = inertia_task(**SMALL)
    x, y = task.train
    masses, positions = _split_inertia(x.double())
    assert bool((masses > 0).all())  # softplus masses
    expected = inertia_tensor(masses, positions).reshape(-1, 9).float()
    torch.testing.assert_close(y, expected, rtol=FLOAT32_RTOL, atol=1e-6)
    torch.testing.assert_close(task.extra["target_function"](x.double()).float(), y)


def test_inertia_tensor_is_symmetric_psd_with_the_trace_of_its_definition() -> None:
    gen = _generator(1)
    masses = torch.rand(50, 5, generator=gen, dtype=torch.float64)
    positions = torch.randn(50, 5, 3, generator=gen, dtype=torch.float64)
    inertia = inertia_tensor(masses, positions)
    assert torch.equal(inertia, inertia.transpose(1, 2))
    assert float(torch.linalg.eigvalsh(inertia).min()) > -ATOL[F64]
    # tr(|r|^2 Id - r r^T) = 2 |r|^2; and a single unit mass on the x axis gives diag(0, 1, 1)
    trace = torch.diagonal(inertia, dim1=1, dim2=2).sum(-1)
    expected = 2 * (masses * (positions**2).sum(-1)).sum(-1)
    torch.testing.assert_close(trace, expected, atol=ATOL[F64], rtol=0)
    one = inertia_tensor(torch.ones(1, 1), torch.tensor([[[1.0, 0.0, 0.0]]]))
    torch.testing.assert_close(one[0], torch.diag(torch.tensor([0.0, 1.0, 1.0])))


# --- modified inertia ---------------------------------------------------------------------------


def test_modified_inertia_is_not_o3_equivariant_but_is_about_the_z_axis() -> None:
    task = modified_inertia_task(**SMALL)
    x = task.train[0].double()
    target = task.extra["target_function"]
    gen = _generator(2)
    g = O3().sample(16, gen, dtype=torch.float64)
    broken = equivariance_error(target, x, task.action_in, task.action_out, elements=g)
    assert broken.mean > 0.05
    h = _axis_stabiliser(16, gen)
    kept = equivariance_error(target, x, task.action_in, task.action_out, elements=h)
    assert kept.max_absolute < ATOL[F64]


def test_modified_inertia_adds_strength_times_i_ez_ez_transposed() -> None:
    task = modified_inertia_task(**SMALL, strength=0.7)
    masses, positions = _split_inertia(task.train[0].double())
    inertia = inertia_tensor(masses, positions)
    expected = inertia + 0.7 * (inertia @ E_Z).unsqueeze(-1) * E_Z
    torch.testing.assert_close(
        modified_inertia_tensor(masses, positions, 0.7), expected, atol=ATOL[F64], rtol=0
    )
    torch.testing.assert_close(task.train[1], expected.reshape(-1, 9).float())
    assert task.extra["strength"] == 0.7
    assert "e_z" in task.extra["exact_symmetry"]
    # same inputs as the inertia task; strength 0 gives its targets
    plain = inertia_task(**SMALL)
    assert torch.equal(task.train[0], plain.train[0])
    assert torch.equal(modified_inertia_task(**SMALL, strength=0.0).train[1], plain.train[1])


# --- O(5) ---------------------------------------------------------------------------------------


def test_o5_function_is_o5_invariant() -> None:
    gen = _generator(3)
    x1, x2 = torch.randn(2, 200, 5, generator=gen, dtype=torch.float64)
    g = Orthogonal(5).sample(200, gen, dtype=torch.float64)
    assert bool((torch.linalg.det(g) < 0).any())  # reflections are tested too
    moved = o5_function(torch.einsum("bij,bj->bi", g, x1), torch.einsum("bij,bj->bi", g, x2))
    torch.testing.assert_close(moved, o5_function(x1, x2), atol=ATOL[F64], rtol=0)
    # and it is not a constant: the check above could not pass by accident
    assert float(o5_function(x1, x2).std()) > 1.0


def test_o5_function_values_by_hand() -> None:
    # |x1| = 1, |x2| = 2, orthogonal: sin 1 - 8 / 2 + 0; parallel (x2 = 2 x1): sin 1 - 4 + 1
    x1 = torch.tensor([[1.0, 0, 0, 0, 0], [1.0, 0, 0, 0, 0]], dtype=torch.float64)
    x2 = torch.tensor([[0.0, 2, 0, 0, 0], [2.0, 0, 0, 0, 0]], dtype=torch.float64)
    expected = torch.tensor([[math.sin(1) - 4], [math.sin(1) - 3]], dtype=torch.float64)
    torch.testing.assert_close(o5_function(x1, x2), expected)


def test_o5_task_is_invariant_under_its_actions_and_standardised() -> None:
    task = o5_task(**SMALL)
    x, y = task.train
    error = equivariance_error(
        task.extra["target_function"],
        x.double(),
        task.action_in,
        task.action_out,
        num_samples=8,
        generator=_generator(4),
    )
    assert error.max_absolute < ATOL[F64]
    assert abs(float(y.double().mean())) < 1e-5
    assert abs(float(y.double().std(correction=0)) - 1.0) < 1e-5
    raw = y.double() * task.extra["target_std"] + task.extra["target_mean"]
    expected = o5_function(x[:, :5].double(), x[:, 5:].double())
    torch.testing.assert_close(raw, expected, rtol=FLOAT32_RTOL, atol=1e-4)


# --- gap dial -----------------------------------------------------------------------------------


def _gap_difference(delta: float, x1: Tensor, x2: Tensor, g: Tensor) -> Tensor:
    """``f(g x) - g f(x)`` for the gap-dial target."""
    moved = gap_dial_function(x1 @ g.transpose(1, 2)[0], x2 @ g.transpose(1, 2)[0], delta)
    return moved - gap_dial_function(x1, x2, delta) @ g.transpose(1, 2)[0]


def test_gap_dial_at_zero_is_exactly_equivariant_under_the_task_actions() -> None:
    task = gap_dial_task(0.0, **SMALL)
    error = equivariance_error(
        task.extra["target_function"],
        task.train[0].double(),
        task.action_in,
        task.action_out,
        num_samples=16,
        generator=_generator(5),
    )
    assert error.max_absolute < ATOL[F64]
    broken = gap_dial_task(0.5, **SMALL)
    assert (
        equivariance_error(
            broken.extra["target_function"],
            broken.train[0].double(),
            broken.action_in,
            broken.action_out,
            num_samples=16,
            generator=_generator(5),
        ).mean
        > 0.01
    )


def test_gap_dial_equivariance_error_grows_linearly_with_delta() -> None:
    gen = _generator(6)
    x1, x2 = torch.randn(2, 100, 3, generator=gen, dtype=torch.float64)
    g = O3().sample(1, gen, dtype=torch.float64)
    unit = _gap_difference(1.0, x1, x2, g)
    assert float(unit.norm(dim=-1).mean()) > 0.1
    for delta in (0.0, 0.25, 2.0, 10.0):
        torch.testing.assert_close(
            _gap_difference(delta, x1, x2, g), delta * unit, atol=1e-9, rtol=0
        )


def test_gap_dial_breaking_term_is_equivariant_about_the_z_axis() -> None:
    gen = _generator(7)
    x1, x2 = torch.randn(2, 100, 3, generator=gen, dtype=torch.float64)
    for h in _axis_stabiliser(8, gen):
        difference = _gap_difference(3.0, x1, x2, h.unsqueeze(0))
        assert float(difference.abs().max()) < ATOL[F64]


def test_gap_dial_records_the_exact_symmetry_gap() -> None:
    delta = 1.5
    task = gap_dial_task(delta, **SMALL)
    gap = task.extra["symmetry_gap"]
    assert task.extra["delta"] == delta
    assert gap == pytest.approx(2 * delta**2 / 3)
    assert task.extra["symmetry_gap_mse"] == pytest.approx(2 * delta**2 / 9)
    assert task.extra["relative_gap"] == pytest.approx(math.sqrt(gap / (24 + delta**2)))
    # Monte Carlo: the Haar average of the linear breaking map x1 -> e_z e_z^T x1 is
    # E_g g^T e_z e_z^T g = Id / 3, and E ||(I - P_G) y||^2 = delta^2 ||e_z e_z^T - M||_F^2
    gen = _generator(8)
    g = O3().sample(20000, gen, dtype=torch.float64)
    average = (g.transpose(1, 2) @ torch.outer(E_Z, E_Z) @ g).mean(0)
    torch.testing.assert_close(average, torch.eye(3, dtype=torch.float64) / 3, atol=0.01, rtol=0)
    estimate = delta**2 * float(((torch.outer(E_Z, E_Z) - average) ** 2).sum())
    assert estimate == pytest.approx(gap, rel=0.03)
    x1, x2 = torch.randn(2, 200000, 3, generator=gen, dtype=torch.float64)
    energy = float((gap_dial_function(x1, x2, delta) ** 2).sum(-1).mean())
    assert energy == pytest.approx(task.extra["target_energy"], rel=0.05)


def test_gap_dial_function_values_by_hand() -> None:
    x1 = torch.tensor([[1.0, 2.0, 3.0]])
    x2 = torch.tensor([[0.0, 1.0, -1.0]])
    # x1 . x2 = -1: -x1 + x2 = (-1, -1, -4); breaking: delta * 3 on z
    torch.testing.assert_close(gap_dial_function(x1, x2), torch.tensor([[-1.0, -1.0, -4.0]]))
    torch.testing.assert_close(gap_dial_function(x1, x2, 2.0), torch.tensor([[-1.0, -1.0, 2.0]]))


def test_gap_dial_task_targets_match_the_function() -> None:
    task = gap_dial_task(0.8, **SMALL)
    x, y = task.train
    expected = gap_dial_function(x[:, :3].double(), x[:, 3:].double(), 0.8).float()
    torch.testing.assert_close(y, expected)
    assert torch.equal(y[:, :2], gap_dial_task(0.0, **SMALL).train[1][:, :2])  # only z changes


# --- splits -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILDERS)
def test_splits_have_the_shapes_dtype_and_actions_of_the_task(name: str) -> None:
    task = BUILDERS[name](**SMALL)
    d_in, d_out = SHAPES[name]
    assert task.name == name
    for split, size in (("train", 64), ("val", 32), ("test", 16)):
        inputs, targets = getattr(task, split)
        assert inputs.shape == (size, d_in)
        assert targets.shape == (size, d_out)
        assert inputs.dtype == targets.dtype == torch.float32
        assert bool(torch.isfinite(inputs).all() and torch.isfinite(targets).all())
    assert task.action_in.representation.dim == d_in
    assert task.action_out.representation.dim == d_out
    assert BUILDERS[name](train_size=4, val_size=4, test_size=0).test is None


@pytest.mark.parametrize("name", BUILDERS)
def test_splits_are_deterministic_prefix_stable_and_distinct(name: str) -> None:
    build = BUILDERS[name]
    first, again = build(**SMALL, seed=3), build(**SMALL, seed=3)
    other = build(**SMALL, seed=4)
    longer = build(train_size=200, val_size=100, test_size=50, seed=3)
    for split, size in (("train", 64), ("val", 32), ("test", 16)):
        x, y = getattr(first, split)
        assert torch.equal(x, getattr(again, split)[0])
        assert torch.equal(y, getattr(again, split)[1])
        assert not torch.equal(x, getattr(other, split)[0])
        assert torch.equal(x, getattr(longer, split)[0][:size])
        if name != "o5":  # o5's standardisation depends on the training split
            assert torch.equal(y, getattr(longer, split)[1][:size])
    assert not torch.equal(first.train[0][:16], first.val[0][:16])
    assert not torch.equal(first.val[0][:16], first.test[0])


# --- validation and registry --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("build", "options", "error", "message"),
    [
        (inertia_task, {"train_size": 0}, ValueError, "train_size: expected a positive int"),
        (inertia_task, {"val_size": 1.5}, TypeError, "val_size: expected a positive int"),
        (inertia_task, {"test_size": -1}, ValueError, "test_size: expected an int >= 0"),
        (inertia_task, {"seed": -1}, ValueError, "seed: expected an int >= 0, received -1"),
        (inertia_task, {"num_masses": 0}, ValueError, "num_masses: expected a positive int"),
        (inertia_task, {"progress": "yes"}, TypeError, "progress: expected a bool"),
        (modified_inertia_task, {"strength": math.nan}, ValueError, "strength: expected a finite"),
        (modified_inertia_task, {"strength": -0.3}, ValueError, "received -0.3"),
        (o5_task, {"train_size": 1}, ValueError, "train_size: expected an int >= 2, received 1"),
        (gap_dial_task, {"delta": -0.1}, ValueError, "delta: expected a finite number >= 0"),
        (gap_dial_task, {"delta": math.inf}, ValueError, "delta: expected a finite number >= 0"),
        (gap_dial_task, {"delta": "0.5"}, TypeError, "delta: expected a non-negative number"),
    ],
)
def test_bad_task_arguments_raise_errors_naming_them(
    build: Callable[..., Task], options: dict[str, object], error: type, message: str
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace("+", r"\+")):
        build(**{**SMALL, **options})


def test_target_functions_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="positions: expected shape"):
        inertia_tensor(torch.ones(2, 5), torch.ones(2, 4, 3))
    with pytest.raises(ValueError, match="positions: expected size 3"):
        inertia_tensor(torch.ones(2, 5), torch.ones(2, 5, 2))
    with pytest.raises(ValueError, match="x2: expected the shape of x1"):
        o5_function(torch.ones(2, 5), torch.ones(3, 5))
    with pytest.raises(ValueError, match="x1: expected size 3"):
        gap_dial_function(torch.ones(2, 5), torch.ones(2, 5))
    with pytest.raises(ValueError, match="delta: expected a finite number >= 0"):
        gap_dial_function(torch.ones(2, 3), torch.ones(2, 3), -1.0)
    with pytest.raises(ValueError, match=r"inputs: expected shape \(B, 6\)"):
        gap_dial_task(**SMALL).extra["target_function"](torch.ones(2, 5))


def test_registry_lists_the_tasks_with_presets_the_cli_can_build() -> None:
    for name, symmetry in [
        ("inertia", "O(3)"),
        ("modified-inertia", "O(3), broken to O(2) about z"),
        ("o5", "O(5)"),
        ("gap-dial", "O(3) + delta * breaking"),
    ]:
        info = task_registry.TASKS[name]
        assert info.builder is BUILDERS[name]
        assert info.symmetry == symmetry
        assert info.models == ("emlp", "mlp")
        assert info.full["task"] == {"train_size": 1000, "val_size": 1000, "test_size": 5000}
        assert info.quick["train"]["epochs"] == 100
        # the command line passes the preset's task options and progress
        task = info.builder(**{**info.quick["task"], "progress": False})
        assert task.train[0].shape[0] == 1000
        assert task.test[0].shape[0] == 1000
    # the EMLP tasks train as the official codes (a constant rate, for the EMLP paper's 900
    # epochs at N = 1000 or RPP's 500 on modified inertia); gap-dial keeps its cosine schedule
    full = {name: task_registry.TASKS[name].full["train"] for name in BUILDERS}
    assert {name: (train["epochs"], train["lr_schedule"]) for name, train in full.items()} == {
        "inertia": (900, "constant"),
        "o5": (900, "constant"),
        "modified-inertia": (500, "constant"),
        "gap-dial": (500, "cosine"),
    }
    assert task_registry.TASKS["inertia"].reference == {"emlp": 0.136, "mlp": 3.24}
    assert task_registry.TASKS["o5"].reference == {}
    assert task_registry.TASKS["inertia"].quick is not task_registry.TASKS["o5"].quick
    dial = task_registry.get("gap-dial", delta=0.5, **SMALL)
    assert dial.name == "gap-dial"
    assert dial.extra["delta"] == 0.5
