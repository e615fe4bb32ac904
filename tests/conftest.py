"""Shared fixtures: a float dtype fixture and the tolerances used with it."""

import pytest
import torch

ATOL = {torch.float32: 1e-4, torch.float64: 1e-10}

# The tests run many tiny ops; one intra-op thread avoids thread start-up and contention costs
# (several times faster on a 2-core CI machine running other work).
torch.set_num_threads(1)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    """Run a test in float32 and float64; look the tolerance up in ``ATOL``."""
    return request.param


@pytest.fixture
def generator():
    """A seeded torch generator so sampled group elements are reproducible."""
    return torch.Generator().manual_seed(1234)
