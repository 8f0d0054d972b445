"""A provider's `max_connections`, `max_waiting` and `pool_timeout`: a bounded queue, then a clear
retryable error (529 overloaded_error), never unbounded growth."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as script
from conftest import GATEWAY_KEY
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Reply
from helpers import anthropic_config, envelope, post
from messagegate.config import ConfigError
from messagegate.providers.slots import ConnectionSlots, PoolBusy

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
ANSWER = script.message([{"type": "text", "text": "Hi"}])


async def test_slots_queue_boundedly_and_hand_a_freed_slot_to_the_longest_waiter() -> None:
    slots = ConnectionSlots(limit=1, max_waiting=1, timeout=30)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    assert len(slots.waiters) == 1
    with pytest.raises(PoolBusy, match="all 1 connections are in use and 1 requests wait"):
        await slots.acquire()
    slots.release()
    await asyncio.wait_for(waiting, timeout=5)
    assert (slots.in_use, len(slots.waiters)) == (1, 0)
    slots.release()
    assert slots.in_use == 0


async def test_a_wait_longer_than_the_pool_timeout_fails_and_leaves_the_queue() -> None:
    slots = ConnectionSlots(limit=1, max_waiting=5, timeout=0.05)
    await slots.acquire()
    with pytest.raises(PoolBusy, match=r"no connection was free within 0\.05 s"):
        await slots.acquire()
    assert (slots.in_use, len(slots.waiters)) == (1, 0)


async def test_a_cancelled_waiter_leaves_the_queue_and_loses_no_slot() -> None:
    slots = ConnectionSlots(limit=1, max_waiting=5, timeout=30)
    await slots.acquire()
    waiting = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to the waiter...
    waiting.cancel()  # ...which is cancelled before it runs: the slot is passed on
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert (slots.in_use, len(slots.waiters)) == (0, 0)


async def test_a_provider_at_its_connection_limit_answers_529_then_serves_again(
    upstream: FakeUpstream,
) -> None:
    release = asyncio.Event()
    upstream.script(
        Reply(chunks=script.events(ANSWER), hold=release, hold_after=1),
        script.reply(ANSWER),
    )
    config = anthropic_config(upstream)
    config["providers"]["anth"] |= {"max_connections": 1, "max_waiting": 0}
    stream = {"model": "claude-test", "max_tokens": 5, "messages": HELLO, "stream": True}
    async with (
        running_gateway(build_config(config)) as (url, _),
        aiohttp.ClientSession(headers={"x-api-key": GATEWAY_KEY}) as session,
    ):
        async with session.post(url + "/v1/messages", json=stream) as held:
            await held.content.readuntil(b"\n\n")  # the stream holds the one connection
            status, _, body = await post(url, "/v1/messages", {**stream, "stream": False})
            release.set()
            await held.read()
        after, _, _ = await post(url, "/v1/messages", {**stream, "stream": False})
    assert status == 529
    error_type, message = envelope(body)
    assert error_type == "overloaded_error"
    # Retryable: tried again (no connection was sent either time), then reported.
    assert message == (
        "provider 'anth': all 1 connections are in use and 0 requests wait for one "
        "(max_connections, max_waiting) (after 2 attempts)"
    )
    assert after == 200
    assert len(upstream.received) == 2


def test_the_pool_keys_are_checked(upstream: FakeUpstream) -> None:
    config = anthropic_config(upstream)
    config["providers"]["anth"] |= {"max_connections": 0}
    with pytest.raises(ConfigError, match=r"providers\.anth\.max_connections: must be a positive"):
        build_config(config)
    config["providers"]["anth"] |= {"max_connections": 2, "max_waiting": -1}
    with pytest.raises(ConfigError, match=r"providers\.anth\.max_waiting: must not be negative"):
        build_config(config)
