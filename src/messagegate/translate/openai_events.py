"""An OpenAI Chat Completions event stream as the relay's converter: events in, the stream
translator's Anthropic events out, encoded."""

from __future__ import annotations

import orjson

from messagegate.api.sse import Event, encode_event
from messagegate.errors import UpstreamProtocolError
from messagegate.translate.openai_errors import classify_error_object
from messagegate.translate.openai_request import OpenAIRequest
from messagegate.translate.openai_stream import OpenAIStreamTranslator
from messagegate.translate.sse_decoder import ServerSentEvent
from messagegate.translate.stream_relay import DEFAULT_MAX_EVENT, SSERelay


def openai_stream(
    request: OpenAIRequest,
    *,
    client_model: str,
    input_tokens: int,
    provider: str,
    max_event: int = DEFAULT_MAX_EVENT,
    encoding: str = "o200k_base",
) -> SSERelay:
    """The relay of an OpenAI-compatible upstream's stream answering `request`, for a client
    that asked for `client_model` (its prompt counted `input_tokens` in `encoding`)."""
    translator = OpenAIStreamTranslator(
        model=client_model, request=request, input_tokens=input_tokens
    )
    return SSERelay(OpenAIEventConverter(translator, provider), max_event, encoding)


class OpenAIEventConverter:
    """Feeds Chat Completions chunks to the stream translator; encodes the events it emits."""

    def __init__(self, translator: OpenAIStreamTranslator, provider: str) -> None:
        self.translator = translator
        self.provider = provider
        self.usage = translator.usage
        # A text delta, taken from its bytes (no converter call in between: once per token).
        self.usual_event = translator.feed_text_event
        self._saw_done = False
        self._chunks = 0

    def whole_event(self, event: bytes) -> bytes | None:
        """The usual event, one ``data:`` line, translated without the decoder: a text delta
        from its bytes, anything else parsed from them."""
        # The relay tries `usual_event` first; chunks of several events come here one by one,
        # and a text delta among them is still taken from its bytes.
        out = self.translator.feed_text_event(event)
        if out is not None:
            return out
        # Its only line break ends it: a chunk of several events is refused at its first one.
        if not event.startswith(b"data: ") or event.find(b"\n") != len(event) - 2:
            return None
        if event == b"data: [DONE]\n\n":
            self._saw_done = True
            return b""
        return self._translate(memoryview(event)[6:-2], event)

    def whole_run(self, chunk: bytes, start: int) -> tuple[bytes, int]:
        """The text events at `start` of a chunk of whole events, translated from their bytes
        in one go."""
        return self.translator.feed_text_run(chunk, start)

    def convert(self, event: ServerSentEvent) -> bytes:
        if event.data == "[DONE]":
            self._saw_done = True
            return b""
        return self._translate(event.data)

    def _translate(self, data: str | memoryview, event: bytes | None = None) -> bytes:
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise UpstreamProtocolError(f"provider {self.provider!r} sent invalid JSON") from None
        if self._chunks == 0:
            # Nothing reached the client yet, so this attempt can still fail over.
            if not isinstance(chunk, dict):
                raise UpstreamProtocolError(f"provider {self.provider!r} sent a non-object chunk")
            if "error" in chunk:
                raise classify_error_object(chunk)
        self._chunks += 1
        return self.translator.feed_sse(chunk, event)

    def finish(self) -> bytes:
        if self._chunks == 0:
            raise UpstreamProtocolError(f"provider {self.provider!r} ended the stream at once")
        return _encode(self.translator.finish(saw_done=self._saw_done))


def _encode(events: list[Event]) -> bytes:
    return b"".join([encode_event(name, data) for name, data in events])
