"""Tasks: data splits with their symmetry actions, a loss and a metric.

:data:`TASKS` lists the built-in tasks by name (``equirelax tasks`` prints it); :func:`get`
builds one.
"""

from equirelax.tasks.base import Split, Task, mean_squared_error
from equirelax.tasks.nbody import nbody_task, simulate
from equirelax.tasks.registry import TASKS, TaskInfo, get

__all__ = [
    "TASKS",
    "Split",
    "Task",
    "TaskInfo",
    "get",
    "mean_squared_error",
    "nbody_task",
    "simulate",
]
