"""Claude Code, unchanged, through ``messagegate proxy`` to a gateway in ``privacy: required``:
the task completes, and a marker in its prompt, system prompt and tool result crosses the
proxy<->gateway connection only sealed (a tshark capture on loopback) and reaches no log line."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import GATEWAY_KEY, PROVIDER_KEY
from e2e.capture import CaptureUnavailable, capture, ensure_tshark
from e2e.claude_run import MAIN_MODEL, SMALL_MODEL, claude_env, run_claude
from e2e.fake_model import FINAL_TEXT, Dialect, FakeModel, ToolCall
from fakes.gateway import build_config, running_gateway
from fakes.privacy import make_key_file, running_proxy
from fakes.upstream import FakeUpstream
from messagegate.privacy.trust import PinnedKeys

pytestmark = pytest.mark.e2e

MARKER = "QUOKKA-PRIVATE-5521"
# The task (the prompt), the working directory (in Claude Code's system prompt) and the file's
# path (in the Write tool's result) all carry the marker; so does the file's content (an answer).
TASK = f"Create notes/{MARKER}.txt with the agreed greeting."
CONTENT = f"Hello {MARKER}, through the privacy proxy.\n"


@pytest.fixture(scope="session")
def tshark() -> str:
    try:
        return ensure_tshark()
    except CaptureUnavailable as error:
        problem = str(error)
    pytest.fail(f"cannot capture packets: {problem}", pytrace=False)


def _config(dialect: Dialect, upstream: FakeUpstream, key_file: Path) -> dict[str, object]:
    base_url = upstream.url if dialect == "anthropic" else upstream.url + "/v1"
    provider = {"kind": dialect, "base_url": base_url, "api_key": PROVIDER_KEY}
    routes = {"routes": [{"provider": "main", "model": "upstream-model"}]}
    return {
        "keys": [{"key": GATEWAY_KEY, "name": "claude-code"}],
        "providers": {"main": provider},
        "models": {MAIN_MODEL: routes, SMALL_MODEL: routes},
        "privacy": {"mode": "required", "key_file": str(key_file)},
    }


@pytest.mark.parametrize("dialect", ["anthropic", "openai"])
async def test_claude_code_through_the_privacy_proxy_leaks_no_marker(
    claude: Path,
    tshark: str,
    upstream: FakeUpstream,
    tmp_path: Path,
    dialect: Dialect,
    caplog: pytest.LogCaptureFixture,
) -> None:
    home, workdir = tmp_path / "home", tmp_path / f"work-{MARKER}"
    home.mkdir()
    workdir.mkdir()
    target = workdir / "notes" / f"{MARKER}.txt"
    write = ToolCall("Write", {"file_path": str(target), "content": CONTENT})
    model = FakeModel(upstream, dialect, {"upstream-model": write})
    key_file, key_id = make_key_file(tmp_path)
    pcap = tmp_path / "proxy-gateway.pcap"
    config = build_config(_config(dialect, upstream, key_file))
    async with running_gateway(config) as (url, _):
        port = int(url.rsplit(":", 1)[1])
        async with (
            capture(tshark, port, pcap),
            running_proxy(url, PinnedKeys([key_id]), GATEWAY_KEY) as (proxy, _),
        ):
            env = claude_env(proxy, "no-key-needed", "x-api-key", home)
            run = await run_claude(claude, env, workdir, TASK, "Write")
    assert not run.is_error, run.describe()
    assert run.result.get("result") == FINAL_TEXT, run.describe()
    assert target.read_bytes() == CONTENT.encode()
    # The upstream got the plaintext, prompt, system prompt and tool result alike...
    requests = [r.body.decode() for r in upstream.received if r.method == "POST"]
    assert any(TASK in body for body in requests)
    assert any(f"work-{MARKER}" in body and "File created" in body for body in requests)
    assert len(model.turns) >= 2
    # ...while the wire between proxy and gateway carried it sealed, and no log line has it.
    captured = pcap.read_bytes()
    assert b"x-messagegate-privacy: v1." in captured
    assert b"POST /v1/messages" in captured
    assert MARKER.encode() not in captured
    assert caplog.records
    assert MARKER not in caplog.text
