"""``torch.compile`` on every built-in model: one graph (``fullgraph=True``), and the compiled
forward output and parameter gradients equal eager ones to float32 tolerance, for the plain
(equivariant) model and its relaxation (:func:`equirelax.relax` where the model declares
relaxation sites; the ``breaking="relaxed"`` arm for the symmetry-breaking models, whose plain
model is the ``"strict"`` arm). ``mlp`` and ``cnn`` have nothing to relax.

Compilation dominates the time (inductor compiles C++ kernels), so the models are tiny and each
case compiles one forward and one backward graph; the compiled model runs first, so that no
eager call has filled a cache the compiled code would then only read. The canonicalized MLP runs
in float64: its Gram-Schmidt frame amplifies rounding, so that eager float32 gradients are
already ~5e-4 (relative) off float64 ones, and only float64 tells a real difference apart.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import equirelax
from equirelax._batches import index
from equirelax.experiments import model_registry, task_registry
from equirelax.tasks import Task, smoke_task_from_frames

# case: (model, task, task options, tiny model options, how to relax it: "relax"
# (equirelax.relax), "breaking" (the arm "relaxed" against "strict") or None)
MODELS: dict[str, tuple[str, str, dict[str, Any], dict[str, Any], str | None]] = {
    "egnn": ("egnn", "nbody", {}, {"hidden_features": 8, "num_layers": 1}, "relax"),
    "segnn": ("segnn", "nbody", {}, {"hidden_irreps": "4x0e + 2x1o", "num_layers": 1}, "relax"),
    "emlp": ("emlp", "o5", {}, {"num_layers": 1}, "relax"),
    "mlp": ("mlp", "nbody", {}, {"hidden_features": 8, "num_layers": 1}, None),
    "mlp-flat": ("mlp", "o5", {}, {"hidden_features": 8, "num_layers": 1}, None),
    "cnn": ("cnn", "glyphs", {}, {"hidden": 4}, None),
    "canon-mlp": (
        "canon-mlp",
        "nbody",
        {},
        {"canonicalizer_hidden": 4, "hidden_features": 8, "num_layers": 1},
        "relax",
    ),
    # the symmetry-breaking objects unroll a loop over the items: few items
    "polygon-net": ("polygon-net", "polygon", {"vertices": (3, 4)}, {"hidden": 8}, "breaking"),
    "colouring-gnn": (
        "colouring-gnn",
        "bipartite",
        {"nodes": 4, "families": ("cycle",)},
        {"hidden": 8, "layers": 1},
        "breaking",
    ),
    "set-decoder": (
        "set-decoder",
        "set-decoding",
        {"slots": 2, "alphabet": 4},
        {"hidden": 8},
        "breaking",
    ),
    # the smoke task from small synthetic frames (its own data needs PhiFlow)
    "smoke-cnn": ("smoke-cnn", "smoke", {}, {"hidden": 4, "layers": 2}, None),
    "smoke-gcnn": ("smoke-gcnn", "smoke", {}, {"hidden": 2, "layers": 2}, "relax"),
    "smoke-rgcnn": ("smoke-rgcnn", "smoke", {}, {"hidden": 2, "layers": 2}, None),
}
DOUBLE = {"canon-mlp"}


def _task(name: str, options: dict[str, Any]) -> Task:
    if name == "smoke":
        frames = torch.randn(2, 170, 2, 8, 8, generator=torch.Generator().manual_seed(0))
        return smoke_task_from_frames(frames, domain=[1])
    return task_registry.get(name, train_size=2, val_size=1, test_size=1, **options)


CASES = [pytest.param(case, False, id=case) for case in MODELS] + [
    pytest.param(case, True, id=f"{case}-relaxed")
    for case, (*_, how) in MODELS.items()
    if how is not None
]


def test_every_built_in_model_has_a_case() -> None:
    assert {model for model, *_ in MODELS.values()} == set(model_registry.MODELS)


def _model(case: str, relaxed: bool) -> tuple[nn.Module, tuple[Any, ...]]:
    name, task_name, task_options, options, how = MODELS[case]
    task = _task(task_name, task_options)
    inputs = index(task.train[0], torch.arange(2))
    inputs = inputs if isinstance(inputs, tuple) else (inputs,)
    torch.manual_seed(0)
    if how == "breaking":
        options = {**options, "breaking": "relaxed" if relaxed else "strict"}
    model = model_registry.build(name, task, **options)
    if relaxed and how == "relax":
        model = equirelax.relax(model)
    if case in DOUBLE:
        model, inputs = model.double(), tuple(x.double() for x in inputs)
    return model, inputs


def _loss(out: Any) -> Tensor:
    if isinstance(out, Tensor):
        return out.square().mean()
    return sum(_loss(o) for o in out if o is not None)


def _run(model: nn.Module, call: Any, inputs: tuple[Any, ...]) -> tuple[Any, dict[str, Tensor]]:
    model.zero_grad(set_to_none=True)
    out = call(*inputs)
    _loss(out).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


# the models whose capture needed work (e3nn Irreps guards, a data-dependent frame check, a
# data-dependent loop exit), run by default; every case runs under the ``compile`` marker
CAPTURED_BY_DEFAULT = ("segnn-relaxed", "canon-mlp-relaxed", "polygon-net-relaxed")


@pytest.mark.parametrize(
    ("case", "relaxed"),
    [
        param
        if param.id in CAPTURED_BY_DEFAULT
        else pytest.param(*param.values, id=param.id, marks=pytest.mark.compile)
        for param in CASES
    ],
)
def test_every_model_is_captured_in_one_graph(case: str, relaxed: bool) -> None:
    """Dynamo and AOT autograd (the ``aot_eager`` backend: inductor's input, without its C++
    code generation) capture every model in one graph with the eager forward and backward."""
    _check_compiled(case, relaxed, backend="aot_eager")


@pytest.mark.slow
def test_inductor_compiled_egnn_matches_eager() -> None:
    """``torch.compile`` with its default backend on the relaxed EGNN (tens of seconds of C++
    compilation on a cold cache)."""
    _check_compiled("egnn", True, backend="inductor")


@pytest.mark.compile
@pytest.mark.parametrize(("case", "relaxed"), CASES)
def test_inductor_compiled_model_matches_eager(case: str, relaxed: bool) -> None:
    """Every model with inductor: minutes of C++ compilation on a cold cache, so deselected by
    default (``pytest -m compile`` runs them)."""
    _check_compiled(case, relaxed, backend="inductor")


def _check_compiled(case: str, relaxed: bool, backend: str) -> None:
    torch._dynamo.reset()
    model, inputs = _model(case, relaxed)
    compiled = torch.compile(model, fullgraph=True, backend=backend)
    compiled_out, compiled_grads = _run(model, compiled, inputs)
    eager_out, eager_grads = _run(model, model, inputs)
    tol = {} if case in DOUBLE else {"rtol": 1e-4, "atol": 1e-5}  # float64: the defaults
    torch.testing.assert_close(compiled_out, eager_out, **tol)
    assert compiled_grads.keys() == eager_grads.keys()
    assert eager_grads
    for key, grad in eager_grads.items():
        torch.testing.assert_close(
            compiled_grads[key], grad, **tol, msg=lambda m, k=key: f"{k}: {m}"
        )
