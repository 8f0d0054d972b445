"""Log lines: the cached-time formatter writes what logging's own formatter writes."""

from __future__ import annotations

import logging

from messagegate.cli import LOG_FORMAT
from messagegate.log_output import CachedTimeFormatter


def record(created: float) -> logging.LogRecord:
    line = logging.LogRecord("messagegate.access", logging.INFO, "", 0, "POST %s", ("/x",), None)
    line.created, line.msecs = created, (created - int(created)) * 1000
    return line


def test_lines_equal_the_standard_formatters_across_seconds() -> None:
    cached, standard = CachedTimeFormatter(LOG_FORMAT), logging.Formatter(LOG_FORMAT)
    for created in (1_800_000_000.001, 1_800_000_000.999, 1_800_000_001.5, 1_800_000_000.25):
        assert cached.format(record(created)) == standard.format(record(created))
