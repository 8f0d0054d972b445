"""Each backend's schema as numbered SQL files (``NNNN_what.sql``), applied once each, in order;
a released file is never edited (a change is a new file)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

_FILE = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: str


def migrations(backend: str) -> tuple[Migration, ...]:
    """The backend's migrations by version; versions run 1, 2, … without a gap."""
    found: list[Migration] = []
    for entry in resources.files(__name__).joinpath(backend).iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(int(match.group(1)), entry.name, entry.read_text("utf-8")))
    found.sort(key=lambda m: m.version)
    if [m.version for m in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"the {backend} migrations are not numbered 1, 2, …: {found}")
    return tuple(found)


def latest(backend: str) -> int:
    return len(migrations(backend))
