"""Per-key limits: GCRA buckets, concurrency, budgets (soft and hard) and their periods with an
injected clock; the 429 and 402 answers and the rate-limit headers through the official SDK."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import anthropic
import pytest

import fakes.anthropic_script as script
from fakes.clock import FakeClock
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import anthropic_config
from messagegate.config import ApiKey, Model, Secret
from messagegate.config.keyspec import KeyLimits
from messagegate.errors import BudgetExhausted, RateLimited
from messagegate.limits.limiter import _RESETS, Limiter, Ticket, header_pairs
from messagegate.limits.periods import Periods
from messagegate.server.accounting import Accounting

HELLO = [{"role": "user", "content": "Hello"}]
KEY = "mg-limited-key-0123456789"
# 11 input and 7 output tokens at 1 and 2 USD per million: 25 micro-USD an answer.
ANSWER = script.message([{"type": "text", "text": "Hi"}])
ANSWER_COST = 11 * 1 + 7 * 2
PRICE = {"input": 1, "output": 2}


def key(**limits: Any) -> ApiKey:
    return ApiKey(key=Secret("k"), name="alice", limits=KeyLimits(**limits))


def retry_after(limiter: Limiter, alice: ApiKey, tokens: int) -> str | None:
    """None when admitted (and held), else the refusal's retry-after."""
    try:
        limiter.admit(alice, tokens, 0)
    except RateLimited as refused:
        return refused.headers["retry-after"]
    return None


def test_a_bucket_admits_a_minute_then_one_per_interval() -> None:
    clock = FakeClock(100.0)
    limiter = Limiter(clock)
    alice = key(rpm=60)
    assert all(retry_after(limiter, alice, 0) is None for _ in range(60))
    lines = dict(header_pairs(limiter.head_lines(limiter._states["alice"], 100.0)))
    assert lines[b"anthropic-ratelimit-requests-remaining"] == b"0"
    assert retry_after(limiter, alice, 0) == "1"
    clock.now = 100.5
    assert retry_after(limiter, alice, 0) == "1"
    clock.now = 101.0
    assert retry_after(limiter, alice, 0) is None


def test_a_bucket_waits_its_interval_a_unit_and_takes_corrections() -> None:
    clock = FakeClock(100.0)
    limiter = Limiter(clock)
    alice = key(tpm=60)  # a token a second
    ticket = limiter.admit(alice, 60, 0)
    assert retry_after(limiter, alice, 1) == "1"
    assert retry_after(limiter, alice, 10) == "10"
    clock.now = 105.0
    assert retry_after(limiter, alice, 10) == "5"
    ticket.settle(25, 0)  # 35 of the 60 reserved come back
    lines = dict(header_pairs(ticket.head_lines()))
    assert lines[b"anthropic-ratelimit-tokens-remaining"] == b"40"
    assert lines[b"anthropic-ratelimit-tokens-reset"] == b"1970-01-01T00:02:05Z"  # 100 + 25 used
    # A refused request takes nothing from any bucket.
    assert retry_after(limiter, alice, 50) == "10"
    assert dict(header_pairs(ticket.head_lines())) == lines


def test_a_bucket_admits_more_than_it_holds_only_when_full() -> None:
    clock = FakeClock(0.0)
    limiter = Limiter(clock)
    alice = key(tpm=100)
    assert retry_after(limiter, alice, 150) is None
    assert retry_after(limiter, alice, 1) is not None
    clock.now = 89.0
    assert retry_after(limiter, alice, 150) is not None
    clock.now = 90.0
    assert retry_after(limiter, alice, 150) is None


def test_limiter_refuses_and_reserves_nothing_when_refused() -> None:
    clock = FakeClock(1000.0)
    limiter = Limiter(clock)
    alice = key(rpm=10, tpm=100)
    first = limiter.admit(alice, 80, 0)
    with pytest.raises(RateLimited) as caught:
        limiter.admit(alice, 80, 0)
    assert caught.value.headers["retry-after"] == "36"
    assert caught.value.headers["anthropic-ratelimit-requests-remaining"] == "9"
    # The refused request took no request from the requests bucket.
    first.settle(20, 0)  # used 20 of the 80 reserved: 60 come back
    second = limiter.admit(alice, 80, 0)
    headers = dict(header_pairs(second.head_lines()))
    assert headers[b"anthropic-ratelimit-requests-remaining"] == b"8"
    assert headers[b"anthropic-ratelimit-tokens-remaining"] == b"0"


def test_a_keys_rate_limit_lines_follow_its_limits_when_they_change() -> None:
    limiter = Limiter(FakeClock(datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp()))
    lines = limiter.admit(key(rpm=10, tpm=100), 30, 0).head_lines()
    assert header_pairs(lines) == [
        (b"anthropic-ratelimit-requests-limit", b"10"),
        (b"anthropic-ratelimit-requests-remaining", b"9"),
        (b"anthropic-ratelimit-requests-reset", b"2026-12-03T12:00:06Z"),
        (b"anthropic-ratelimit-tokens-limit", b"100"),
        (b"anthropic-ratelimit-tokens-remaining", b"70"),
        (b"anthropic-ratelimit-tokens-reset", b"2026-12-03T12:00:18Z"),
    ]
    # Reloaded with other limits: new buckets, and lines naming the new limits only.
    assert dict(header_pairs(limiter.admit(key(tpm=50), 10, 0).head_lines())) == {
        b"anthropic-ratelimit-tokens-limit": b"50",
        b"anthropic-ratelimit-tokens-remaining": b"40",
        b"anthropic-ratelimit-tokens-reset": b"2026-12-03T12:00:12Z",
    }
    assert limiter.admit(key(concurrency=3), 10, 0).head_lines() == b""


def test_reset_times_are_rfc3339_seconds_and_their_memory_is_bounded() -> None:
    start = int(datetime(2026, 12, 31, 23, 58, tzinfo=UTC).timestamp())
    for second in range(start, start + 200):  # across a minute, an hour and a year
        expected = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        assert _RESETS[second] == _RESETS[second] == expected.encode()
        assert len(_RESETS) <= 64


def test_a_budget_reserves_the_dearest_route_of_the_model_as_loaded() -> None:
    def model(*prices: tuple[float, float]) -> Model:
        routes = [
            {"provider": "anth", "model": f"up-{n}", "price": {"input": i, "output": o}}
            for n, (i, o) in enumerate(prices)
        ]
        config = build_config(
            {
                "providers": {"anth": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}},
                "models": {"claude-test": {"routes": routes}},
            }
        )
        return config.models["claude-test"]

    accounting = Accounting(Limiter(FakeClock()))
    alice = key(budget=1.0, budget_mode="hard")  # hard: the body's 400 bytes are 400 tokens
    two = model((1, 10), (5, 2), (1, 2))  # (1, 2) is cheaper than both on both
    assert reserved(accounting.admit(alice, two, 400, 100)) == 400 * 5 + 100 * 2
    assert reserved(accounting.admit(alice, two, 400, 1000)) == 400 * 1 + 1000 * 10
    # A reloaded model with other prices reserves by those.
    assert reserved(accounting.admit(alice, model((3, 3)), 400, 100)) == 400 * 3 + 100 * 3
    soft = key(budget=1.0)  # soft: 4 bytes a token
    assert reserved(accounting.admit(soft, model((3, 3)), 400, 100)) == 100 * 3 + 100 * 3


def reserved(ticket: Ticket | None) -> int:
    assert ticket is not None
    return ticket.cost


def test_retry_after_is_at_most_60_seconds() -> None:
    limiter = Limiter(FakeClock())
    alice = key(rpm=1)
    limiter.admit(alice, 0, 0)
    with pytest.raises(RateLimited) as caught:
        limiter.admit(alice, 0, 0)
    assert caught.value.headers["retry-after"] == "60"
    slow = key(tpm=1)
    limiter.admit(slow, 10, 0)
    with pytest.raises(RateLimited) as caught:
        limiter.admit(slow, 10, 0)
    assert caught.value.headers["retry-after"] == "60"


def test_concurrency_leases_come_back() -> None:
    limiter = Limiter(FakeClock())
    alice = key(concurrency=2)
    first, _ = limiter.admit(alice, 1, 0), limiter.admit(alice, 1, 0)
    with pytest.raises(RateLimited, match="2 requests at once"):
        limiter.admit(alice, 1, 0)
    first.release()
    first.release()  # once only
    limiter.admit(alice, 1, 0)
    with pytest.raises(RateLimited):
        limiter.admit(alice, 1, 0)


def admitted_until_refused(limiter: Limiter, alice: ApiKey, cost: int) -> list[Ticket]:
    tickets: list[Ticket] = []
    for _ in range(100):
        try:
            tickets.append(limiter.admit(alice, 0, cost))
        except BudgetExhausted:
            return tickets
    raise AssertionError("never refused")


def test_soft_budget_overshoots_by_at_most_one_request() -> None:
    limiter = Limiter(FakeClock())
    alice = key(budget=0.001)  # 1000 micro-USD
    tickets = admitted_until_refused(limiter, alice, 300)
    assert len(tickets) == 4  # 0, 300, 600, 900 reserved before each: all under 1000
    for ticket in tickets:
        ticket.settle(0, 300)
    state = limiter._states["alice"]
    assert state.spent == 1200 <= 1000 + 300


def test_hard_budget_never_overshoots() -> None:
    limiter = Limiter(FakeClock())
    alice = key(budget=0.001, budget_mode="hard")
    tickets = admitted_until_refused(limiter, alice, 300)
    assert len(tickets) == 3
    tickets[0].settle(0, 100)  # cost less than its worst case: room for one more
    limiter.admit(alice, 0, 300)


@pytest.mark.parametrize(
    ("period", "zone", "boundary"),
    [
        ("day", "UTC", datetime(2026, 12, 4, tzinfo=UTC)),
        ("week", "UTC", datetime(2026, 12, 7, tzinfo=UTC)),  # a Monday
        ("month", "UTC", datetime(2027, 1, 1, tzinfo=UTC)),
        ("day", "Europe/Paris", datetime(2026, 12, 3, 23, tzinfo=UTC)),
    ],
)
def test_budget_resets_exactly_at_the_boundary(period: str, zone: str, boundary: datetime) -> None:
    clock = FakeClock(boundary.timestamp() - 3600)
    limiter = Limiter(clock, Periods(zone))
    alice = key(budget=0.0001, period=period)
    limiter.admit(alice, 0, 0).settle(0, 100)
    clock.now = boundary.timestamp() - 0.001
    with pytest.raises(BudgetExhausted) as caught:
        limiter.admit(alice, 0, 0)
    expected = boundary.isoformat().replace("+00:00", "Z")
    assert f"it resets at {expected}" in caught.value.message
    assert caught.value.headers == {"x-should-retry": "false"}
    clock.now = boundary.timestamp()
    limiter.admit(alice, 0, 0)


def limited_config(upstream: FakeUpstream, **limits: Any) -> dict[str, Any]:
    return anthropic_config(
        upstream,
        keys=[{"key": KEY, "name": "alice", **limits}],
        models={"claude-test": {"routes": [{"provider": "anth", "model": "up", "price": PRICE}]}},
    )


def answering(upstream: FakeUpstream) -> None:
    def respond(received: Received) -> Reply:
        if received.json.get("stream"):
            return script.stream_reply(ANSWER)
        return script.reply(ANSWER)

    upstream.responder = respond


async def ask(sdk: Any, url: str, stream: bool, max_tokens: int = 10) -> Any:
    client = sdk(url, key=KEY)
    if stream:
        async with client.messages.stream(
            model="claude-test", max_tokens=max_tokens, messages=HELLO
        ) as s:
            await s.get_final_message()
            return s.response
    return await client.messages.with_raw_response.create(
        model="claude-test", max_tokens=max_tokens, messages=HELLO
    )


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_rpm_gives_429_with_the_key_s_headers(
    upstream: FakeUpstream, sdk: Any, stream: bool
) -> None:
    answering(upstream)
    clock = FakeClock(datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp())
    async with running_gateway(
        build_config(limited_config(upstream, rpm=2, tpm=10_000)), wall_clock=clock
    ) as (url, _):
        for remaining in ("1", "0"):
            response = await ask(sdk, url, stream)
            assert response.headers["anthropic-ratelimit-requests-limit"] == "2"
            assert response.headers["anthropic-ratelimit-requests-remaining"] == remaining
            assert response.headers["anthropic-ratelimit-tokens-limit"] == "10000"
            assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
        with pytest.raises(anthropic.RateLimitError) as caught:
            await ask(sdk, url, stream)
        headers = caught.value.response.headers
        assert caught.value.status_code == 429
        assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
        assert "2 requests per minute" in caught.value.message
        assert headers["retry-after"] == "30"
        assert headers["anthropic-ratelimit-requests-remaining"] == "0"
        assert len(upstream.received) == 2
        clock.advance(30)
        await ask(sdk, url, stream)
    assert len(upstream.received) == 3


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_the_key_s_headers_replace_the_upstream_s_of_the_same_name(
    upstream: FakeUpstream, sdk: Any, stream: bool
) -> None:
    upstream_limits = {
        "anthropic-ratelimit-requests-limit": "4000",
        "anthropic-ratelimit-requests-remaining": "3999",
        "anthropic-ratelimit-output-tokens-limit": "80000",
    }

    def respond(received: Received) -> Reply:
        if received.json.get("stream"):
            return script.stream_reply(ANSWER, headers=upstream_limits)
        return script.reply(ANSWER, headers=upstream_limits)

    upstream.responder = respond
    async with running_gateway(build_config(limited_config(upstream, rpm=2, tpm=10_000))) as (
        url,
        _,
    ):
        response = await ask(sdk, url, stream)
    sent = response.headers
    assert sent.get_list("anthropic-ratelimit-requests-limit") == ["2"]
    assert sent.get_list("anthropic-ratelimit-requests-remaining") == ["1"]
    # A limit the key does not set is the upstream's, relayed.
    assert sent.get_list("anthropic-ratelimit-output-tokens-limit") == ["80000"]


async def test_the_key_s_headers_reach_an_answer_under_uvicorns_own_protocol(
    upstream: FakeUpstream, sdk: Any
) -> None:
    """Without messagegate's protocol, the head lines are handed to the server as headers."""
    answering(upstream)
    clock = FakeClock(datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp())
    config = build_config(limited_config(upstream, rpm=2, tpm=10_000))
    async with running_gateway(config, http="httptools", wall_clock=clock) as (url, _):
        response = await ask(sdk, url, False)
    assert response.headers["anthropic-ratelimit-requests-limit"] == "2"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert response.headers["anthropic-ratelimit-requests-reset"] == "2026-12-03T12:00:30Z"
    assert response.headers["anthropic-ratelimit-tokens-limit"] == "10000"


async def test_tpm_reserves_max_tokens_and_corrects_at_the_end(
    upstream: FakeUpstream, sdk: Any
) -> None:
    answering(upstream)
    clock = FakeClock(1e9)
    async with running_gateway(
        build_config(limited_config(upstream, tpm=1000)), wall_clock=clock
    ) as (url, _):
        response = await ask(sdk, url, False, max_tokens=900)
        # 900 reserved at admission, 18 used: what is left shows the correction.
        assert response.headers["anthropic-ratelimit-tokens-remaining"] == "982"
        with pytest.raises(anthropic.RateLimitError, match="1000 tokens per minute"):
            await ask(sdk, url, True, max_tokens=990)
    assert len(upstream.received) == 1


async def test_concurrency_limit_holds_while_a_stream_runs(
    upstream: FakeUpstream, sdk: Any
) -> None:
    hold = asyncio.Event()
    upstream.script(script.stream_reply(ANSWER, hold=hold, hold_after=2))
    upstream.default = script.reply(ANSWER)
    async with running_gateway(build_config(limited_config(upstream, concurrency=1))) as (url, _):
        client = sdk(url, key=KEY)
        async with client.messages.stream(model="claude-test", max_tokens=5, messages=HELLO) as s:
            with pytest.raises(anthropic.RateLimitError, match="1 requests at once") as caught:
                await ask(sdk, url, False)
            assert caught.value.response.headers["retry-after"] == "1"
            hold.set()
            await s.get_final_message()
        await ask(sdk, url, False)
    assert len(upstream.received) == 2


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
async def test_spent_budget_gives_402_that_is_not_retried(
    upstream: FakeUpstream, sdk: Any, stream: bool
) -> None:
    answering(upstream)
    clock = FakeClock(datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp())
    config = limited_config(upstream, budget=0.00004, period="day")  # 40 micro-USD
    async with running_gateway(build_config(config), wall_clock=clock) as (url, app):
        await ask(sdk, url, stream)
        await ask(sdk, url, stream)  # 25 spent < 40: admitted, overshoots by this one
        assert app.limiter._states["alice"].spent == 2 * ANSWER_COST
        # With retries allowed the SDK still makes one call: x-should-retry says no.
        client = sdk(url, key=KEY, max_retries=3)
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model="claude-test", max_tokens=10, messages=HELLO)
        assert caught.value.status_code == 402
        assert caught.value.body["error"]["type"] == "billing_error"  # type: ignore[index]
        assert caught.value.response.headers["x-should-retry"] == "false"
        assert "resets at 2026-12-04T00:00:00Z" in caught.value.message
        assert len(upstream.received) == 2
        clock.now = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
        await ask(sdk, url, stream)
    assert len(upstream.received) == 3


async def test_budget_holds_under_64_concurrent_clients(upstream: FakeUpstream, sdk: Any) -> None:
    answering(upstream)
    budget_micro = 1000
    config = limited_config(upstream, budget=budget_micro / 1e6)
    async with running_gateway(build_config(config)) as (url, app):
        statuses: list[int] = []

        async def client() -> int:
            """Asks until refused (bounded): the budget is used up, not just reached."""
            for answered in range(100):
                try:
                    await ask(sdk, url, False)
                except anthropic.APIStatusError as exc:
                    statuses.append(exc.status_code)
                    return answered
            raise AssertionError("never refused")

        answered = sum(await asyncio.gather(*(client() for _ in range(64))))
        state = app.limiter._states["alice"]
    assert statuses == [402] * 64
    assert state.spent == answered * ANSWER_COST
    assert answered == len(upstream.received)
    assert budget_micro <= state.spent <= budget_micro + ANSWER_COST
    assert state.reserved == 0


async def test_a_restarted_gateway_remembers_what_a_budget_spent(
    upstream: FakeUpstream, sdk: Any, tmp_path: Any
) -> None:
    answering(upstream)
    clock = FakeClock(datetime(2026, 12, 3, 12, tzinfo=UTC).timestamp())
    raw = limited_config(upstream, budget=0.00004, period="day")  # 40 micro-USD
    raw["database"] = str(tmp_path / "mg.db")
    async with running_gateway(build_config(raw), wall_clock=clock) as (url, _):
        await ask(sdk, url, False)
        await ask(sdk, url, True)
    # The first gateway shipped its rows as it stopped; the next one starts from them.
    async with running_gateway(build_config(raw), wall_clock=clock) as (url, app):
        assert app.limiter._states["alice"].spent == 2 * ANSWER_COST
        with pytest.raises(anthropic.APIStatusError) as caught:
            await ask(sdk, url, False)
        assert caught.value.status_code == 402
        clock.now = datetime(2026, 12, 4, tzinfo=UTC).timestamp()
        await ask(sdk, url, False)
    assert len(upstream.received) == 3
