"""A meeting platform's traffic, with the findings the spec says must follow from it.

`simulate(config, on_expected)` yields events in delivery order (out of order within
the allowed lateness, with duplicates) and reports the ground truth of every story
unit it plans; `consentwatch simulate` writes both out.
"""

from streams.simulate.generator import DEFAULT_START_MS, SimulationConfig, simulate
from streams.simulate.truth import Expected

__all__ = ["DEFAULT_START_MS", "Expected", "SimulationConfig", "simulate"]
