"""CPU cost of privacy mode's crypto on Claude Code's first turn and per streamed event.

python -m bench.privacy_cost          # prints one table; no network, no other process

Both sides of each step are counted (the proxy's sealing and the gateway's opening of the
request; the gateway's sealing and the proxy's opening of the answer), as issue 24's budget
counts them: at most 1 ms per request and 20 us per streamed event. Per-call CPU time from
`time.process_time` over many calls, best of five runs (the machine may be shared).
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path

import orjson

from messagegate.api.sse import encode_event, encode_text_delta
from messagegate.privacy.codec import (
    ANSWER,
    ANSWER_CLEAR,
    REQUEST,
    REQUEST_CLEAR,
    ExchangeCipher,
    raw_fields,
)
from messagegate.privacy.events import EventOpener, EventSealer

FIRST_TURN = (
    Path(__file__).resolve().parents[1] / "tests/fixtures/claude-code/messages_first_turn.json"
)


def per_call(work: Callable[[], object], calls: int, runs: int = 5) -> float:
    """Best per-call CPU seconds of `runs` runs of `calls` calls."""
    best = float("inf")
    for _ in range(runs):
        started = time.process_time()
        for _ in range(calls):
            work()
        best = min(best, (time.process_time() - started) / calls)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    calls = parser.parse_args().calls
    body = FIRST_TURN.read_bytes()
    secret, nonce = os.urandom(32), os.urandom(16)

    def request_both_ways() -> object:
        # The proxy: a fresh exchange key, the body's fields sealed unparsed; the gateway: its
        # key, parse, open (which parses the opened fields, as a plaintext request is parsed).
        sealed = ExchangeCipher(secret, nonce).seal_fields(
            raw_fields(body), REQUEST, 0, REQUEST_CLEAR
        )
        return ExchangeCipher(secret, nonce).open(orjson.loads(sealed), REQUEST, 0, REQUEST_CLEAR)

    def plain_parse() -> object:
        # What the gateway does anyway without privacy mode (for scale, not counted).
        return orjson.loads(body)

    answer = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "Sure. " * 100}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 20000, "output_tokens": 600},
    }

    def answer_both_ways() -> object:
        cipher = ExchangeCipher(secret, nonce)
        # The gateway seals the answer it parsed; the proxy opens its bytes.
        sealed = orjson.dumps(cipher.seal(answer, ANSWER, 0, ANSWER_CLEAR))
        return cipher.open_fields(raw_fields(sealed), ANSWER, 0, ANSWER_CLEAR)

    cipher = ExchangeCipher(secret, nonce)
    text_event = encode_text_delta(0, "Hello")
    tool_event = encode_event(
        "content_block_delta",
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"path": "/src'},
        },
    )
    sealer, opener = EventSealer(cipher), EventOpener(cipher)

    def event_both_ways(event: bytes) -> Callable[[], object]:
        return lambda: opener.feed(sealer.seal(event))

    rows = [
        (
            f"first turn request ({len(body):,} B): seal + open",
            per_call(request_both_ways, calls // 4),
        ),
        ("  (for scale: orjson.loads of the same body)", per_call(plain_parse, calls // 4)),
        ("answer (700 B of text): seal + open", per_call(answer_both_ways, calls)),
        ("stream text_delta event: seal + open", per_call(event_both_ways(text_event), calls * 5)),
        (
            "stream input_json_delta event: seal + open",
            per_call(event_both_ways(tool_event), calls * 5),
        ),
    ]
    for label, seconds in rows:
        print(f"{label:<58} {seconds * 1e6:8.1f} us CPU")


if __name__ == "__main__":
    main()
