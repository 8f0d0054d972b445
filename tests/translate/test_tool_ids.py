"""Tool-call ids and tool names survive the trip to an upstream and back without state."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from messagegate.translate.tool_ids import (
    ENCODED_ID_PREFIX,
    ToolNames,
    client_tool_id,
    new_tool_id,
    original_tool_id,
    shorten_tool_name,
    upstream_tool_id,
)

CLIENT_ID = re.compile(r"^[a-zA-Z0-9_-]+$")
ALNUM9 = re.compile(r"^[a-zA-Z0-9]{9}$")


def test_valid_upstream_ids_pass_unchanged() -> None:
    for upstream in ("call_Vx3kqTq8rJ0dQfX1mD2lYb7N", "chatcmpl-tool-a1b2", "D681PevKs"):
        assert client_tool_id(upstream) == upstream
        assert original_tool_id(upstream) == upstream


def test_kimi_style_id_is_rewritten_and_decoded_back() -> None:
    client = client_tool_id("functions.Bash:0")
    assert CLIENT_ID.match(client)
    assert client.startswith(ENCODED_ID_PREFIX)
    assert original_tool_id(client) == "functions.Bash:0"
    assert upstream_tool_id(client, "any") == "functions.Bash:0"


def test_valid_id_with_the_reserved_prefix_is_encoded_so_it_round_trips() -> None:
    tricky = ENCODED_ID_PREFIX + "Zm9v"  # would otherwise decode to "foo"
    client = client_tool_id(tricky)
    assert client != tricky
    assert original_tool_id(client) == tricky


def test_ids_the_gateway_never_encoded_come_back_unchanged() -> None:
    for foreign in (
        "toolu_01A09q90qw90lq917835lq9",
        ENCODED_ID_PREFIX + "@@",
        ENCODED_ID_PREFIX + "x",
    ):
        assert original_tool_id(foreign) == foreign


def test_missing_upstream_id_gets_a_fresh_valid_one() -> None:
    first, second = client_tool_id(None), client_tool_id("")
    assert CLIENT_ID.match(first)
    assert first != second
    assert original_tool_id(first) == first
    assert not new_tool_id().startswith(ENCODED_ID_PREFIX)


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=80))
def test_any_upstream_id_round_trips(upstream: str) -> None:
    client = client_tool_id(upstream)
    assert CLIENT_ID.match(client)
    assert original_tool_id(client) == upstream


def test_alnum9_ids_are_a_deterministic_hash_of_the_client_id() -> None:
    tool_use = upstream_tool_id("toolu_0456e38af23a5d5ccac5aeaf", "alnum9")
    tool_result = upstream_tool_id("toolu_0456e38af23a5d5ccac5aeaf", "alnum9")
    assert ALNUM9.match(tool_use)
    assert tool_use == tool_result
    assert upstream_tool_id("toolu_other", "alnum9") != tool_use


def test_alnum9_keeps_mistral_ids_and_hashes_decoded_ones() -> None:
    assert upstream_tool_id("D681PevKs", "alnum9") == "D681PevKs"
    encoded = client_tool_id("functions.Bash:0")
    assert ALNUM9.match(upstream_tool_id(encoded, "alnum9"))


def test_short_tool_names_are_unchanged() -> None:
    names = ToolNames.for_tools(["Bash", "Read"], 64)
    assert names.upstream("Bash") == "Bash"
    assert names.client("Bash") == "Bash"
    assert names.to_client == {}


def test_long_tool_names_are_shortened_reversibly() -> None:
    long_a = "mcp__a_very_long_server_name__" + "x" * 50
    long_b = "mcp__a_very_long_server_name__" + "x" * 49 + "y"
    names = ToolNames.for_tools([long_a, long_b, "Bash"], 64)
    short_a, short_b = names.upstream(long_a), names.upstream(long_b)
    assert len(short_a) == 64
    assert short_a != short_b
    assert CLIENT_ID.match(short_a)
    assert short_a.startswith("mcp__a_very_long")
    assert names.client(short_a) == long_a
    assert names.client(short_b) == long_b
    assert shorten_tool_name(long_a, 64) == short_a  # stateless: same result every request


def test_names_the_client_never_sent_pass_through() -> None:
    names = ToolNames.for_tools(["Bash"], 64)
    assert names.client("hallucinated_tool") == "hallucinated_tool"


def test_tight_name_limit() -> None:
    name = "abcdefghijklmnopqrstuvwxyz"
    short = shorten_tool_name(name, 16)
    assert len(short) == 16
    assert ToolNames.for_tools([name], 16).client(short) == name
