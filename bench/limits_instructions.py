"""What a stored key's limits cost a request, in callgrind instructions, part by part: the key
check, admission and settlement, the `anthropic-ratelimit-*` head lines, writing them into the
response head, the answer's pricing and its ledger row journalled (`Accounting.finish`, as for a
JSON answer), and, on the SQLite thread, shipping the rows into a fresh database. No server and
no sockets: each part runs `--requests` times in one process under ``valgrind --tool=callgrind``,
minus the same process running it 0 times, for each revision in one run (the bench key of
`bench.instructions`: rpm, tpm and a monthly budget).

    python -m bench.limits_instructions [--rev HEAD~1 --rev WORKTREE] [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import orjson

from bench.instructions import ROOT, WORKTREE, source_tree

SECRET = "mg-" + "b" * 40
BODY_SIZE, MAX_TOKENS = 600, 1024
# Every part but `loop` admits and settles; `lines` adds the head lines; `head` writes them
# into a response head, `plain-head` writes the same head without them. `priced` settles through
# Accounting.finish without a journal, `finish` with one (the row built and journalled). `rows`
# makes as many journalled rows as requests and opens a fresh SQLite file; `ship` also ships them.
PARTS = (
    "loop",
    "check",
    "admit",
    "lines",
    "plain-head",
    "head",
    "priced",
    "finish",
    "rows",
    "ship",
)
_TOTALS = re.compile(rb"^(?:summary|totals):\s*(\d+)", re.MULTILINE)


class _Transport:
    def write(self, data: bytes) -> None:
        pass


class _Flow:
    write_paused = False


def _steps() -> dict[str, Callable[[], Any]]:
    """Each part's step, built from the revision's code on PYTHONPATH."""
    from messagegate.api.usage import Usage
    from messagegate.config import parse_config
    from messagegate.config.keyspec import KeyLimits, KeySettings
    from messagegate.ledger.journal import Journal
    from messagegate.ledger.row import Outcome
    from messagegate.limits.limiter import Limiter
    from messagegate.routing.router import Routed
    from messagegate.server.accounting import Accounting
    from messagegate.server.auth import KeyChecker
    from messagegate.server.exchange import Exchange
    from messagegate.server.head_cycle import HEAD_LINES, HeadCycle
    from messagegate.store.base import StoredKey, StoredSecret, digest

    route = {"provider": "oai", "model": "m", "price": {"input": 3, "output": 15}}
    provider = {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"}
    config = parse_config(
        {"providers": {"oai": provider}, "models": {"bench": {"routes": [route]}}},
        source="bench",
        environ={},
    )
    model = config.models["bench"]
    limits = KeyLimits(rpm=100_000_000, tpm=1_000_000_000, budget=1_000_000.0, period="month")
    secret = StoredSecret(digest(SECRET), SECRET[:6], 0.0)
    keys = KeyChecker([])
    keys.load([StoredKey("bench", KeySettings(limits=limits), 0.0, None, (secret,))])
    accounting = Accounting(Limiter())
    headers = {"x-api-key": SECRET, "content-type": "application/json"}
    key = keys.check(headers)
    head = [(b"content-type", b"application/json"), (b"content-length", b"512")]
    # The journal's directory lives as long as the process (the steps are its closures).
    directory = tempfile.mkdtemp(prefix="mg-journal-")
    atexit.register(shutil.rmtree, directory, True)
    journal = Journal(Path(directory))
    journalled = Accounting(accounting.limiter, journal)
    exchange = Exchange(
        {"method": "POST", "path": "/v1/messages", "headers": []},
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
    )
    exchange.log_fields["model"] = "bench"
    started = time.monotonic()
    routed = Routed(None, model, model.routes[0], 1, [], started, started + 0.2)
    usage = Usage(input_tokens=150, output_tokens=120, cache_read_input_tokens=1000)

    def admitted() -> Any:
        return accounting.admit(key, model, BODY_SIZE, MAX_TOKENS)

    def settled(ticket: Any) -> None:
        ticket.settle(120, 4000)
        ticket.release()

    def write_head(lines: bytes) -> None:
        cycle = HeadCycle(
            scope={"method": "POST", "http_version": "1.1"},  # type: ignore[typeddict-item]
            transport=_Transport(),  # type: ignore[arg-type]
            flow=_Flow(),  # type: ignore[arg-type]
            logger=None,  # type: ignore[arg-type]
            access_logger=None,  # type: ignore[arg-type]
            access_log=False,
            default_headers=[],
            message_event=asyncio.Event(),
            expect_100_continue=False,
            keep_alive=True,
            on_response=lambda: None,
        )
        start: Any = {"type": "http.response.start", "status": 200, "headers": list(head)}
        if lines:
            start[HEAD_LINES] = lines
        _at_once(cycle.send(start))

    def admit() -> None:
        settled(admitted())

    def lines() -> None:
        ticket = admitted()
        ticket.head_lines()
        settled(ticket)

    def plain_head() -> None:
        ticket = admitted()
        ticket.head_lines()
        write_head(b"")
        settled(ticket)

    def full_head() -> None:
        ticket = admitted()
        write_head(ticket.head_lines())
        settled(ticket)

    def finished(by: Accounting) -> Callable[[], None]:
        def finish() -> None:
            ticket = admitted()
            by.finish(exchange, key, ticket, routed, usage, Outcome.COMPLETE, False)
            ticket.release()

        return finish

    return {
        "loop": lambda: None,
        "check": lambda: keys.check(headers),
        "admit": admit,
        "lines": lines,
        "plain-head": plain_head,
        "head": full_head,
        "priced": finished(accounting),
        "finish": finished(journalled),
    }


def _at_once(coroutine: Coroutine[Any, Any, None]) -> None:
    """Run a coroutine that never waits (a response head is written synchronously)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    raise RuntimeError("writing the head waited")


def _shipping(count: int, ship: bool) -> None:
    """`count` rows as a journal holds them (each its own request id, in time order), and a
    fresh SQLite ledger; shipped in the shipper's batches on this thread when `ship`."""
    from messagegate.ledger.row import Batch, LedgerRow
    from messagegate.ledger.shipper import BATCH_ROWS
    from messagegate.store.sqlite import SQLiteStore

    price = orjson.Fragment(
        b'{"input":3.0,"output":15.0,"cache_read":0.30000000000000004,"cache_write":3.75,'
        b'"cache_write_1h":6.0}'
    )
    now = time.time()
    rows: list[LedgerRow] = [
        (
            f"req_{i:014x}{i:010x}",
            now,
            "bench",
            "bench",
            "oai",
            150,
            120,
            1000,
            0,
            0,
            2550,
            ("bench", "oai/m", False, 200, 201.5, None, price, "complete"),
        )
        for i in range(count)
    ]
    lines = [orjson.dumps(row) for row in rows]
    with tempfile.TemporaryDirectory(prefix="mg-ledger-") as tmp:
        store = SQLiteStore(str(Path(tmp) / "ledger.db"))
        store._open()
        for start in range(0, count if ship else 0, BATCH_ROWS):
            end = start + BATCH_ROWS
            store._ship(Batch(lines[start:end], rows[start:end]))
        store._close()
        store._thread.shutdown()


def run_part(part: str, count: int) -> None:
    if part in ("rows", "ship"):
        _shipping(count, part == "ship")
        return
    step = _steps()[part]
    for _ in range(count):
        step()


def measure(src: Path, part: str, count: int, work: Path) -> int:
    out = work / f"callgrind.{part}.{count}"
    child = ["-m", "bench.limits_instructions", "--part", part, "--count", str(count)]
    subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, *child],
        cwd=ROOT,
        # A fixed hash seed: dict layouts, and so the counts, repeat between runs.
        env={**os.environ, "PYTHONPATH": f"{src}:{ROOT}", "PYTHONHASHSEED": "0"},
        capture_output=True,
        check=True,
        timeout=1800,
    )
    found = _TOTALS.search(out.read_bytes())
    if found is None:
        raise RuntimeError(f"no totals in {out}")
    return int(found.group(1))


def per_request(src: Path, requests: int) -> dict[str, int]:
    """Instructions per request of each part (the loop's own taken off)."""
    with tempfile.TemporaryDirectory(prefix="mg-limits-") as tmp:
        work = Path(tmp)
        idle = measure(src, "loop", 0, work)
        raw = {p: (measure(src, p, requests, work) - idle) // requests for p in PARTS}
    return {
        "key check": raw["check"] - raw["loop"],
        "admission + settlement": raw["admit"] - raw["loop"],
        "head lines": raw["lines"] - raw["admit"],
        "writing them in the head": raw["head"] - raw["plain-head"],
        "pricing (finish, no journal)": raw["priced"] - raw["admit"],
        "ledger row + journal append": raw["finish"] - raw["priced"],
        "SQLite thread: shipping a row": raw["ship"] - raw["rows"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.limits_instructions", description=__doc__
    )
    parser.add_argument("--rev", action="append", help=f"a git revision or {WORKTREE} (repeat)")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--count", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.part is not None:
        run_part(args.part, args.count)
        return 0
    revs: list[str] = args.rev or [WORKTREE]
    results = {}
    for rev in revs:
        with source_tree(rev) as src:
            results[rev] = per_request(src, args.requests)
    print("| part | " + " | ".join(revs) + " |")
    print("|---|" + "---:|" * len(revs))
    for name in results[revs[0]]:
        counts = " | ".join(f"{results[rev][name]:,}" for rev in revs)
        print(f"| {name} | {counts} |")
    # The event loop's thread's parts: all but the last (shipping, on the SQLite thread).
    totals = " | ".join(f"{sum(list(results[rev].values())[:-1]):,}" for rev in revs)
    print(f"| in all, the event loop's thread | {totals} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
