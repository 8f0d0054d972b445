"""The local journal: each process appends rows to its own file, one line each, with one write.

A write to the file reaches the kernel before the answer's last byte is sent, so a process killed
with SIGKILL loses nothing it journalled (a power cut may lose the last seconds: no fsync per row).
Each file is held under an exclusive flock by its writer; a file nobody holds belonged to a process
that is gone, and any shipper may take it over. A line without its newline was torn by a kill
mid-write and was never a whole row: it is skipped.
"""

from __future__ import annotations

import fcntl
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from messagegate.ledger.row import LedgerRow

# A file is closed for writing (and deleted once shipped) after this many bytes.
SEGMENT_BYTES = 16 * 1024 * 1024
SUFFIX = ".journal"


class Journal:
    """This process's journal file; `append` is one write syscall."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "none"
        self._fd = -1
        self.size = 0
        self.open_segment()

    def open_segment(self) -> None:
        """Start a new file; the one before stays for the shipper (unlocked: anyone may ship it)."""
        previous = self._fd
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self.size = 0
        if previous >= 0:
            os.close(previous)

    def append(self, row: LedgerRow) -> None:
        line = row.encode()
        os.write(self._fd, line)
        self.size += len(line)
        if self.size >= SEGMENT_BYTES:
            self.open_segment()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class Segment:
    path: Path
    # An open descriptor holding the file's lock while a shipper works on it (-1: own file).
    fd: int


def claim_segments(directory: Path, own: Path | None) -> Iterator[Segment]:
    """The files this process may ship: its own, and every file no live writer holds."""
    for path in sorted(directory.glob("*" + SUFFIX)):
        if path == own:
            yield Segment(path, -1)
            continue
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue  # another shipper finished it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        yield Segment(path, fd)


def read_rows(path: Path, offset: int, limit: int) -> tuple[list[LedgerRow], int]:
    """Whole lines from `offset`, at most `limit` rows; the offset after the last one read."""
    rows: list[LedgerRow] = []
    with open(path, "rb") as file:
        file.seek(offset)
        for line in file:
            if not line.endswith(b"\n") or len(rows) >= limit:
                break
            rows.append(LedgerRow.decode(line))
            offset += len(line)
    return rows, offset
