"""The targets of the load: DIRECT (the fake upstream), the bare probe, messagegate and competitors.

Each target knows its port, how to start (config written to the run folder, pinned to the
gateway CPU) and what request a scenario sends it; all route to the same fake upstreams.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from bench import body, procs
from bench.client import ANTHROPIC_STREAM, JSON_ANSWER, OPENAI_STREAM, Markers, encode_request
from bench.install import Tool
from bench.replies import ANTHROPIC_MODEL, OPENAI_MODEL

Route = Literal["openai", "anthropic"]
ROUTES: tuple[Route, ...] = ("openai", "anthropic")
GATEWAY_KEY = "mg-bench-key-0123456789"
UPSTREAM_KEY = "sk-fake-upstream"
_ANTHROPIC_VERSION = "2023-06-01"
# USD per million tokens on messagegate's routes: what a key's budget is charged.
PRICE = {"input": 3, "output": 15}
# `messagegate-accounted`'s stored key: limits high enough never to refuse, each checked.
STORED_KEY_SETTINGS = ("--rpm", "100000000", "--tpm", "1000000000", "--budget", "1000000")


@dataclass(frozen=True, slots=True)
class Upstream:
    """One fake upstream process per answer profile, so every gateway config stays static."""

    name: str
    port: int
    ttft_ms: float
    tokens: int
    itl_ms: float

    @property
    def answer_seconds(self) -> float:
        """How long an answer takes by the profile's pacing: first token, then the rest."""
        return (self.ttft_ms + max(self.tokens - 1, 0) * self.itl_ms) / 1000

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bench.fake_upstream",
            "--port",
            str(self.port),
            "--ttft-ms",
            str(self.ttft_ms),
            "--tokens",
            str(self.tokens),
            "--itl-ms",
            str(self.itl_ms),
        ]


# Every port moves by this much, so a second bench (the test suite's smoke run) can run beside one.
PORT_OFFSET = int(os.environ.get("MG_BENCH_PORT_OFFSET", "0"))
UPSTREAMS = {
    "zero": Upstream("zero", 9101 + PORT_OFFSET, 0.0, 20, 0.0),
    "realistic": Upstream("realistic", 9102 + PORT_OFFSET, 50.0, 100, 5.0),
    # Long, slow streams, so that N of them are open at once for the memory scenario.
    "hold": Upstream("hold", 9103 + PORT_OFFSET, 50.0, 20, 100.0),
}


@dataclass(frozen=True, slots=True)
class Request:
    port: int
    path: str
    payload: bytes
    markers: Markers
    headers: Mapping[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return encode_request("127.0.0.1", self.port, self.path, self.payload, self.headers)


def markers(stream: bool, openai_wire: bool) -> Markers:
    if not stream:
        return JSON_ANSWER
    return OPENAI_STREAM if openai_wire else ANTHROPIC_STREAM


def _model(route: Route, upstream: str) -> str:
    return f"bench-{route}-{upstream}"


def _upstream_url(route: Route, upstream: Upstream) -> str:
    base = f"http://127.0.0.1:{upstream.port}"
    return f"{base}/v1" if route == "openai" else base


def _anthropic_request(port: int, model: str, stream: bool, headers: dict[str, str]) -> Request:
    headers = {"anthropic-version": _ANTHROPIC_VERSION, **headers}
    payload = body.encode(body.anthropic_body(model, stream))
    return Request(port, "/v1/messages", payload, markers(stream, False), headers)


class Target:
    """A gateway under test; DIRECT is the one without a process."""

    name = "target"
    port = 0
    tool: Tool | None = None

    def request(self, route: Route, upstream: Upstream, stream: bool) -> Request:
        model = _model(route, upstream.name)
        return _anthropic_request(self.port, model, stream, {"x-api-key": GATEWAY_KEY})

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child | None:
        return None

    @property
    def version(self) -> str:
        return self.tool.version if self.tool is not None else ""


class Direct(Target):
    """Straight to the fake upstream, in the upstream's own dialect: the baseline."""

    name = "DIRECT"

    def request(self, route: Route, upstream: Upstream, stream: bool) -> Request:
        if route == "anthropic":
            headers = {"x-api-key": UPSTREAM_KEY}
            return _anthropic_request(upstream.port, ANTHROPIC_MODEL, stream, headers)
        payload = body.encode(body.openai_body(OPENAI_MODEL, stream))
        headers = {"authorization": f"Bearer {UPSTREAM_KEY}"}
        path = "/v1/chat/completions"
        return Request(upstream.port, path, payload, markers(stream, True), headers)


class Probe(Target):
    """Issue 6's bare probe of the minimal proxy path (bench/probe.py), the machine's yardstick."""

    name = "probe"
    port = 8070 + PORT_OFFSET

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child:
        command = [sys.executable, "-m", "bench.probe", "--port", str(self.port)]
        command += ["--api-key", UPSTREAM_KEY]
        for upstream in UPSTREAMS.values():
            for route in ROUTES:
                path = "/chat/completions" if route == "openai" else "/v1/messages"
                url = _upstream_url(route, upstream) + path
                command += [f"--{route}", f"{_model(route, upstream.name)}={url}"]
        repo = Path(__file__).resolve().parent.parent
        return procs.start(self.name, command, run_dir, cpus=cpus, env=child_env(), cwd=repo)


class Messagegate(Target):
    name = "messagegate"
    port = 8090 + PORT_OFFSET

    def __init__(self, version: str) -> None:
        self._version = version

    @property
    def version(self) -> str:
        return self._version

    def config(self) -> dict[str, object]:
        providers: dict[str, object] = {}
        models: dict[str, object] = {}
        for upstream in UPSTREAMS.values():
            for route in ROUTES:
                name = f"fake-{route}-{upstream.name}"
                url = _upstream_url(route, upstream)
                providers[name] = {"kind": route, "base_url": url, "api_key": UPSTREAM_KEY}
                upstream_model = OPENAI_MODEL if route == "openai" else ANTHROPIC_MODEL
                routes = [{"provider": name, "model": upstream_model, "price": PRICE}]
                models[_model(route, upstream.name)] = {"routes": routes}
        return {
            "listen": f"127.0.0.1:{self.port}",
            "shutdown_grace": 2,
            "keys": [{"key": GATEWAY_KEY, "name": "bench"}],
            "providers": providers,
            "models": models,
        }

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child:
        path = run_dir / "messagegate.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        command = [sys.executable, "-m", "messagegate.cli", "serve", "--config", str(path)]
        return procs.start(self.name, command, run_dir, cpus=cpus, env=child_env())


class AccountedMessagegate(Messagegate):
    """messagegate with a key stored in its database (rpm, tpm and a budget) instead of one in
    its config, and every answer journalled to the ledger: beside `messagegate`, what auth,
    limits and the ledger cost together (`--accounted`)."""

    name = "messagegate-accounted"
    port = 8091 + PORT_OFFSET

    def __init__(self, version: str) -> None:
        super().__init__(version)
        self.key = ""
        self.database: Path | None = None

    def request(self, route: Route, upstream: Upstream, stream: bool) -> Request:
        model = _model(route, upstream.name)
        return _anthropic_request(self.port, model, stream, {"x-api-key": self.key})

    def config(self) -> dict[str, object]:
        return super().config() | {"keys": [], "database": str(self.database)}

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child:
        self.database = run_dir / "accounted" / "ledger.db"
        self.database.parent.mkdir(parents=True, exist_ok=True)
        path = self.database.parent / "messagegate.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        create = ["keys", "create", "--config", str(path), "--name", "bench", "--json"]
        created = subprocess.run(
            [sys.executable, "-m", "messagegate.cli", *create, *STORED_KEY_SETTINGS],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        self.key = json.loads(created.stdout)["key"]
        command = [sys.executable, "-m", "messagegate.cli", "serve", "--config", str(path)]
        return procs.start(self.name, command, run_dir, cpus=cpus, env=child_env())


class LiteLLM(Target):
    """LiteLLM's proxy, one worker; ``/v1/messages`` goes to Chat Completions, not Responses."""

    name = "litellm"
    port = 4000 + PORT_OFFSET

    def __init__(self, tool: Tool) -> None:
        self.tool = tool

    def config(self) -> dict[str, object]:
        model_list = []
        for upstream in UPSTREAMS.values():
            for route in ROUTES:
                model = (
                    f"openai/{OPENAI_MODEL}"
                    if route == "openai"
                    else f"anthropic/{ANTHROPIC_MODEL}"
                )
                params = {
                    "model": model,
                    "api_base": _upstream_url(route, upstream),
                    "api_key": UPSTREAM_KEY,
                }
                model_list.append(
                    {"model_name": _model(route, upstream.name), "litellm_params": params}
                )
        return {
            "model_list": model_list,
            "general_settings": {"master_key": GATEWAY_KEY},
            "litellm_settings": {
                "telemetry": False,
                "use_chat_completions_url_for_anthropic_messages": True,
            },
        }

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child:
        assert self.tool is not None
        path = run_dir / "litellm.yaml"
        path.write_text(yaml.safe_dump(self.config(), sort_keys=False))
        command = [*self.tool.command, "--config", str(path), "--host", "127.0.0.1"]
        command += ["--port", str(self.port), "--num_workers", "1"]
        env = child_env(LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_TELEMETRY="False")
        return procs.start(self.name, command, run_dir, cpus=cpus, env=env)


class ClaudeCodeRouter(Target):
    """claude-code-router; a ``provider,model`` model name picks the route per request."""

    name = "ccr"
    port = 3456 + PORT_OFFSET

    def __init__(self, tool: Tool) -> None:
        self.tool = tool

    def request(self, route: Route, upstream: Upstream, stream: bool) -> Request:
        model = f"{_provider(route, upstream)},{_upstream_model(route)}"
        return _anthropic_request(self.port, model, stream, {"x-api-key": GATEWAY_KEY})

    def config(self) -> dict[str, object]:
        providers = []
        for upstream in UPSTREAMS.values():
            for route in ROUTES:
                provider: dict[str, object] = {
                    "name": _provider(route, upstream),
                    "api_base_url": _ccr_url(route, upstream),
                    "api_key": UPSTREAM_KEY,
                    "models": [_upstream_model(route)],
                }
                if route == "anthropic":
                    provider["transformer"] = {"use": ["Anthropic"]}
                providers.append(provider)
        default = f"{providers[0]['name']},{OPENAI_MODEL}"
        return {
            "HOST": "127.0.0.1",
            "PORT": self.port,
            "APIKEY": GATEWAY_KEY,
            "LOG": False,
            "NON_INTERACTIVE_MODE": True,
            "Providers": providers,
            "Router": {"default": default},
        }

    def start(self, run_dir: Path, cpus: str | None) -> procs.Child:
        assert self.tool is not None
        home = run_dir / "ccr-home"
        (home / ".claude-code-router").mkdir(parents=True, exist_ok=True)
        config = json.dumps(self.config(), indent=2)
        (home / ".claude-code-router" / "config.json").write_text(config)
        command = [*self.tool.command, "start"]
        return procs.start(self.name, command, run_dir, cpus=cpus, env=child_env(HOME=str(home)))


def _provider(route: Route, upstream: Upstream) -> str:
    # ccr lower-cases the configured name before comparing it with the request's.
    return f"fake-{route}-{upstream.name}"


def _upstream_model(route: Route) -> str:
    return OPENAI_MODEL if route == "openai" else ANTHROPIC_MODEL


def _ccr_url(route: Route, upstream: Upstream) -> str:
    path = "/v1/chat/completions" if route == "openai" else "/v1/messages"
    return f"http://127.0.0.1:{upstream.port}{path}"


def child_env(**extra: str) -> dict[str, str]:
    """The bench's environment without proxies, so loopback calls stay on loopback."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env.update(extra)
    return env
