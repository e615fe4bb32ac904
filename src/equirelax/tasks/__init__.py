"""Tasks: data splits with their symmetry actions, a loss and a metric."""

from equirelax.tasks.base import Split, Task, mean_squared_error

__all__ = ["Split", "Task", "mean_squared_error"]
