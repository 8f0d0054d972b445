"""The Anthropic-native path through the gateway, with the official SDK as the client."""

from __future__ import annotations

import fakes.anthropic_script as script
from conftest import PROVIDER_KEY
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream
from helpers import anthropic_config

HELLO = [{"role": "user", "content": "Hello"}]


async def test_create_swaps_model_and_key_and_names_the_clients_model(
    upstream: FakeUpstream, sdk
) -> None:
    upstream.script(script.reply(script.message([{"type": "text", "text": "Hi there"}])))
    async with running_gateway(build_config(anthropic_config(upstream))) as (url, _):
        response = await sdk(url).messages.with_raw_response.create(
            model="claude-test",
            max_tokens=100,
            messages=HELLO,
            extra_headers={"anthropic-version": "2023-06-01", "anthropic-beta": "beta-a,beta-b"},
        )
    message = await response.parse()
    assert message.model == "claude-test"
    assert message.content[0].text == "Hi there"
    assert response.headers["request-id"].startswith("req_")
    assert response.headers["x-messagegate-provider"] == "anth"
    received = upstream.received[0]
    assert received.path == "/v1/messages"
    assert received.headers["x-api-key"] == PROVIDER_KEY
    assert received.headers["anthropic-version"] == "2023-06-01"
    assert received.headers["anthropic-beta"] == "beta-a,beta-b"
    assert received.json == {"model": "claude-upstream-1", "max_tokens": 100, "messages": HELLO}
