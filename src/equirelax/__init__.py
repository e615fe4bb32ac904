"""equirelax: train neural networks between strict equivariance and none.

The public surface: groups and actions (:mod:`equirelax.groups`, :mod:`equirelax.actions`,
:mod:`equirelax.representations`), the relaxed layer (:class:`Relaxed`, :func:`relax`,
:func:`relaxed_layers`), projection (:func:`project`), strategies and the training engine
(:mod:`equirelax.strategies`, :func:`train`), tasks (:mod:`equirelax.tasks`), measurements
(:mod:`equirelax.metrics`, :func:`assert_equivariant`, the symmetry gap :mod:`equirelax.gap`),
equivariant building blocks (:mod:`equirelax.nn`), canonicalization of any predictor
(:mod:`equirelax.canonical`) and e3nn interoperability (:mod:`equirelax.e3nn_interop`: e3nn's
layers relax, and their irreps stand in for actions).

Above the library, :mod:`equirelax.experiments` holds what names a task, model, arm or preset:
the registries, the comparison and adaptation runners, the reports and the ``equirelax``
command line. The library never imports it.
"""

from typing import TYPE_CHECKING

from equirelax._lazy import lazy_exports

__all__ = [
    "DenseFreeBranch",
    "NonFiniteLossError",
    "Relaxed",
    "TrainConfig",
    "TrainResult",
    "actions",
    "assert_equivariant",
    "canonical",
    "e3nn_interop",
    "equivariance_error",
    "free_branches",
    "gap",
    "groups",
    "invariance_error",
    "layer_actions",
    "metrics",
    "nn",
    "project",
    "register_free_branch",
    "relax",
    "relaxation_sites",
    "relaxed_layers",
    "representations",
    "strategies",
    "tasks",
    "train",
]
__version__ = "0.1.0"

_SUBMODULES = (
    "actions",
    "canonical",
    "e3nn_interop",
    "engine",
    "free_branches",
    "gap",
    "groups",
    "losses",
    "metrics",
    "nn",
    "outputs",
    "projection",
    "relaxed",
    "representations",
    "strategies",
    "tasks",
)
_ATTRIBUTES = {
    "NonFiniteLossError": "equirelax.engine",
    "TrainConfig": "equirelax.engine",
    "TrainResult": "equirelax.engine",
    "train": "equirelax.engine",
    "DenseFreeBranch": "equirelax.free_branches",
    "assert_equivariant": "equirelax.metrics",
    "equivariance_error": "equirelax.metrics",
    "invariance_error": "equirelax.metrics",
    "project": "equirelax.projection",
    "Relaxed": "equirelax.relaxed",
    "layer_actions": "equirelax.relaxed",
    "register_free_branch": "equirelax.relaxed",
    "relax": "equirelax.relaxed",
    "relaxation_sites": "equirelax.relaxed",
    "relaxed_layers": "equirelax.relaxed",
}
__getattr__, __dir__ = lazy_exports(__name__, _SUBMODULES, _ATTRIBUTES)

if TYPE_CHECKING:
    from equirelax import (
        actions,
        canonical,
        e3nn_interop,
        free_branches,
        gap,
        groups,
        metrics,
        nn,
        representations,
        strategies,
        tasks,
    )
    from equirelax.engine import NonFiniteLossError, TrainConfig, TrainResult, train
    from equirelax.free_branches import DenseFreeBranch
    from equirelax.metrics import assert_equivariant, equivariance_error, invariance_error
    from equirelax.projection import project
    from equirelax.relaxed import (
        Relaxed,
        layer_actions,
        register_free_branch,
        relax,
        relaxation_sites,
        relaxed_layers,
    )
