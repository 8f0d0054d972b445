"""The CPU a request pays for scenario matching: the endpoint's routing step without scenarios
and with ten rules, timed in the same process, interleaved, best of several rounds. Each step
parses its body afresh, as a request does; the parse is the same in every row.

    python -m bench.routing_rules [--iterations N] [--rounds R]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from bench.body import anthropic_body
from messagegate.config import Config, parse_config
from messagegate.routing.health import HealthBoard
from messagegate.routing.router import Router
from messagegate.server.exchange import Exchange
from messagegate.server.messages import MessagesEndpoint

KEY = "mg-bench-key-0123456789"
_FIXTURE = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/claude-code/messages_first_turn.json"
)

# Ten rules that a Claude Code user might write; none matches a usual main turn, so every
# request evaluates all of them (the worst case).
TEN_RULES: list[dict[str, Any]] = [
    {"name": "background", "when": {"model": "*haiku*"}, "use": "cheap"},
    {"name": "small", "when": {"model": "gw-small-*"}, "use": "cheap"},
    {"name": "plan", "when": {"thinking": "enabled", "thinking_budget_over": 10000}, "use": "big"},
    {"name": "hard", "when": {"effort": ["max"]}, "use": "big"},
    {"name": "search", "when": {"tools_include": ["web_search_*"]}, "use": "cheap"},
    {"name": "images", "when": {"has_image": True}, "use": "big"},
    {"name": "docs", "when": {"has_document": True}, "use": "big"},
    {"name": "explorer", "when": {"tag": "explorer"}, "use": "cheap"},
    {"name": "web-app", "when": {"header": {"x-app": "web"}}, "use": "cheap"},
    {"name": "long-session", "when": {"session_input_tokens_over": 150000}, "use": "big"},
]
# The long-context rule on the local count: the count is the one `max_context` needs, paid
# once per request by whichever asks first.
COUNTED = {"name": "long", "when": {"input_tokens_over": 200000}, "use": "big"}


def config(rules: list[dict[str, Any]], model: str) -> Config:
    route = {"provider": "up", "model": "upstream"}
    raw = {
        "keys": [{"key": KEY, "name": "bench"}],
        "providers": {"up": {"kind": "anthropic", "base_url": "http://127.0.0.1:9"}},
        "models": {name: {"routes": [route]} for name in (model, "cheap", "big")},
        "scenarios": rules,
    }
    return parse_config(raw, source="bench", environ={})


def routing_step(rules: list[dict[str, Any]], raw: bytes) -> Callable[[], object]:
    """One request's parse and routing step in `MessagesEndpoint`, as `create` runs them."""
    model = orjson.loads(raw)["model"]
    cfg = config(rules, model)
    router = Router(cfg, {}, HealthBoard(cfg.breaker, time.monotonic), cfg.failover)
    endpoint = MessagesEndpoint(cfg, router)
    key = cfg.keys[0]
    scope = {
        "method": "POST",
        "path": "/v1/messages",
        "query_string": b"beta=true",
        "headers": [(b"x-api-key", KEY.encode()), (b"anthropic-version", b"2023-06-01")],
    }

    def step() -> object:
        exchange = Exchange(scope, _never, _never)
        body = orjson.loads(raw)
        if endpoint.scenarios is None:
            return endpoint._route_request(exchange, body, model, key)
        coroutine = endpoint._scenario_request(exchange, body, model, key)
        try:
            coroutine.send(None)
        except StopIteration as done:
            return done.value
        raise AssertionError("a rule without a function awaited something")

    return step


async def _never(*_: object) -> Any:
    raise AssertionError("not called")


def cpu_us(step: Callable[[], object], iterations: int) -> float:
    started = time.process_time()
    for _ in range(iterations):
        step()
    return (time.process_time() - started) / iterations * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--iterations", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    bodies = {
        "realistic 6.4 KB": orjson.dumps(anthropic_body("claude-main", False)),
        "Claude Code first turn": _FIXTURE.read_bytes(),
    }
    variants = {
        "no scenarios": [],
        "10 rules (none matches)": TEN_RULES,
        "10 + input_tokens_over": [*TEN_RULES, COUNTED],
        "10 rules, first matches": [
            {"name": "all", "when": {"model": "*"}, "use": "cheap"},
            *TEN_RULES[1:],
        ],
    }
    print(f"{'body':<24} {'config':<26} {'CPU us/request':>15} {'added':>8}")
    for body_name, body in bodies.items():
        steps = {name: routing_step(rules, body) for name, rules in variants.items()}
        for step in steps.values():
            cpu_us(step, 1000)  # warm-up: memoised token counts, compiled globs
        best = dict.fromkeys(steps, float("inf"))
        for _ in range(args.rounds):
            for name, step in steps.items():
                best[name] = min(best[name], cpu_us(step, args.iterations))
        base = best["no scenarios"]
        for name, value in best.items():
            print(f"{body_name:<24} {name:<26} {value:>15.2f} {value - base:>+8.2f}")


if __name__ == "__main__":
    main()
