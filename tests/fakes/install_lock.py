"""A lock the test workers share across processes, so that one of them at a time installs a
program (apt-get's dpkg lock and npm's cache do not take two installers at once)."""

from __future__ import annotations

import fcntl
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

POLL_SECONDS = 0.2


class LockTimeout(Exception):
    """Another worker held the lock for longer than the caller waits."""


@contextmanager
def exclusive(path: Path, within: float) -> Iterator[None]:
    """Hold an exclusive lock on `path` (made when missing) while the block runs, waiting at
    most `within` seconds for another process to release it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + within
    with path.open("a") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(f"{path} was held for over {within:.0f}s") from None
                time.sleep(POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
