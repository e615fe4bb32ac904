"""Shared fixtures: the float dtype fixture (its tolerances: ``ATOL`` in ``_tolerances.py``)
and a seeded generator."""

import pytest
import torch

from _tolerances import ATOL

# The tests run many tiny ops; one intra-op thread avoids thread start-up and contention costs
# (several times faster on a 2-core CI machine running other work).
torch.set_num_threads(1)


@pytest.fixture(params=list(ATOL), ids=[str(d).removeprefix("torch.") for d in ATOL])
def dtype(request):
    """Run a test in every dtype of ``ATOL`` (float32, float64); its tolerance: ``ATOL[dtype]``."""
    return request.param


@pytest.fixture
def generator():
    """A seeded torch generator so sampled group elements are reproducible."""
    return torch.Generator().manual_seed(1234)
