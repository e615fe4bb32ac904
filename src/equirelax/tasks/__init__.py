"""Tasks: data splits with their symmetry actions, a loss and a metric.

The built-in tasks by name, with their run presets, are the experiments' registry
(:mod:`equirelax.experiments.task_registry`; ``equirelax tasks`` prints it).
"""

from equirelax.tasks.base import Split, Task
from equirelax.tasks.breaking import (
    bipartite_graph,
    bipartite_task,
    colouring_failure,
    colouring_loss,
    polygon_failure,
    polygon_loss,
    polygon_task,
    set_decoding_failure,
    set_decoding_loss,
    set_decoding_task,
)
from equirelax.tasks.images import (
    classification_error,
    cross_entropy,
    fashion_mnist_task,
    glyphs_task,
    mnist_task,
    parse_planar_group,
)
from equirelax.tasks.nbody import nbody_task, simulate
from equirelax.tasks.smoke import (
    rollout,
    root_mean_squared_error,
    simulate_plumes,
    smoke_task,
    smoke_task_from_frames,
)
from equirelax.tasks.synthetic import (
    gap_dial_function,
    gap_dial_task,
    inertia_task,
    inertia_tensor,
    modified_inertia_task,
    modified_inertia_tensor,
    o5_function,
    o5_task,
)

__all__ = [
    "Split",
    "Task",
    "bipartite_graph",
    "bipartite_task",
    "classification_error",
    "colouring_failure",
    "colouring_loss",
    "cross_entropy",
    "fashion_mnist_task",
    "gap_dial_function",
    "gap_dial_task",
    "glyphs_task",
    "inertia_task",
    "inertia_tensor",
    "mnist_task",
    "modified_inertia_task",
    "modified_inertia_tensor",
    "nbody_task",
    "o5_function",
    "o5_task",
    "parse_planar_group",
    "polygon_failure",
    "polygon_loss",
    "polygon_task",
    "rollout",
    "root_mean_squared_error",
    "set_decoding_failure",
    "set_decoding_loss",
    "set_decoding_task",
    "simulate",
    "simulate_plumes",
    "smoke_task",
    "smoke_task_from_frames",
]
