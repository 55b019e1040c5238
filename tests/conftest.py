"""Shared test configuration: a reproducible hypothesis profile for CI."""

import os

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
