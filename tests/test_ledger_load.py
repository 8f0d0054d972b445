"""The ledger under load: token totals equal to what the upstream billed over a few thousand mixed
requests (streams and not, client aborts, upstream failures), and a gateway killed with SIGKILL
mid-load loses no journalled row and duplicates none."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import anthropic_config
from messagegate.ledger.journal import Journal
from messagegate.ledger.shipper import Shipper
from messagegate.store.location import journal_directory
from messagegate.store.sqlite import SQLiteStore

HELLO = [{"role": "user", "content": "Hello"}]
PRICE = {"input": 3, "output": 15}
NEVER = asyncio.Event()


def billed(received: Received) -> tuple[str, int, int]:
    """What the fake upstream bills a request: its kind and its usage, from the request itself."""
    tag = received.json["metadata"]["user_id"]
    kind, seed = tag.split(":")
    rng = random.Random(int(seed))
    return kind, rng.randint(1, 5000), rng.randint(1, 4000)


def respond(received: Received) -> Reply:
    kind, input_tokens, output_tokens = billed(received)
    message = script.message(
        [{"type": "text", "text": "Hello there"}],
        input_tokens=input_tokens,
        output_tokens=output_tokens,
    )
    if kind == "json":
        return script.reply(message)
    if kind == "drop":
        return script.stream_reply(message, drop_after=4)
    if kind == "abort":
        return script.stream_reply(message, hold=NEVER, hold_after=4)
    return script.stream_reply(message)


def expected(kind: str, input_tokens: int, output_tokens: int) -> tuple[int, int]:
    """What the ledger must hold: a cut stream is billed what the upstream reported by then."""
    return (input_tokens, output_tokens) if kind in ("json", "stream") else (input_tokens, 1)


async def send(session: aiohttp.ClientSession, url: str, kind: str, seed: int) -> str | None:
    body = {
        "model": "claude-test",
        "max_tokens": 4096,
        "messages": HELLO,
        "stream": kind != "json",
        "metadata": {"user_id": f"{kind}:{seed}"},
    }
    async with session.post(
        url + "/v1/messages", data=orjson.dumps(body), headers={"x-api-key": GATEWAY_KEY}
    ) as response:
        if kind == "abort":
            await response.content.readuntil(b"text_delta")
            response.close()
            return None
        await response.read()
        return response.headers["request-id"] if response.status == 200 else None


def ledger(db: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT request_id, outcome, input_tokens, output_tokens, cost_micro_usd FROM ledger"
        ).fetchall()


def rollup(db: Path) -> tuple[Any, ...]:
    with sqlite3.connect(db) as conn:
        return tuple(
            conn.execute(
                "SELECT sum(requests), sum(input_tokens), sum(output_tokens), sum(cost_micro_usd)"
                " FROM usage_daily"
            ).fetchone()
        )


async def test_ledger_totals_equal_what_the_upstream_billed(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.responder = respond
    db = tmp_path / "mg.db"
    raw = anthropic_config(
        upstream,
        database=str(db),
        models={"claude-test": {"routes": [{"provider": "anth", "model": "up", "price": PRICE}]}},
    )
    rng = random.Random(21)
    kinds = rng.choices(["json", "stream", "drop", "abort"], weights=[45, 45, 5, 5], k=2000)
    async with running_gateway(build_config(raw)) as (url, app):
        connector = aiohttp.TCPConnector(limit=16)
        async with aiohttp.ClientSession(connector=connector) as session:
            queue = list(enumerate(kinds))

            async def worker() -> None:
                while queue:
                    seed, kind = queue.pop()
                    await send(session, url, kind, seed)

            await asyncio.gather(*(worker() for _ in range(16)))
        # Cut streams end in the gateway once it sees the client leave (bounded wait).
        for _ in range(500):
            if _journal_rows(app.journal) >= len(kinds):
                break
            await asyncio.sleep(0.01)
        assert app.shipper is not None
        await app.shipper.ship_once()
    rows = ledger(db)
    assert len(rows) == len(kinds) == len({r[0] for r in rows})
    want = [expected(*billed(r)) for r in upstream.received]
    assert sum(r[2] for r in rows) == sum(w[0] for w in want)
    assert sum(r[3] for r in rows) == sum(w[1] for w in want)
    outcomes = {
        o: sum(1 for r in rows if r[1] == o)
        for o in ("complete", "client_aborted", "upstream_failed")
    }
    assert outcomes == {
        "complete": kinds.count("json") + kinds.count("stream"),
        "client_aborted": kinds.count("abort"),
        "upstream_failed": kinds.count("drop"),
    }
    assert sum(r[4] for r in rows) == sum(w[0] * 3 + w[1] * 15 for w in want)
    assert rollup(db) == (
        len(rows),
        sum(r[2] for r in rows),
        sum(r[3] for r in rows),
        sum(r[4] for r in rows),
    )


def _journal_rows(journal: Journal | None) -> int:
    assert journal is not None
    return journal.path.read_bytes().count(b"\n")


async def test_sigkill_mid_load_loses_no_row_and_duplicates_none(
    upstream: FakeUpstream, tmp_path: Path
) -> None:
    upstream.responder = respond
    db = tmp_path / "mg.db"
    port = _free_port()
    raw = anthropic_config(
        upstream,
        database=str(db),
        listen=f"127.0.0.1:{port}",
        models={"claude-test": {"routes": [{"provider": "anth", "model": "up", "price": PRICE}]}},
    )
    config = tmp_path / "mg.yaml"
    config.write_bytes(orjson.dumps(raw))
    # A plain Popen: its wait() reaps its own child (asyncio's child watcher may report 255).
    command = [sys.executable, "-m", "messagegate.cli", "serve", "--config", str(config)]
    process = await asyncio.to_thread(
        subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    answered: list[str] = []
    try:
        await _wait_for_health(url)
        async with aiohttp.ClientSession() as session:

            async def worker(first: int) -> None:
                for seed in range(first, first + 8000, 8):
                    try:
                        request_id = await send(session, url, ("json", "stream")[seed % 2], seed)
                    except aiohttp.ClientError:
                        return  # the gateway is gone
                    if request_id is not None:
                        answered.append(request_id)

            workers = asyncio.gather(*(worker(i) for i in range(8)))
            # Kill it once it has shipped rows (so that a replay meets rows already in) and
            # answered more since.
            shipped = await _when(lambda: ledger_count(db) > 0)
            assert shipped, "the gateway shipped nothing"
            count = len(answered)
            assert await _when(lambda: len(answered) >= count + 100)
            os.kill(process.pid, signal.SIGKILL)
            await asyncio.wait_for(workers, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait, 30)
    assert process.returncode == -signal.SIGKILL
    shipped_before = ledger_count(db)
    # Shipped before the kill; the replay below reads the journal from its start again.
    assert shipped_before > 0
    # The next start ships what the killed process journalled (and maybe shipped already).
    store = await SQLiteStore.open(str(db))
    journal = Journal(journal_directory(str(db)))
    try:
        await Shipper(journal, store).ship_once()
    finally:
        journal.close()
        await store.close()
    rows = ledger(db)
    ids = [r[0] for r in rows]
    assert set(answered) <= set(ids)
    assert len(ids) == len(set(ids)) <= len(upstream.received)
    assert rollup(db)[0] == len(rows)


def ledger_count(db: Path) -> int:
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM ledger").fetchone()[0])
    except sqlite3.OperationalError:
        return 0  # not created yet


async def _when(condition: Any) -> bool:
    for _ in range(1000):  # bounded: 20 s at most
        if await asyncio.to_thread(condition):
            return True
        await asyncio.sleep(0.02)
    return False


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_for_health(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(300):  # bounded: 30 s at most
            try:
                async with session.get(url + "/health") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError("the gateway did not start")
