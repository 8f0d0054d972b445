"""The metrics that come from keys, limits and the ledger: refusals by kind, spend per key."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam
from prometheus_client.parser import text_string_to_metric_families

import fakes.anthropic_script as script
from conftest import SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config, get
from messagegate.config import ApiKey, Secret
from messagegate.errors import DENIALS, RateLimited
from messagegate.keyspec import KeyLimits
from messagegate.limits.limiter import Limiter

HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]
KEY = "mg-limited-key-0123456789"
OTHER_KEY = "mg-other-key-0123456789ab"
# 11 input and 7 output tokens at 1 and 2 USD per million: 25 micro-USD an answer.
ANSWER = script.message([{"type": "text", "text": "Hi"}])
ANSWER_COST = 11 * 1 + 7 * 2
PRICE = {"input": 1, "output": 2}
DENIALS_TOTAL = "messagegate_limit_denials_total"


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
