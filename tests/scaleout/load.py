"""The load the scale-out tests drive through nginx: requests tagged `kind:seed` in their metadata,
which the fake upstream bills deterministically, sent with the official SDK; what came back."""

from __future__ import annotations

import random
from dataclasses import dataclass

import anthropic
from anthropic.types import MessageParam, MetadataParam

import fakes.anthropic_script as script
from fakes.upstream import Received, Reply

MODEL = "claude-test"
KINDS = ("json", "stream")
HELLO: list[MessageParam] = [{"role": "user", "content": "Hello"}]


@dataclass(frozen=True, slots=True)
class Bill:
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True, slots=True)
class Answer:
    request_id: str
    bill: Bill


def tag(seed: int) -> str:
    return f"{KINDS[seed % len(KINDS)]}:{seed}"


def bill_of(user_id: str) -> Bill:
    """What the fake upstream bills the request tagged `user_id`."""
    rng = random.Random(int(user_id.partition(":")[2]))
    return Bill(rng.randint(1, 5000), rng.randint(1, 4000))


def respond(received: Received) -> Reply:
    """The fake upstream's answer: a JSON message or its SSE events, billed as `bill_of` says."""
    user_id = received.json["metadata"]["user_id"]
    billed = bill_of(user_id)
    message = script.message(
        [{"type": "text", "text": "Hello there"}],
        input_tokens=billed.input_tokens,
        output_tokens=billed.output_tokens,
    )
    stream = user_id.startswith("stream:")
    return script.stream_reply(message) if stream else script.reply(message)


async def send(client: anthropic.AsyncAnthropic, seed: int) -> Answer:
    """One request (a stream for odd seeds), read to its end; what the client was told."""
    user_id = tag(seed)
    metadata: MetadataParam = {"user_id": user_id}
    if user_id.startswith("stream:"):
        async with client.messages.stream(
            model=MODEL, max_tokens=4096, messages=HELLO, metadata=metadata
        ) as stream:
            usage = (await stream.get_final_message()).usage
            request_id = stream.response.headers["request-id"]
    else:
        raw = await client.messages.with_raw_response.create(
            model=MODEL, max_tokens=4096, messages=HELLO, metadata=metadata
        )
        usage = (await raw.parse()).usage
        request_id = raw.headers["request-id"]
    return Answer(request_id, Bill(usage.input_tokens, usage.output_tokens))
