"""The lock the test workers install programs under: one holder at a time, a bounded wait."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fakes.install_lock import LockTimeout, exclusive

HOLDER = """
import sys
from pathlib import Path
from fakes.install_lock import exclusive
with exclusive(Path(sys.argv[1]), within=5):
    print("held", flush=True)
    sys.stdin.read()
"""


def test_a_second_process_waits_for_the_holder_and_gives_up_when_told(tmp_path: Path) -> None:
    lock = tmp_path / "locks" / "install.lock"
    tests = Path(__file__).parent
    with subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(tests)},
    ) as holder:
        assert holder.stdin is not None
        assert holder.stdout is not None
        try:
            assert holder.stdout.readline() == "held\n"
            with pytest.raises(LockTimeout, match="held for over"), exclusive(lock, within=0.3):
                pytest.fail("the lock was taken while another process held it")
        finally:
            holder.stdin.close()
            holder.wait(timeout=10)
    taken = []
    with exclusive(lock, within=5):
        taken.append(True)
    assert taken == [True]
