"""The embedded default (providers from the environment), patterns and `provider/model` names."""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from anthropic.types import MessageParam

import fakes.anthropic_script as anthropic_script
import fakes.openai_script as openai_script
from conftest import GATEWAY_KEY, PROVIDER_KEY, SDK
from fakes.gateway import build_config, running_gateway
from fakes.upstream import FakeUpstream, Received, Reply
from helpers import envelope, first_text, get, post
from messagegate.catalogue import KNOWN_PROVIDERS
from messagegate.config import ConfigError
from messagegate.defaults import default_config
from messagegate.routing.names import MADE_MODELS_MAX
from messagegate.routing.policy import RoutingSettings
from messagegate.routing.router import RouteRequest

HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]
SETTINGS = RoutingSettings.resolve({})


def answer_anthropic(received: Received) -> Reply:
    """An Anthropic answer naming the model the upstream was asked for."""
    model = received.json["model"]
    return anthropic_script.reply(
        anthropic_script.message([{"type": "text", "text": f"anthropic:{model}"}], model=model)
    )


def answer_openai(received: Received) -> Reply:
    model = received.json["model"]
    return Reply(json=openai_script.completion(model, f"openai:{model}", []))


def environ(anthropic_up: FakeUpstream, openai_up: FakeUpstream, **extra: str) -> dict[str, str]:
    return {
        "ANTHROPIC_API_KEY": PROVIDER_KEY,
        "ANTHROPIC_BASE_URL": anthropic_up.url,
        "OPENAI_API_KEY": PROVIDER_KEY + "-openai",
        "OPENAI_BASE_URL": anthropic_up.url if openai_up is anthropic_up else openai_up.url + "/v1",
        **extra,
    }


@pytest.fixture
def two_upstreams(upstream: FakeUpstream, second_upstream: FakeUpstream) -> dict[str, str]:
    upstream.responder = answer_anthropic
    second_upstream.responder = answer_openai
    return environ(upstream, second_upstream)


@pytest.mark.parametrize(
    ("asked", "kind", "upstream_model"),
    [
        ("claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "anthropic", "claude-3-5-haiku-latest"),
        ("gpt-4.1-mini", "openai", "gpt-4.1-mini"),
        ("o3-mini", "openai", "o3-mini"),
        ("openai/my-finetune:v2", "openai", "my-finetune:v2"),
        ("anthropic/claude-opus-4-1", "anthropic", "claude-opus-4-1"),
    ],
)
async def test_the_default_routes_by_pattern_and_by_provider_name(
    two_upstreams: dict[str, str],
    upstream: FakeUpstream,
    second_upstream: FakeUpstream,
    sdk: SDK,
    asked: str,
    kind: str,
    upstream_model: str,
) -> None:
    async with running_gateway(default_config(two_upstreams)) as (url, _):
        message = await sdk(url, key="unused").messages.create(
            model=asked, max_tokens=20, messages=HELLO
        )
    reached = upstream if kind == "anthropic" else second_upstream
    other = second_upstream if kind == "anthropic" else upstream
    assert [r.json["model"] for r in reached.received] == [upstream_model]
    assert other.received == []
    assert message.content[0].type == "text"
    assert first_text(message) == f"{kind}:{upstream_model}"
    if kind == "anthropic":
        assert reached.received[0].headers["x-api-key"] == PROVIDER_KEY
    else:
        assert reached.received[0].path == "/v1/chat/completions"
        assert reached.received[0].headers["authorization"] == f"Bearer {PROVIDER_KEY}-openai"
        # The client sees the name it asked for, as with any configured model.
        assert message.model == asked


async def test_the_default_streams_through_a_pattern(
    two_upstreams: dict[str, str], second_upstream: FakeUpstream, sdk: SDK
) -> None:
    second_upstream.responder = lambda received: Reply(
        chunks=openai_script.chunks(received.json["model"], "streamed", [], usage=True)
    )
    async with (
        running_gateway(default_config(two_upstreams)) as (url, _),
        sdk(url).messages.stream(model="gpt-4o", max_tokens=20, messages=HELLO) as stream,
    ):
        final = await stream.get_final_message()
    assert final.content[0].type == "text"
    assert first_text(final) == "streamed"
    assert second_upstream.received[0].json["model"] == "gpt-4o"
    assert second_upstream.received[0].json["stream"] is True


async def test_a_name_no_provider_takes_is_404_and_nothing_is_sent(
    two_upstreams: dict[str, str], upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    async with running_gateway(default_config(two_upstreams)) as (url, _):
        unknown = await post(url, "/v1/messages", _body("mistral-large-latest"), key=None)
        unknown_provider = await post(url, "/v1/messages", _body("nobody/x"), key=None)
    assert unknown[0] == 404
    assert envelope(unknown[2]) == ("not_found_error", "model: mistral-large-latest")
    assert unknown_provider[0] == 404
    assert upstream.received == second_upstream.received == []


async def test_with_no_provider_it_starts_and_each_request_says_what_to_set() -> None:
    config = default_config({})
    assert (config.host, config.port, config.providers, config.keys) == ("127.0.0.1", 8080, {}, ())
    async with running_gateway(config) as (url, _):
        status, _, raw = await post(url, "/v1/messages", _body("claude-sonnet-4-5"), key=None)
        health = await get(url, "/health", key=None)
    assert status == 404
    kind, message = envelope(raw)
    assert kind == "not_found_error"
    for variable in ("ANTHROPIC_API_KEY", "OPENAI_API_KEY", "SCW_SECRET_KEY", "OLLAMA_BASE_URL"):
        assert variable in message
    assert "--config" in message
    assert health[0] == 200


async def test_messagegate_api_key_makes_a_key_required(
    upstream: FakeUpstream, second_upstream: FakeUpstream
) -> None:
    upstream.responder = answer_anthropic
    env = environ(upstream, second_upstream, MESSAGEGATE_API_KEY=GATEWAY_KEY)
    async with running_gateway(default_config(env)) as (url, _):
        without = await post(url, "/v1/messages", _body("claude-x"), key=None)
        wrong = await post(url, "/v1/messages", _body("claude-x"), key="mg-wrong")
        right = await post(url, "/v1/messages", _body("claude-x"), key=GATEWAY_KEY)
        bearer = await post(
            url,
            "/v1/messages",
            _body("claude-x"),
            headers={"authorization": f"Bearer {GATEWAY_KEY}"},
            key=None,
        )
    assert (without[0], envelope(without[2])[0]) == (401, "authentication_error")
    assert (wrong[0], envelope(wrong[2])[0]) == (401, "authentication_error")
    assert (right[0], bearer[0]) == (200, 200)
    assert len(upstream.received) == 2
    assert GATEWAY_KEY not in str(upstream.received[0].headers)


async def test_models_lists_the_patterns_of_the_providers_found(
    two_upstreams: dict[str, str], sdk: SDK
) -> None:
    async with running_gateway(default_config(two_upstreams)) as (url, _):
        client = sdk(url)
        listed = [m.id async for m in client.models.list(limit=100)]
        one = await client.models.retrieve("claude-sonnet-4-5")
        with pytest.raises(anthropic.NotFoundError):
            await client.models.retrieve("mistral-large-latest")
    expected = [p for k in KNOWN_PROVIDERS if k.name in ("anthropic", "openai") for p in k.patterns]
    assert sorted(listed) == sorted(expected)
    assert one.id == "claude-sonnet-4-5"


@pytest.mark.parametrize(
    ("variables", "providers"),
    [
        ({"MISTRAL_API_KEY": "m"}, ["mistral"]),
        ({"SCW_SECRET_KEY": "s", "GROQ_API_KEY": "g"}, ["groq", "scaleway"]),
        ({"OLLAMA_BASE_URL": "http://127.0.0.1:11434/v1"}, ["ollama"]),
        ({"OLLAMA_API_KEY": "only a key"}, []),
        ({"ANTHROPIC_API_KEY": ""}, []),
    ],
)
def test_providers_join_by_their_variables(variables: dict[str, str], providers: list[str]) -> None:
    config = default_config(variables)
    assert sorted(config.providers) == providers
    for provider in config.providers.values():
        known = next(k for k in KNOWN_PROVIDERS if k.name == provider.name)
        assert provider.base_url == variables.get(known.url_variable, known.base_url)
        assert provider.region == known.region
        assert provider.zero_data_retention is known.zero_data_retention
    if "mistral" in providers:
        assert config.providers["mistral"].dialect.tool_call_id_format == "alnum9"
        assert config.providers["mistral"].region == "eu"


async def test_an_eu_only_request_is_refused_a_us_pattern_route(
    two_upstreams: dict[str, str], upstream: FakeUpstream
) -> None:
    async with running_gateway(default_config(two_upstreams)) as (url, _):
        status, _, raw = await post(
            url, "/v1/messages", {**_body("claude-x"), "eu_native": True}, key=None
        )
    assert status == 400
    kind, message = envelope(raw)
    assert kind == "invalid_request_error"
    assert "anthropic/claude-x" in message
    assert "eu_native" in message
    assert upstream.received == []


# Pattern precedence in a config file: exact, then provider/model, then longer patterns first,
# ties in file order.


def precedence_config(upstream: FakeUpstream, **extra: Any) -> dict[str, Any]:
    return {
        "providers": {
            "a": {"kind": "anthropic", "base_url": upstream.url, "api_key": "k"},
            "b": {"kind": "anthropic", "base_url": upstream.url + "/b", "api_key": "k"},
        },
        "models": {
            "gpt-*": {"routes": [{"provider": "a"}]},
            "gpt-4.1*": {"routes": [{"provider": "b"}]},
            "gpt-4.1-mini": {"routes": [{"provider": "a", "model": "exact-upstream"}]},
            "x-?": {"routes": [{"provider": "a", "model": "first-tie"}]},
            "x-*": {"routes": [{"provider": "b", "model": "from-star"}]},
            "y-[ab]": {"routes": [{"provider": "b", "model": "second-tie"}]},
            "claude-known": {"routes": [{"provider": "b", "model": "claude-up"}]},
        },
        **extra,
    }


@pytest.mark.parametrize(
    ("asked", "path", "upstream_model"),
    [
        ("gpt-4.1-mini", "/v1/messages", "exact-upstream"),
        ("gpt-4.1-nano", "/b/v1/messages", "gpt-4.1-nano"),
        ("gpt-4o", "/v1/messages", "gpt-4o"),
        ("x-1", "/v1/messages", "first-tie"),
        ("x-12", "/b/v1/messages", "from-star"),
        ("y-a", "/b/v1/messages", "second-tie"),
        ("b/anything-else", "/b/v1/messages", "anything-else"),
        ("a/gpt-4.1-nano", "/v1/messages", "gpt-4.1-nano"),
    ],
)
async def test_pattern_precedence(
    upstream: FakeUpstream, sdk: SDK, asked: str, path: str, upstream_model: str
) -> None:
    upstream.responder = answer_anthropic
    async with running_gateway(build_config(precedence_config(upstream))) as (url, _):
        await sdk(url, key="none").messages.create(model=asked, max_tokens=5, messages=HELLO)
    assert [(r.path, r.json["model"]) for r in upstream.received] == [(path, upstream_model)]


async def test_provider_names_can_be_turned_off(upstream: FakeUpstream) -> None:
    raw = precedence_config(upstream, explicit_provider_models=False)
    async with running_gateway(build_config(raw)) as (url, _):
        status, _, body = await post(url, "/v1/messages", _body("b/anything"), key=None)
    assert (status, envelope(body)) == (404, ("not_found_error", "model: b/anything"))
    assert upstream.received == []


async def test_provider_model_reuses_a_configured_routes_settings(upstream: FakeUpstream) -> None:
    raw = precedence_config(upstream)
    raw["models"]["claude-known"]["routes"][0]["price"] = {"input": 3, "output": 15}
    upstream.responder = answer_anthropic
    config = build_config(raw)
    async with running_gateway(config) as (url, app):
        status, headers, _ = await post(url, "/v1/messages", _body("b/claude-up"), key=None)
        assert app.router is not None
        made = app.router.names.made["b/claude-up"]
    assert status == 200
    assert made.routes == config.models["claude-known"].routes
    assert made.routes[0].price is not None
    assert headers["x-messagegate-upstream-model"] == "claude-up"
    assert upstream.received[0].path == "/b/v1/messages"


async def test_fallbacks_and_failover_apply_to_pattern_models(upstream: FakeUpstream) -> None:
    raw = precedence_config(upstream)
    raw["models"]["gpt-*"]["fallbacks"] = ["claude-known"]
    upstream.script(
        anthropic_script.error_reply(500, "api_error", "down"),
        anthropic_script.error_reply(500, "api_error", "down"),
        anthropic_script.reply(anthropic_script.message([{"type": "text", "text": "fell back"}])),
    )
    async with running_gateway(build_config(raw)) as (url, _):
        status, headers, body = await post(url, "/v1/messages", _body("gpt-5"), key=None)
    assert status == 200, body
    assert [r.json["model"] for r in upstream.received] == ["gpt-5", "gpt-5", "claude-up"]
    assert headers["x-messagegate-upstream-model"] == "claude-up"


def test_a_pattern_is_not_a_fallback(upstream: FakeUpstream) -> None:
    raw = precedence_config(upstream)
    raw["models"]["claude-known"]["fallbacks"] = ["gpt-*"]
    with pytest.raises(ConfigError, match=r"models\.claude-known\.fallbacks\.0: unknown model"):
        build_config(raw)


async def test_names_made_from_patterns_are_bounded(upstream: FakeUpstream) -> None:
    upstream.responder = answer_anthropic
    async with running_gateway(build_config(precedence_config(upstream))) as (_, app):
        assert app.router is not None
        for i in range(MADE_MODELS_MAX + 50):
            model = app.router.model(f"gpt-{i}")
            app.router.plan(RouteRequest(model, _body(model.name), {}, SETTINGS))
            app.router.board[f"a/gpt-{i}"].succeeded(0.0)
        assert len(app.router.names.made) == MADE_MODELS_MAX
        assert len(app.router._floors) <= MADE_MODELS_MAX + len(app.router.config.models)
        assert len(app.router.board.routes) <= MADE_MODELS_MAX
        assert "gpt-0" not in app.router.names.made
        assert f"gpt-{MADE_MODELS_MAX + 49}" in app.router.names.made


def _body(model: str, max_tokens: int = 10) -> dict[str, Any]:
    return {"model": model, "max_tokens": max_tokens, "messages": HELLO}


async def test_aliases_and_default_models_may_name_patterns_and_provider_models(
    upstream: FakeUpstream, sdk: SDK
) -> None:
    upstream.responder = answer_anthropic
    raw = precedence_config(
        upstream,
        aliases={"latest": "gpt-4.1-turbo", "pinned": "b/claude-pinned"},
        request_defaults={"model": "latest", "max_tokens": 7},
    )
    async with running_gateway(build_config(raw)) as (url, _):
        client = sdk(url, key="none")
        via_alias = await client.messages.create(model="pinned", max_tokens=5, messages=HELLO)
        status, _, body = await post(url, "/v1/messages", {"messages": HELLO}, key=None)
        listed = [m.id async for m in client.models.list(limit=100)]
    assert status == 200, body
    assert [(r.path, r.json["model"]) for r in upstream.received] == [
        ("/b/v1/messages", "claude-pinned"),
        ("/b/v1/messages", "gpt-4.1-turbo"),
    ]
    assert upstream.received[1].json["max_tokens"] == 7
    assert via_alias.model == "b/claude-pinned"
    assert listed[-2:] == ["latest", "pinned"]


def test_an_alias_must_name_something_served(upstream: FakeUpstream) -> None:
    raw = precedence_config(upstream, aliases={"latest": "mistral-large"})
    with pytest.raises(ConfigError, match=r"aliases\.latest: expected the name of a configured"):
        build_config(raw)
