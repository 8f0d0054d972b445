"""Three `messagegate serve` replicas behind nginx, sharing PostgreSQL and Redis: a key's RPM holds
across them, the ledger has exactly one row per answered request (token totals equal to what the
upstream billed), and a replica killed with SIGKILL mid-load loses no row and duplicates none."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import anthropic

from conftest import SDK
from fakes.upstream import FakeUpstream
from scaleout.backends import LedgerRow, create_key, ledger_rows, prepare_database
from scaleout.cluster import PRICE, cluster, shared_config, write_config
from scaleout.load import Answer, bill_of, respond, send, tag

RPM = 60
# A full bucket holds a minute's worth of requests; it refills at RPM / 60 a second.
BURST, RATE = RPM, RPM / 60
# Long enough for the bucket to refill a few requests' worth beyond its burst.
RPM_LOAD_SECONDS = 4.0
CLIENTS = 8
# Bounded waits: for shipped rows (shippers run every second), for answers during the kill.
SHIPPED_WITHIN = 30.0
PROGRESS_WITHIN = 30.0
POLL_EVERY = 0.05
# Each look at the ledger is a query (a psql process for PostgreSQL): fewer of them.
LEDGER_POLL_EVERY = 0.2


async def shared_setup(
    upstream: FakeUpstream, database: str, redis: str, key_name: str, work: Path, *settings: str
) -> tuple[Path, str]:
    """The replicas' config written, the database prepared and a key created in it (with the
    `keys create` options `settings`), as an operator would: the config file and the key."""
    upstream.responder = respond
    config = write_config(work / "messagegate.yaml", shared_config(upstream, database, redis))
    await asyncio.to_thread(prepare_database, config, database)
    return config, await asyncio.to_thread(create_key, config, key_name, *settings)


async def test_keys_rpm_holds_across_the_replicas(
    nginx_binary: str,
    upstream: FakeUpstream,
    shared_database_url: str,
    shared_redis_url: str,
    key_name: str,
    tmp_path: Path,
    sdk: SDK,
) -> None:
    config, secret = await shared_setup(
        upstream, shared_database_url, shared_redis_url, key_name, tmp_path, "--rpm", str(RPM)
    )
    admitted: list[float] = []
    refused: list[tuple[str, int]] = []
    async with cluster(nginx_binary, config, tmp_path) as running:
        client = sdk(running.url, key=secret)
        loop = asyncio.get_running_loop()
        end = loop.time() + RPM_LOAD_SECONDS

        async def client_loop(first: int) -> None:
            for seed in range(first, 1_000_000, 2 * CLIENTS):  # even seeds: JSON answers
                if loop.time() >= end:
                    return
                try:
                    await send(client, seed)
                except anthropic.RateLimitError as refusal:
                    error = refusal.response.json()["error"]["type"]
                    refused.append((error, int(refusal.response.headers["retry-after"])))
                    continue
                admitted.append(loop.time())

        await asyncio.gather(*(client_loop(2 * i) for i in range(CLIENTS)))
        await running.stop()
    assert refused, "the load never met the limit: the test proves nothing"
    assert {error for error, _ in refused} == {"rate_limit_error"}
    assert all(0 < seconds <= 60 for _, seconds in refused), sorted(set(refused))
    assert len(upstream.received) == len(admitted) >= BURST
    count, seconds, allowed = worst_interval(sorted(admitted))
    assert count <= allowed, f"{count} admitted in {seconds:.2f} s, {allowed:.1f} allowed"


def worst_interval(times: list[float]) -> tuple[int, float, float]:
    """The interval [times[i], times[j]] admitting most beyond BURST + RATE * T + 1: its count,
    its length T, and the count allowed in it."""
    intervals = (
        (j - i + 1, times[j] - times[i], BURST + RATE * (times[j] - times[i]) + 1)
        for i in range(len(times))
        for j in range(i, len(times))
    )
    return max(intervals, key=lambda interval: interval[0] - interval[2])


async def test_the_ledger_has_one_row_per_answered_request(
    nginx_binary: str,
    upstream: FakeUpstream,
    shared_database_url: str,
    shared_redis_url: str,
    key_name: str,
    tmp_path: Path,
    sdk: SDK,
) -> None:
    config, secret = await shared_setup(
        upstream, shared_database_url, shared_redis_url, key_name, tmp_path
    )
    seeds = list(range(240))  # half of them streams
    async with cluster(nginx_binary, config, tmp_path) as running:
        client = sdk(running.url, key=secret)
        answers: list[Answer] = []

        async def client_loop(first: int) -> None:
            for seed in seeds[first::CLIENTS]:
                answers.append(await send(client, seed))

        await asyncio.gather(*(client_loop(i) for i in range(CLIENTS)))
        await shipped(shared_database_url, lambda rows: len(rows) >= len(answers))
        await running.stop()
    # nginx spread the load: each replica answered some of it.
    assert all(replica.answered() for replica in running.replicas)
    billed = [bill_of(received.json["metadata"]["user_id"]) for received in upstream.received]
    assert sorted(billed, key=str) == sorted((bill_of(tag(seed)) for seed in seeds), key=str)
    assert sorted(billed, key=str) == sorted((answer.bill for answer in answers), key=str)
    rows = await ledger_rows(shared_database_url)
    assert sorted(row.request_id for row in rows) == sorted(a.request_id for a in answers)
    assert disagreements(rows, answers) == []
    assert sum(row.input_tokens for row in rows) == sum(bill.input_tokens for bill in billed)
    assert sum(row.output_tokens for row in rows) == sum(bill.output_tokens for bill in billed)
    assert sum(row.cost_micro_usd for row in rows) == sum(
        bill.input_tokens * PRICE["input"] + bill.output_tokens * PRICE["output"] for bill in billed
    )


async def test_a_replica_killed_mid_load_loses_no_row_and_duplicates_none(
    nginx_binary: str,
    upstream: FakeUpstream,
    shared_database_url: str,
    shared_redis_url: str,
    key_name: str,
    tmp_path: Path,
    sdk: SDK,
) -> None:
    config, secret = await shared_setup(
        upstream, shared_database_url, shared_redis_url, key_name, tmp_path
    )
    answers: list[Answer] = []
    failed: list[BaseException] = []
    async with cluster(nginx_binary, config, tmp_path) as running:
        client = sdk(running.url, key=secret)
        done = asyncio.Event()

        async def client_loop(first: int) -> None:
            for seed in range(first, 1_000_000, CLIENTS):
                if done.is_set():
                    return
                try:
                    answers.append(await send(client, seed))
                except (
                    Exception
                ) as cut:  # an error answer, or a connection cut (the SDK's transport's)
                    failed.append(cut)  # in flight at the killed replica

        load = asyncio.gather(*(client_loop(i) for i in range(CLIENTS)))
        try:
            # Killed once rows are shipped (so that a replay meets rows already in) and more
            # have been answered since (so that some are only in the journal).
            await shipped(shared_database_url, lambda rows: len(rows) > 0)
            await answered_more(answers, 60)
            victim = running.replicas[0]
            await victim.kill()
            killed_answered = victim.answered()
            await answered_more(answers, 60)
            await victim.start()  # the same directory, port and config
            await answered_more(answers, 60)
            restarted_answered = victim.answered()
        finally:
            done.set()
            await asyncio.wait_for(load, timeout=PROGRESS_WITHIN)
        await shipped(shared_database_url, lambda rows: covers(rows, answers))
        await running.stop()
    rows = await ledger_rows(shared_database_url)
    ids = [row.request_id for row in rows]
    assert len(ids) == len(set(ids)) <= len(upstream.received)
    assert {answer.request_id for answer in answers} <= set(ids)
    assert disagreements(rows, answers) == []
    assert len(failed) <= CLIENTS, failed  # only what was in flight at the kill
    # The killed replica had answered requests (their rows had to survive it), and the one
    # started in its place answered some too.
    assert killed_answered & {answer.request_id for answer in answers}
    assert restarted_answered & {answer.request_id for answer in answers}


def covers(rows: list[LedgerRow], answers: list[Answer]) -> bool:
    return {answer.request_id for answer in answers} <= {row.request_id for row in rows}


def disagreements(rows: list[LedgerRow], answers: list[Answer]) -> list[tuple[LedgerRow, Answer]]:
    """The answered requests whose rows hold other tokens than the client was told."""
    by_id = {row.request_id: row for row in rows}
    return [
        (by_id[answer.request_id], answer)
        for answer in answers
        if answer.request_id in by_id
        and (by_id[answer.request_id].input_tokens, by_id[answer.request_id].output_tokens)
        != (answer.bill.input_tokens, answer.bill.output_tokens)
    ]


async def shipped(database: str, enough: Callable[[list[LedgerRow]], bool]) -> None:
    """Waits (bounded) until the ledger's rows are `enough`."""
    for _ in range(int(SHIPPED_WITHIN / LEDGER_POLL_EVERY)):
        if enough(await ledger_rows(database)):
            return
        await asyncio.sleep(LEDGER_POLL_EVERY)
    raise AssertionError(f"the ledger did not get its rows within {SHIPPED_WITHIN} s")


async def answered_more(answers: list[Answer], count: int) -> None:
    """Waits (bounded) until `count` more requests than now have been answered."""
    target = len(answers) + count
    for _ in range(int(PROGRESS_WITHIN / POLL_EVERY)):
        if len(answers) >= target:
            return
        await asyncio.sleep(POLL_EVERY)
    raise AssertionError(f"fewer than {count} answers within {PROGRESS_WITHIN} s")
