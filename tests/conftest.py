"""Shared test configuration: a reproducible hypothesis profile for CI."""

import os

import pytest
from hypothesis import HealthCheck, settings

# Derandomised, no deadline (sympy's first call is slow), bounded examples: the suite stays
# reproducible and inside its time budget on 2 cores. HYPOTHESIS_PROFILE=dev explores more.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile("dev", deadline=None, max_examples=300)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def torch_one_thread():
    """torch on one thread for the test (its 2-thread mode stalls when the CPU is shared)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
