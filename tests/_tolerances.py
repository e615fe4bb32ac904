"""The tests' tolerances, in one place (import them: ``from _tolerances import ATOL, F64``).

``ATOL[dtype]`` is the absolute tolerance of a check that holds exactly in exact arithmetic
(equivariance of a layer, a group identity, a closed-form value) when computed in ``dtype``;
use it with the ``dtype`` fixture of ``conftest.py``. Tests that document a measured bound keep
it as a named constant of their own, with the measurement in a comment.
"""

import torch

F32, F64 = torch.float32, torch.float64
ATOL = {F32: 1e-4, F64: 1e-10}
