"""The experiments floor: everything that names a task, model, arm, preset or results file.

* :mod:`~equirelax.experiments.task_registry` and :mod:`~equirelax.experiments.model_registry`:
  the built-in tasks and models by name, with their run presets;
* :mod:`~equirelax.experiments.compare`: every strategy and seed on one task (resumable);
* :mod:`~equirelax.experiments.adapt`: equivariant adaptation by canonicalization, six arms;
* :mod:`~equirelax.experiments.breaking`: the symmetry-breaking arms;
* :mod:`~equirelax.experiments.report`: summaries, tables and plots;
* :mod:`~equirelax.experiments.cli`: the ``equirelax`` command.

It is built on the library (:mod:`equirelax`), which never imports it (an import contract in
``pyproject.toml``, checked by CI).
"""

__all__: list[str] = []  # the submodules are the interface
