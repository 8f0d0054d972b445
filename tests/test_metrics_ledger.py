"""The metrics that come from keys, limits and the ledger: refusals by kind, spend per key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from prometheus_client.parser import text_string_to_metric_families

import fakes.anthropic_script as script
from conftest import SDK
from fakes.clock import FakeClock
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, get
from messagegate.config import ApiKey, Secret
from messagegate.config.keyspec import KeyLimits
from messagegate.errors import DENIALS, RateLimited
from messagegate.limits.limiter import Limiter
from messagegate.telemetry.metrics import GatewayMetrics
from messagegate.telemetry.spend import FRESH_SECONDS

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
KEY = "mg-limited-key-0123456789"
OTHER_KEY = "mg-other-key-0123456789ab"
# 11 input and 7 output tokens at 1 and 2 USD per million: 25 micro-USD an answer.
ANSWER = script.message([{"type": "text", "text": "Hi"}])
ANSWER_COST = 11 * 1 + 7 * 2
PRICE = {"input": 1, "output": 2}
DENIALS_TOTAL = "messagegate_limit_denials_total"
SPEND_TOTAL = "messagegate_key_spend_usd_total"


def limited_config(upstream: FakeUpstream, **limits: Any) -> dict[str, Any]:
    return anthropic_config(
        upstream,
        keys=[
            {"key": KEY, "name": "alice", **limits},
            {"key": OTHER_KEY, "name": "bob", "models": ["claude-test"]},
        ],
        models={
            "claude-test": {"routes": [{"provider": "anth", "model": "up", "price": PRICE}]},
            "claude-big": {"routes": [{"provider": "anth", "model": "big", "price": PRICE}]},
        },
    )


async def series(url: str, name: str, label: str) -> dict[str, float]:
    """One family's samples by the value of `label`."""
    status, _, body = await get(url, "/metrics", key=None)
    assert status == 200, body
    return {
        s.labels[label]: s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
        if s.name == name
    }


async def ask(sdk: SDK, url: str, key: str = KEY, model: str = "claude-test") -> None:
    await sdk(url, key=key, max_retries=0).messages.create(
        model=model, max_tokens=10, messages=HELLO
    )


async def test_a_key_over_its_rpm_is_counted_as_rpm(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    async with running_gateway(build_config(limited_config(upstream, rpm=1))) as (url, _):
        # Every kind is there before anything is refused.
        assert await series(url, DENIALS_TOTAL, "kind") == dict.fromkeys(DENIALS, 0.0)
        await ask(sdk, url)
        with pytest.raises(anthropic.RateLimitError):
            await ask(sdk, url)
        assert await series(url, DENIALS_TOTAL, "kind") == {
            **dict.fromkeys(DENIALS, 0.0),
            "rpm": 1.0,
        }
    assert len(upstream.received) == 1


async def test_auth_and_model_refusals_have_their_kinds(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    async with running_gateway(build_config(limited_config(upstream))) as (url, _):
        with pytest.raises(anthropic.AuthenticationError):
            await ask(sdk, url, key="mg-not-a-key-0123456789")
        with pytest.raises(anthropic.PermissionDeniedError):
            await ask(sdk, url, key=OTHER_KEY, model="claude-big")
        await ask(sdk, url, key=OTHER_KEY)
        counted = await series(url, DENIALS_TOTAL, "kind")
    assert counted == {**dict.fromkeys(DENIALS, 0.0), "auth": 1.0, "model": 1.0}
    assert len(upstream.received) == 1


async def test_a_spent_budget_is_counted_as_budget(upstream: FakeUpstream, sdk: SDK) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    config = limited_config(upstream, budget=0.00002, period="day")  # 20 micro-USD: one answer
    async with running_gateway(build_config(config)) as (url, _):
        await ask(sdk, url)
        for _ in range(2):
            with pytest.raises(anthropic.APIStatusError) as caught:
                await ask(sdk, url)
            assert caught.value.status_code == 402
        counted = await series(url, DENIALS_TOTAL, "kind")
    assert counted == {**dict.fromkeys(DENIALS, 0.0), "budget": 2.0}
    assert len(upstream.received) == 1


@pytest.mark.parametrize(
    ("limits", "tokens", "kind"),
    [({"tpm": 100}, 101, "tpm"), ({"concurrency": 1}, 1, "concurrency"), ({"rpm": 1}, 1, "rpm")],
)
def test_the_limiter_names_the_limit_it_refused_on(
    limits: dict[str, Any], tokens: int, kind: str
) -> None:
    limiter = Limiter(lambda: 1000.0)
    alice = ApiKey(key=Secret("k"), name="alice", limits=KeyLimits(**limits))
    limiter.admit(alice, 100, 0)
    with pytest.raises(RateLimited) as caught:
        limiter.admit(alice, tokens, 0)
    assert caught.value.denial == kind


def ledger_config(upstream: FakeUpstream, db: Path, **metrics: Any) -> dict[str, Any]:
    raw = limited_config(upstream)
    raw["database"] = str(db)
    raw["metrics"] = {"key_labels": True, **metrics}
    return raw


def usd(micro_usd: int) -> Any:
    return pytest.approx(micro_usd / 1_000_000)


async def test_spend_per_key_is_what_the_ledger_holds_and_survives_a_restart(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    raw = ledger_config(upstream, tmp_path / "mg.db")
    clock = FakeClock()
    async with running_gateway(build_config(raw), clock=clock) as (url, app):
        await ask(sdk, url)
        await ask(sdk, url)
        await ask(sdk, url, key=OTHER_KEY)
        assert app.shipper is not None
        assert app.store is not None
        assert await app.shipper.ship_once() == 3
        by_key = await app.store.usage("key", "0000-00-00")
        held = {r["key"]: r["cost_micro_usd"] for r in by_key}
        assert held == {"alice": 2 * ANSWER_COST, "bob": ANSWER_COST}
        assert await series(url, SPEND_TOTAL, "key") == {k: usd(v) for k, v in held.items()}
        # Scrapes within a few seconds are answered from the last read.
        await ask(sdk, url, key=OTHER_KEY)
        assert await app.shipper.ship_once() == 1
        assert (await series(url, SPEND_TOTAL, "key"))["bob"] == usd(ANSWER_COST)
        clock.advance(FRESH_SECONDS)
        assert (await series(url, SPEND_TOTAL, "key"))["bob"] == usd(2 * ANSWER_COST)
    # A new gateway on the same database has served nothing yet: the series come from the ledger.
    async with running_gateway(build_config(raw)) as (url, _):
        spent = await series(url, SPEND_TOTAL, "key")
    assert spent == {"alice": usd(2 * ANSWER_COST), "bob": usd(2 * ANSWER_COST)}
    assert len(upstream.received) == 4


async def test_spend_series_are_capped_like_the_other_key_series(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    raw = ledger_config(upstream, tmp_path / "mg.db", max_key_series=1)
    async with running_gateway(build_config(raw)) as (url, app):
        await ask(sdk, url, key=OTHER_KEY)
        await ask(sdk, url, key=OTHER_KEY)
        await ask(sdk, url)
        assert app.shipper is not None
        assert await app.shipper.ship_once() == 3
        spent = await series(url, SPEND_TOTAL, "key")
        requests = await series(url, "messagegate_key_requests_total", "key")
    assert spent == {"bob": usd(2 * ANSWER_COST), "other": usd(ANSWER_COST)}
    assert set(requests) == set(spent)


async def test_no_spend_series_without_key_labels(
    upstream: FakeUpstream, sdk: SDK, tmp_path: Path
) -> None:
    upstream.responder = lambda _: script.reply(ANSWER)
    raw = ledger_config(upstream, tmp_path / "mg.db", key_labels=False)
    async with running_gateway(build_config(raw)) as (url, app):
        await ask(sdk, url)
        assert app.shipper is not None
        assert await app.shipper.ship_once() == 1
        assert await series(url, SPEND_TOTAL, "key") == {}


class Rollups:
    """A ledger whose totals a test sets, or whose reads fail."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}
        self.reads = 0
        self.broken = False

    async def spend_by_key(self) -> dict[str, int]:
        self.reads += 1
        if self.broken:
            raise OSError("disk gone")
        return self.spent


async def test_workers_report_the_ledger_s_spend_once_and_keep_it_when_the_store_fails(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = build_config(
        {
            "providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
            "models": {"m": {"routes": [{"provider": "p", "model": "m-1"}]}},
            "metrics": {"key_labels": True},
        }
    )
    clock = FakeClock()
    metrics = GatewayMetrics(config, clock, shared_directory=str(tmp_path))
    rollups = Rollups()
    rollups.spent = {"alice": 1_500_000, "": 9}
    metrics.read_spend(rollups)

    def spent(body: bytes) -> list[tuple[dict[str, str], float]]:
        families = text_string_to_metric_families(body.decode())
        return [(s.labels, s.value) for f in families for s in f.samples if s.name == SPEND_TOTAL]

    assert spent(await metrics.scrape()) == [({"key": "alice"}, 1.5)]
    assert spent(metrics.render()) == [({"key": "alice"}, 1.5)]
    rollups.broken = True
    clock.advance(FRESH_SECONDS)
    assert spent(await metrics.scrape()) == [({"key": "alice"}, 1.5)]
    assert "disk gone" in caplog.text
    # A failed read is retried when the last one is stale, not at every scrape.
    await metrics.scrape()
    assert rollups.reads == 2
