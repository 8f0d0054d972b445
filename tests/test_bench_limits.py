"""bench.limits_instructions: every part it measures runs on the current code (the counts
themselves are callgrind's, outside the suite)."""

from __future__ import annotations

import pytest
from bench.limits_instructions import PARTS, run_part


@pytest.mark.parametrize("part", PARTS)
def test_every_part_runs(part: str) -> None:
    run_part(part, 3)
