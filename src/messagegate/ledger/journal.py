"""The local journal: each process appends rows to its own file, one line each.

The file is memory-mapped (MAP_SHARED): a row is copied into the kernel's page cache without a
system call, before the answer's last byte is sent, and a process killed with SIGKILL loses
nothing it journalled, since the kernel writes the pages back (a power cut may lose the last
seconds: nothing is synced per row). A file is preallocated; what follows its last row is zeros.
Each file is held under an exclusive flock by its writer; a file nobody holds belonged to a process
that is gone (or is a full segment), and any shipper may take it over. A line without its newline
was torn by a kill mid-copy and was never a whole row: it is skipped.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from messagegate.ledger.row import Batch, LedgerRow, decode_batch

# Rows per file, roughly: a full file is left for the shipper (and deleted once shipped).
SEGMENT_BYTES = 16 * 1024 * 1024
SUFFIX = ".journal"
# Bytes read at a time by a shipper: a batch's rows (2,000 of ~300 bytes) with room to spare, not
# much more, since what follows the batch is copied too.
READ_BYTES = 1024 * 1024
# Rows kept in memory until shipped, at most (~1 KB each, row and line).
HELD_ROWS = 20_000
NEWLINE = ord("\n")


class Journal:
    """This process's journal file; `append` is a memory copy. `size` is how far it is written:
    a reader in another thread must not read past it (a copy may be under way).

    Each row appended is also kept in memory (the row and its line, up to `held_rows` of them,
    until shipped), so the shipper of this file has them as they were built instead of reading
    its own lines back and decoding them. The file stays what a row's safety rests on: a held row
    is one the file holds, and it is forgotten only once shipped. Past the bound (the database
    away a while), rows are read back from the file again until the shipper has caught up."""

    def __init__(
        self, directory: Path, segment_bytes: int = SEGMENT_BYTES, held_rows: int = HELD_ROWS
    ) -> None:
        self.directory = directory
        self.segment_bytes = segment_bytes
        self.held_rows = held_rows
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / "none"
        self._fd = -1
        self._map: mmap.mmap | None = None
        self.size = 0
        self._held = Held()
        self.open_segment()

    def open_segment(self) -> None:
        """Start a new file; the one before stays for the shipper (unlocked: anyone may ship it,
        from the file)."""
        self.close()
        self.path = self.directory / f"{os.getpid()}-{secrets.token_hex(6)}{SUFFIX}"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(self._fd, self.segment_bytes)
        self._map = mmap.mmap(self._fd, self.segment_bytes)
        self.size = 0
        self._held = Held()

    def append(self, row: LedgerRow) -> None:
        """Journal a row: one JSON array a line (ledger/row.py's HEAD, then TAIL nested)."""
        line = orjson.dumps(row)
        start = self.size
        stop = start + len(line)
        if stop >= self.segment_bytes:
            self.open_segment()
            start, stop = 0, len(line)
        written = self._map
        assert written is not None
        written[start:stop] = line
        written[stop] = NEWLINE  # last: a line without it was torn, never a whole row
        end = self.size = stop + 1
        held = self._held
        if held.end == start and len(held.lines) < self.held_rows:
            held.rows.append(row)
            held.lines.append(line)
            held.end = end

    def rows_from(self, offset: int, limit: int) -> tuple[Batch, int]:
        """This file's rows from `offset`, at most `limit`: those held in memory, else read from
        its map (no system call, nothing past what is written: the caller's thread is the
        writer's) up to the held ones."""
        held = self._held
        if not held.lines:
            stop = self.size
        elif offset == held.start:
            lines = held.lines[:limit]
            return Batch(lines, held.rows[:limit]), offset + sum(map(len, lines)) + len(lines)
        else:
            stop = held.start
        assert self._map is not None
        return parse_rows(self._map[offset : min(stop, offset + READ_BYTES)], offset, limit)

    def shipped(self, offset: int, end: int, rows: int) -> None:
        """The `rows` from `offset` to `end` are in the database: forget them if held."""
        held = self._held
        if held.lines and offset == held.start:
            del held.rows[:rows]
            del held.lines[:rows]
            held.start = end
        if not held.lines:
            # Rows are held again once the shipper has caught up with the file's end.
            held.start = held.end = end

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
            self._map = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass(slots=True)
class Held:
    """The rows of the file's bytes from `start` to `end`, in memory: each row and its line."""

    rows: list[LedgerRow] = field(default_factory=list)
    lines: list[bytes] = field(default_factory=list)
    start: int = 0
    end: int = 0


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


def read_rows(path: Path, offset: int, limit: int) -> tuple[Batch, int]:
    """A file's whole lines from `offset`, at most `limit` rows; the offset after them."""
    with open(path, "rb") as file:
        file.seek(offset)
        data = file.read(READ_BYTES)
    return parse_rows(data, offset, limit)


def parse_rows(data: bytes, offset: int, limit: int) -> tuple[Batch, int]:
    """The whole lines `data` (read at `offset`) begins with, at most `limit`, with their heads
    decoded; the offset after them."""
    # What follows the last row is zeros; a line torn by a kill mid-copy has zeros and no newline.
    zeros = data.find(b"\0")
    whole = data.rfind(b"\n", 0, len(data) if zeros < 0 else zeros) + 1
    # One split per batch (a slice of all of `data` is `data`, not a copy).
    lines = data[:whole].split(b"\n", limit)
    rest = lines.pop()  # the lines past the limit (or the empty end): the next batch's
    if not lines:
        return Batch([], []), offset
    return decode_batch(lines), offset + whole - len(rest)
