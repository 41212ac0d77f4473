"""The fault suite's random source: one fixed seed, printed, overridable with FAULT_SEED."""

from __future__ import annotations

import os
import random

import pytest

DEFAULT_SEED = 20240611


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """A generator seeded from the run's seed and the test's name, so each test draws the
    same faults whatever else runs; the seed is printed to reproduce a failure."""
    seed = int(os.environ.get("FAULT_SEED", DEFAULT_SEED))
    print(f"fault seed {seed}: run with FAULT_SEED={seed} to draw the same faults again")
    return random.Random(f"{seed}:{request.node.name}")
