"""Hypothesis profiles: `ci` runs each property test's whole budget (./dev test sets
HYPOTHESIS_PROFILE=ci), `dev` (the default) a tenth of it, for a developer's loop.

A test states its CI budget with `examples(N)`; the profile scales it.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

__all__ = ["PROFILE", "examples"]

settings.register_profile("ci", max_examples=100, deadline=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", max_examples=20, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "dev")
settings.load_profile(PROFILE)


def examples(ci: int) -> int:
    """How many examples a test whose CI budget is `ci` runs under the current profile."""
    return ci if PROFILE == "ci" else max(10, ci // 10)
