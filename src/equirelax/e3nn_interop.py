"""e3nn interoperability: relax e3nn's layers and measure them with their irreps.

:func:`equirelax.relax` relaxes e3nn's ``o3.Linear`` and ``o3.FullyConnectedTensorProduct``
out of the box: the first time it looks a layer up after e3nn has been imported, it registers
the entries of :data:`REGISTRATIONS` (a user's own :func:`~equirelax.register_free_branch`
for these types is kept), so ``import equirelax`` never imports e3nn. Each free branch is an
:class:`~equirelax.free_branches.E3nnFreeBranch` built from the layer's irreps, as the free
branches of equirelax's own layers are built from theirs:

- ``o3.Linear(irreps_in, irreps_out)``: a dense map ``R^{irreps_in.dim} -> R^{irreps_out.dim}``
  (as :class:`~equirelax.nn.EquivariantLinear`'s);
- ``o3.FullyConnectedTensorProduct(irreps_in1, irreps_in2, irreps_out)``: a dense map of both
  inputs, ``W [x, y] + b`` (as :class:`~equirelax.nn.SteerableLinear`'s on ``[x, a]``).

Each registration also gives the layer's actions (O(3) through ``irreps.D_from_matrix``,
:func:`~equirelax.actions.irreps_action`), so a relaxed e3nn layer carries ``action_in`` /
``action_out`` as CR's and RECM's per-layer signals need, and
:func:`equirelax.assert_equivariant` checks a bare e3nn layer without further arguments. The
metrics take e3nn irreps (or irreps strings) in place of actions
(:func:`~equirelax.actions.as_action`).

A layer built with ``internal_weights=False`` takes its weights in the call (``tp(x, y, w)``);
its free branch ignores them (they parametrise the equivariant map), so relaxing, training with
ACE, RPP or a penalty, and projecting work, but the registered actions cover the features only:
CR's and RECM's per-layer signals, which act on every positional argument of the layer, refuse
such a layer (``x: expected a tuple of 2 tensors``).

Other tensor products (``ElementwiseTensorProduct`` inside e3nn's ``Gate`` and
``NormActivation``, ``FullTensorProduct``) are not registered: they are the bilinear maps inside
nonlinearities, which relaxation leaves alone (SPEC 2.7); register them with
:func:`~equirelax.register_free_branch` (e.g. with :func:`tensor_product_free_branch`) to relax
them too.

Examples
--------
>>> import equirelax
>>> from e3nn import o3
>>> model = nn.Sequential(o3.Linear("2x0e + 1x1o", "1x0e + 2x1o"))
>>> relaxed = equirelax.relax(model)
>>> type(relaxed[0].free).__name__, relaxed[0].action_out
('E3nnFreeBranch', RepresentationAction(1x[O(3).0e] + 2x[O(3).1o]))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from e3nn import o3
from torch import nn

from equirelax.actions import Action, DirectSumAction, irreps_action
from equirelax.free_branches import E3nnFreeBranch

__all__ = [
    "REGISTRATIONS",
    "linear_actions",
    "linear_free_branch",
    "tensor_product_actions",
    "tensor_product_free_branch",
]


def linear_free_branch(layer: o3.Linear) -> E3nnFreeBranch:
    """The free branch of ``o3.Linear``: ``W x + b``, ``irreps_in.dim -> irreps_out.dim``."""
    return E3nnFreeBranch([layer.irreps_in.dim], layer.irreps_out.dim)


def linear_actions(layer: o3.Linear) -> tuple[Action, Action]:
    """O(3) on ``o3.Linear``'s input and output irreps."""
    return irreps_action(layer.irreps_in), irreps_action(layer.irreps_out)


def tensor_product_free_branch(layer: o3.TensorProduct) -> E3nnFreeBranch:
    """The free branch of a tensor product of ``x`` and ``y``: ``W [x, y] + b``,
    ``irreps_in1.dim + irreps_in2.dim -> irreps_out.dim``."""
    return E3nnFreeBranch([layer.irreps_in1.dim, layer.irreps_in2.dim], layer.irreps_out.dim)


def tensor_product_actions(layer: o3.TensorProduct) -> tuple[Action, Action]:
    """O(3) on a tensor product's inputs ``(x, y)`` (a direct sum) and output."""
    action_in = DirectSumAction(irreps_action(layer.irreps_in1), irreps_action(layer.irreps_in2))
    return action_in, irreps_action(layer.irreps_out)


REGISTRATIONS: dict[
    type[nn.Module],
    tuple[Callable[[Any], nn.Module], Callable[[Any], tuple[Action, Action]]],
] = {
    o3.Linear: (linear_free_branch, linear_actions),
    o3.FullyConnectedTensorProduct: (tensor_product_free_branch, tensor_product_actions),
}
"""``layer type -> (free-branch factory, actions)``, registered by :func:`equirelax.relax`."""
