"""The usage ledger: a row per billed request, journalled before the answer's last byte, shipped
idempotently to SQLite, rolled up for `messagegate usage` and the admin API; outages delay rows."""

from __future__ import annotations

import asyncio
import json
import shutil
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import orjson
import pytest

import fakes.anthropic_script as script
import fakes.openai_script as openai_script
from fakes import postgres
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import anthropic_config, openai_config
from messagegate import cli
from messagegate.ledger.journal import SUFFIX, Journal, parse_rows
from messagegate.ledger.row import LedgerRow, batch_of
from messagegate.ledger.shipper import FINAL_ROUNDS, Shipper
from messagegate.server.app import GatewayApp
from messagegate.store.base import USAGE_SUMS, StoreUnavailable
from messagegate.store.location import is_postgresql, journal_directory
from messagegate.store.migrations import migrations
from messagegate.store.sqlite import SQLiteStore
from messagegate.translate.token_count import count_text

HELLO = [{"role": "user", "content": "Hello"}]
ADMIN_KEY = "admin-key-0123456789abcdef"
PRICE = {"input": 3, "output": 15, "cache_read": 0.3}
USAGE = {
    "input_tokens": 11,
    "output_tokens": 7,
    "cache_read_input_tokens": 100,
    "cache_creation_input_tokens": 50,
    "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 30},
}
# 11*3 + 7*15 + 100*0.3 + 20*3.75 + 30*6 micro-USD
COST = 33 + 105 + 30 + 75 + 180


def answer(**usage: Any) -> dict[str, Any]:
    message = script.message([{"type": "text", "text": "Hello there"}])
    message["usage"] = {**USAGE, **usage}
    return message


def answering(upstream: FakeUpstream) -> None:
    def respond(received: Received) -> Reply:
        if received.json.get("stream"):
            return script.stream_reply(answer())
        return script.reply(answer())

    upstream.responder = respond


def rows(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM ledger ORDER BY time")]


async def ledger(database: str, sql: str = "SELECT * FROM ledger ORDER BY time") -> list[Any]:
    """The rows a query over either backend's database finds, as dicts."""
    if is_postgresql(database):
        return [dict(r) for r in await postgres.query(database, sql)]
    return await asyncio.to_thread(_sqlite_rows, database, sql)


def _sqlite_rows(database: str, sql: str) -> list[Any]:
    with sqlite3.connect(database) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute(sql)]


def config(upstream: FakeUpstream, db: Path | str) -> dict[str, Any]:
    return anthropic_config(
        upstream,
        database=str(db),
        admin_key=ADMIN_KEY,
        models={"claude-test": {"routes": [{"provider": "anth", "model": "up", "price": PRICE}]}},
    )


@pytest.fixture
async def gateway(
    upstream: FakeUpstream, tmp_path: Path, database: str
) -> AsyncIterator[tuple[str, GatewayApp]]:
    answering(upstream)
    environ = {"XDG_DATA_HOME": str(tmp_path / "data")}
    async with running_gateway(build_config(config(upstream, database), environ)) as running:
        yield running


async def test_rows_hold_what_the_upstream_billed(
    gateway: tuple[str, GatewayApp], database: str, sdk: Any
) -> None:
    url, app = gateway
    client = sdk(url)
    plain = await client.messages.with_raw_response.create(
        model="claude-test", max_tokens=10, messages=HELLO
    )
    async with client.messages.stream(model="claude-test", max_tokens=10, messages=HELLO) as s:
        await s.get_final_message()
        streamed_id = s.response.headers["request-id"]
    assert app.shipper is not None
    # The background shipper (every second) may have shipped some already: the rows are what count.
    await app.shipper.ship_once()
    got = await ledger(database)
    assert [r["request_id"] for r in got] == [plain.headers["request-id"], streamed_id]
    for row, stream in zip(got, (0, 1), strict=True):
        assert row["stream"] == stream
        assert (row["key"], row["model_asked"], row["model"]) == (
            "alice",
            "claude-test",
            "claude-test",
        )
        assert (row["route"], row["provider"], row["status"]) == ("anth/up", "anth", 200)
        assert (row["input_tokens"], row["output_tokens"], row["cache_read_tokens"]) == (11, 7, 100)
        assert (row["cache_write_5m_tokens"], row["cache_write_1h_tokens"]) == (20, 30)
        assert row["cost_micro_usd"] == COST
        assert json.loads(row["price"])["cache_write_1h"] == 6.0
        assert row["outcome"] == "complete"
        assert row["latency_ms"] >= 0
    assert got[0]["ttft_ms"] is None
    assert got[1]["ttft_ms"] is not None
    # Shipping again inserts nothing: the journal's rows are in already.
    assert await app.shipper.ship_once() == 0


async def test_a_stream_row_is_journalled_before_its_last_byte(
    gateway: tuple[str, GatewayApp], sdk: Any
) -> None:
    url, app = gateway
    assert app.journal is not None
    async with sdk(url).messages.stream(model="claude-test", max_tokens=10, messages=HELLO) as s:
        await s.get_final_message()
        request_id = s.response.headers["request-id"]
    # The client has the whole answer; the row is in the journal already, not yet shipped.
    assert request_id.encode() in await asyncio.to_thread(app.journal.path.read_bytes)


async def test_a_stream_the_client_cut_is_billed_for_what_arrived(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any
) -> None:
    never = asyncio.Event()
    upstream.script(script.stream_reply(answer(), hold=never, hold_after=2))
    try:
        async with running_gateway(build_config(config(upstream, tmp_path / "mg.db"))) as (
            url,
            app,
        ):
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=10, messages=HELLO
            ) as stream:
                first = await asyncio.wait_for(anext(aiter(stream)), timeout=30)
                assert first.type == "message_start"
            await asyncio.wait_for(upstream.disconnected.wait(), timeout=30)
            assert app.shipper is not None
            assert await app.shipper.ship_once() == 1
    finally:
        never.set()
    (row,) = rows(tmp_path / "mg.db")
    assert row["outcome"] == "client_aborted"
    # What arrived: the input (message_start) and the output counted so far.
    assert (row["input_tokens"], row["output_tokens"]) == (11, 1)


def cut_stream(texts: list[str], *, started_output: int, final_output: int) -> list[bytes]:
    """An answer streaming `texts` as text deltas; its message_start and its final
    message_delta report `started_output` and `final_output` tokens."""
    start = {**answer(), "content": [], "stop_reason": None}
    start["usage"] = {**USAGE, "output_tokens": started_output}
    block = {
        "type": "content_block_start",
        "index": 0,
        "content_block": {"type": "text", "text": ""},
    }
    deltas = [
        script.sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}},
        )
        for t in texts
    ]
    end = {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}}
    return [
        script.sse("message_start", {"type": "message_start", "message": start}),
        script.sse("content_block_start", block),
        *deltas,
        script.sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        script.sse("message_delta", {**end, "usage": {"output_tokens": final_output}}),
        script.sse("message_stop", {"type": "message_stop"}),
    ]


DELIVERED = [
    "The quick brown fox jumps over the lazy dog, ",
    "then naps beneath a crooked apple tree ",
    "while the farmer counts his sheep twice.",
]
WITHHELD = [" It never wakes up.", " The end."]


async def cut_after_deltas(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any, started_output: int
) -> dict[str, Any]:
    """The ledger row of a stream the client closes after the text deltas in DELIVERED, while
    the upstream, which streams slowly, still holds the rest."""
    never = asyncio.Event()
    chunks = cut_stream([*DELIVERED, *WITHHELD], started_output=started_output, final_output=500)
    upstream.script(Reply(chunks=chunks, hold=never, hold_after=2 + len(DELIVERED)))
    got: list[str] = []
    try:
        async with running_gateway(build_config(config(upstream, tmp_path / "mg.db"))) as (
            url,
            app,
        ):
            async with sdk(url).messages.stream(
                model="claude-test", max_tokens=600, messages=HELLO
            ) as stream:
                async for event in stream:
                    if event.type == "content_block_delta" and event.delta.type == "text_delta":
                        got.append(event.delta.text)
                        if len(got) == len(DELIVERED):
                            break
            await ship_the_row(upstream, app)
    finally:
        never.set()
    assert got == DELIVERED
    (row,) = rows(tmp_path / "mg.db")
    return row


async def ship_the_row(upstream: FakeUpstream, app: GatewayApp) -> None:
    """Ship the one row of a stream the client left, once the gateway saw it leave."""
    await asyncio.wait_for(upstream.disconnected.wait(), timeout=30)
    assert app.shipper is not None
    shipped = 0
    for _ in range(200):
        shipped = await app.shipper.ship_once()
        if shipped:
            break
        await asyncio.sleep(0.05)
    assert shipped == 1


async def test_a_stream_the_client_cut_is_billed_for_the_output_it_got(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any
) -> None:
    row = await cut_after_deltas(upstream, tmp_path, sdk, started_output=1)
    assert row["outcome"] == "client_aborted"
    delivered = count_text("".join(DELIVERED), "o200k_base")
    assert delivered > 1  # more than message_start reported
    assert row["output_tokens"] == delivered  # not the 500 the unsent message_delta says
    assert row["input_tokens"] == 11
    assert row["cost_micro_usd"] == COST - 7 * 15 + delivered * 15  # COST billed 7 output tokens


async def test_a_cut_stream_is_billed_no_less_than_the_upstream_reported_by_then(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any
) -> None:
    row = await cut_after_deltas(upstream, tmp_path, sdk, started_output=300)
    assert count_text("".join(DELIVERED), "o200k_base") < 300
    assert (row["outcome"], row["output_tokens"]) == ("client_aborted", 300)


async def test_a_cut_openai_stream_is_billed_for_its_text_and_tool_input_in_the_route_encoding(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any
) -> None:
    call = openai_script.tool_call("call_1", "weather", {"city": "Paris", "unit": "celsius"})
    chunks = openai_script.chunks("gpt-up", "Checking the weather in Paris.", [call], usage=True)
    # Held after the tool call's first arguments: the role, two texts, the call's start, half.
    never = asyncio.Event()
    upstream.script(Reply(chunks=chunks, hold=never, hold_after=5))
    settings = openai_config(upstream, token_encoding="cl100k_base")
    settings["database"] = str(tmp_path / "mg.db")
    settings["models"]["gpt-test"]["routes"][0]["price"] = PRICE
    sent: list[str] = []
    try:
        async with running_gateway(build_config(settings)) as (url, app):
            async with sdk(url).messages.stream(
                model="gpt-test", max_tokens=600, messages=HELLO
            ) as stream:
                async for event in stream:
                    if event.type != "content_block_delta":
                        continue
                    if event.delta.type == "text_delta":
                        sent.append(event.delta.text)
                    elif event.delta.type == "input_json_delta":
                        sent.append(event.delta.partial_json)
                        break
            await ship_the_row(upstream, app)
    finally:
        never.set()
    (row,) = rows(tmp_path / "mg.db")
    assert sent[:2] == ["Che", "cking the weather in Paris."]
    assert sent[-1].startswith('{"city"')
    assert row["outcome"] == "client_aborted"
    assert row["output_tokens"] == count_text("".join(sent), "cl100k_base")


async def test_a_stream_the_upstream_dropped_is_recorded(
    upstream: FakeUpstream, tmp_path: Path, sdk: Any
) -> None:
    upstream.script(script.stream_reply(answer(), drop_after=4))
    async with running_gateway(build_config(config(upstream, tmp_path / "mg.db"))) as (url, app):
        async with sdk(url).messages.stream(
            model="claude-test", max_tokens=10, messages=HELLO
        ) as stream:
            with pytest.raises(anthropic.APIError):
                await asyncio.wait_for(stream.get_final_message(), timeout=30)
        assert app.shipper is not None
        assert await app.shipper.ship_once() == 1
    (row,) = rows(tmp_path / "mg.db")
    assert row["outcome"] == "upstream_failed"
    assert row["input_tokens"] == 11


async def test_a_database_outage_delays_rows_and_loses_none(
    gateway: tuple[str, GatewayApp], database: str, sdk: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url, app = gateway
    assert app.shipper is not None
    store = app.shipper.store

    async def down(rows: Any) -> int:
        raise StoreUnavailable("database is locked")

    monkeypatch.setattr(store, "ship", down)
    for _ in range(3):
        await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    with pytest.raises(StoreUnavailable):
        await app.shipper.ship_once()
    assert await ledger(database) == []
    monkeypatch.undo()
    # The background shipper (every second) may have shipped some already: the rows are what count.
    await app.shipper.ship_once()
    assert len(await ledger(database)) == 3


async def test_an_orphaned_journal_is_shipped_once_and_removed(
    gateway: tuple[str, GatewayApp], database: str, sdk: Any
) -> None:
    url, app = gateway
    for _ in range(4):
        await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    assert app.shipper is not None
    assert app.journal is not None
    # The background shipper (every second) may have shipped some already: the rows are what count.
    await app.shipper.ship_once()
    assert len(await ledger(database)) == 4
    # A copy of the journal, as a dead process would leave it (a torn last line included).
    orphan = app.journal.directory / ("dead-0" + SUFFIX)
    await asyncio.to_thread(shutil.copy, app.journal.path, orphan)
    with orphan.open("ab") as file:
        file.write(b'{"request_id": "req_torn", "ti')
    assert await app.shipper.ship_once() == 0
    assert not orphan.exists()
    assert len(await ledger(database)) == 4
    (totals,) = await ledger(
        database, "SELECT sum(requests) AS requests, sum(cost_micro_usd) AS cost FROM usage_daily"
    )
    assert (totals["requests"], totals["cost"]) == (4, 4 * COST)


async def test_usage_reports_from_the_rollups(
    gateway: tuple[str, GatewayApp],
    tmp_path: Path,
    database: str,
    sdk: Any,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, app = gateway
    for _ in range(3):
        await sdk(url).messages.create(model="claude-test", max_tokens=10, messages=HELLO)
    assert app.shipper is not None
    await app.shipper.ship_once()
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            url + "/v1/gateway/admin/usage?by=model&since=1d", headers={"x-api-key": ADMIN_KEY}
        ) as response,
    ):
        body = await response.json()
    assert response.status == 200
    assert body["data"] == [
        {
            "model": "claude-test",
            "requests": 3,
            "input_tokens": 33,
            "output_tokens": 21,
            "cache_read_tokens": 300,
            "cache_write_5m_tokens": 60,
            "cache_write_1h_tokens": 90,
            "cost_micro_usd": 3 * COST,
            "cost_usd": 3 * COST / 1e6,
        }
    ]
    path = tmp_path / "mg.yaml"
    path.write_text(f"database: {database}\nproviders: {{}}\nmodels: {{}}\n")
    for by, first in (("key", "alice"), ("provider", "anth"), ("day", "20")):
        argv = ["usage", "--config", str(path), "--by", by, "--since", "7d", "--json"]
        assert await asyncio.to_thread(cli.main, argv) == 0
        shown = json.loads(capsys.readouterr().out)
        assert str(shown[0][by]).startswith(first)
        assert shown[0]["requests"] == 3
    assert await asyncio.to_thread(cli.main, ["usage", "--config", str(path), "--by", "key"]) == 0
    assert "alice" in capsys.readouterr().out


async def test_a_closed_segment_ships_whole_and_goes(tmp_path: Path) -> None:
    store = await SQLiteStore.open(str(tmp_path / "mg.db"))
    journal = Journal(journal_directory(str(tmp_path / "mg.db")))
    try:
        first = journal.path
        journal.append(ledger_row("req_1"))
        journal.open_segment()
        journal.append(ledger_row("req_2"))
        shipper = Shipper(journal, store)
        assert await shipper.ship_once() == 2
        assert not first.exists()
        assert journal.path.exists()
        journal.append(ledger_row("req_3"))
        assert await shipper.ship_once() == 1
    finally:
        journal.close()
        await store.close()
    assert sorted(r["request_id"] for r in rows(tmp_path / "mg.db")) == ["req_1", "req_2", "req_3"]


def ledger_row(request_id: str) -> LedgerRow:
    return (
        request_id,
        1e9,
        "k",
        "m",  # model
        "p",  # provider
        1,  # input_tokens
        2,  # output_tokens
        0,
        0,
        0,
        5,  # cost_micro_usd
        ("m", "p/m", False, 200, 1.0, None, None, "complete"),
    )


async def test_a_replayed_batch_inserts_and_rolls_up_only_its_new_rows(tmp_path: Path) -> None:
    """Batches long enough to be inserted many rows a statement, one replaying rows shipped."""
    store = await SQLiteStore.open(str(tmp_path / "mg.db"))
    try:
        first = [ledger_row(f"req_{n:03}") for n in range(45)]
        assert await store.ship(batch_of(first)) == 45
        again = [ledger_row(f"req_{n:03}") for n in range(30, 95)]
        assert await store.ship(batch_of(again)) == 50
        assert await store.usage("key", "2001-01-01") == [
            dict(zip(("key", *USAGE_SUMS), ("k", 95, 95, 190, 0, 0, 0, 475), strict=True))
        ]
    finally:
        await store.close()
    assert sorted(r["request_id"] for r in rows(tmp_path / "mg.db")) == [
        f"req_{n:03}" for n in range(95)
    ]


async def test_rows_kept_past_the_journals_bound_are_read_back(tmp_path: Path) -> None:
    """The journal keeps at most `held_rows` rows in memory for its shipper: the rest are read
    back from its file, in order, and rows are kept again once the shipper has caught up."""
    store = await SQLiteStore.open(str(tmp_path / "mg.db"))
    journal = Journal(journal_directory(str(tmp_path / "mg.db")), held_rows=3)
    shipper = Shipper(journal, store)
    try:
        for n in range(7):
            journal.append(ledger_row(f"req_{n}"))
        assert await shipper.ship_once() == 7
        caught_up = journal.size
        for n in range(7, 9):
            journal.append(ledger_row(f"req_{n}"))
        # Kept again: shipped from memory, whatever the file now says after them.
        with journal.path.open("r+b") as file:
            file.seek(caught_up)
            file.write(b"\0" * (journal.size - caught_up))
        assert await shipper.ship_once() == 2
        assert await shipper.ship_once() == 0
    finally:
        journal.close()
        await store.close()
    assert sorted(r["request_id"] for r in rows(tmp_path / "mg.db")) == [
        f"req_{n}" for n in range(9)
    ]


OLD_ROWS = [
    # As the ledger table before migration 4 held them (a stream, and a row without a price).
    (
        *("req_a", 1764769012.1234567, "k", "alias", "m", "p/m", "p", 1, 200, 12.345, 3.5),
        *(11, 7, 100, 20, 30, 5, '{"input":3.0,"output":15.0}', "complete"),
    ),
    (
        *("req_b", 1764769013.0, "k", "m", "m", "p/m", "p", 0, 200, 1.0, None),
        *(1, 2, 0, 0, 0, 0, None, "client_aborted"),
    ),
]


async def test_a_ledger_of_the_previous_schema_is_upgraded_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "mg.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY)")
        for migration in migrations("sqlite")[:3]:
            conn.executescript(migration.script)
            conn.execute("INSERT INTO schema_migrations VALUES (?)", (migration.version,))
        conn.executemany(f"INSERT INTO ledger VALUES ({', '.join('?' * 19)})", OLD_ROWS)
    before = _sqlite_rows(str(path), "SELECT * FROM ledger ORDER BY request_id")
    assert len(before) == len(OLD_ROWS)
    config = tmp_path / "mg.yaml"
    config.write_text(f"database: {path}\nproviders: {{}}\nmodels: {{}}\n")
    assert await asyncio.to_thread(cli.main, ["db", "upgrade", "--config", str(config)]) == 0
    assert f"schema version {len(migrations('sqlite'))}" in capsys.readouterr().out
    # Every column of every row kept, the time to the last digit.
    assert _sqlite_rows(str(path), "SELECT * FROM ledger ORDER BY request_id") == before
    store = await SQLiteStore.open(str(path))
    try:
        assert await store.ship(batch_of([ledger_row("req_a"), ledger_row("req_c")])) == 1
    finally:
        await store.close()
    assert [r["request_id"] for r in rows(path)] == ["req_c", "req_a", "req_b"]


async def test_a_journal_of_the_previous_layout_is_shipped(tmp_path: Path) -> None:
    """Rows an earlier release journalled (a flat array, the price a string) and left unshipped."""
    directory = journal_directory(str(tmp_path / "mg.db"))
    directory.mkdir(parents=True)
    old = [(*row[:7], bool(row[7]), *row[8:]) for row in OLD_ROWS]
    (directory / ("dead-0" + SUFFIX)).write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in old))
    store = await SQLiteStore.open(str(tmp_path / "mg.db"))
    journal = Journal(directory)
    try:
        journal.append(ledger_row("req_c"))
        assert await Shipper(journal, store).ship_once() == 3
        assert await store.usage("key", "2001-01-01") == [
            dict(zip(("key", *USAGE_SUMS), ("k", 3, 13, 11, 100, 20, 30, 10), strict=True))
        ]
    finally:
        journal.close()
        await store.close()
    shipped = {r["request_id"]: r for r in rows(tmp_path / "mg.db")}
    assert (shipped["req_a"]["model_asked"], shipped["req_a"]["ttft_ms"]) == ("alias", 3.5)
    assert json.loads(shipped["req_a"]["price"]) == {"input": 3.0, "output": 15.0}
    assert (shipped["req_b"]["price"], shipped["req_b"]["outcome"]) == (None, "client_aborted")


def test_a_batch_ends_where_its_last_line_does_in_bytes(tmp_path: Path) -> None:
    """Offsets count bytes: a key name of two-byte characters does not shift the next batch."""
    row = ledger_row("req_1")
    lines = [orjson.dumps((f"req_{n}", 1e9, "clé", *row[3:])) + b"\n" for n in range(3)]
    data = b"".join(lines) + b"\0" * 8
    first, offset = parse_rows(data, 0, 2)
    assert [head[0] for head in first.heads] == ["req_0", "req_1"]
    assert offset == len(lines[0]) + len(lines[1])
    rest, end = parse_rows(data[offset:], offset, 2)
    assert ([head[2] for head in rest.heads], end) == (["clé"], len(b"".join(lines)))


class _JournallingWhileShipping:
    """A store that, while each batch is on its way, has the journal take one more row (as
    answers ending under load do); it records the batches it was given."""

    def __init__(self, store: SQLiteStore, journal: Journal) -> None:
        self.store = store
        self.journal = journal
        self.batches: list[int] = []

    async def ship(self, batch: Any) -> int:
        self.batches.append(len(batch.lines))
        self.journal.append(ledger_row(f"req_late_{len(self.batches):03}"))
        return await self.store.ship(batch)


async def test_a_ship_takes_what_was_journalled_when_it_began_and_stop_ships_the_rest(
    tmp_path: Path,
) -> None:
    """Under load a shipper must not chase the journal's end (a batch of a few rows per wait
    for the store); what arrives meanwhile goes with the next ship, and stopping ships all."""
    store = await SQLiteStore.open(str(tmp_path / "mg.db"))
    journal = Journal(tmp_path / "journal")
    late = _JournallingWhileShipping(store, journal)
    shipper = Shipper(journal, late)  # type: ignore[arg-type]
    try:
        for n in range(5):
            journal.append(ledger_row(f"req_{n:03}"))
        assert await shipper.ship_once() == 5
        assert late.batches == [5]
        assert await shipper.ship_once() == 1  # the row journalled during the first
        assert late.batches == [5, 1]
        # Stopping ships what each round left (this store adds a row every time: the rounds
        # are bounded, and the last row stays journalled for the next start).
        await shipper.stop()
    finally:
        journal.close()
        await store.close()
    assert late.batches == [5, 1] + [1] * FINAL_ROUNDS
    shipped = sorted(r["request_id"] for r in rows(tmp_path / "mg.db"))
    assert shipped[:5] == [f"req_{n:03}" for n in range(5)]
    assert shipped[5:] == [f"req_late_{n:03}" for n in range(1, len(late.batches))]
