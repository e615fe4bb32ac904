"""pytest's doctest collection of the library (``--doctest-modules`` on ``src/equirelax``): a
module built on an optional dependency that is not installed is not collected."""

import importlib.util

_OPTIONAL = {"equirelax/integrations/lightning.py": "lightning"}

collect_ignore = [
    path for path, dependency in _OPTIONAL.items() if importlib.util.find_spec(dependency) is None
]
