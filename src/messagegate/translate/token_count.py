"""Local, offline estimate of the input tokens of a Messages API request (tiktoken BPE counts)."""

# Claude's own tokenizer is not public, so this counts with OpenAI's o200k_base (or cl100k_base)
# BPE, which is close for English text and code (typically within about 10-20% of Anthropic's
# count_tokens) and is only an estimate for anything else.
#
# tiktoken downloads its BPE files on first use, which fails offline. This module never does:
# it reads the official files shipped in ``encodings/`` beside it, verified by their SHA-256.
# If "o200k_base" is asked for but only cl100k_base is found, cl100k_base is used (and the other
# way round); `active_encoding` tells which. If neither is found, counts fall back to
# ceil(UTF-8 bytes / 4) and `active_encoding` returns None.

from __future__ import annotations

import base64
import binascii
import ctypes
import hashlib
import math
import re
import sys
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson
import tiktoken

__all__ = [
    "IMAGE_TOKENS",
    "MESSAGE_OVERHEAD",
    "PDF_PAGE_TOKENS",
    "REQUEST_OVERHEAD",
    "TOOLS_PREAMBLE",
    "TOOLS_PREAMBLE_FORCED",
    "TOOL_DEFINITION_OVERHEAD",
    "active_encoding",
    "count_request",
    "count_text",
]

# Tokens added once per request (start/end of the prompt).
REQUEST_OVERHEAD = 3
# Tokens added per message in `messages` (role marker and turn separators).
MESSAGE_OVERHEAD = 4
# Tokens added per tool definition, and per tool_use / tool_result block (ids and wrappers).
TOOL_DEFINITION_OVERHEAD = 8
TOOL_BLOCK_OVERHEAD = 8
# Anthropic adds a hidden tool-use system prompt whenever `tools` is non-empty; its published
# size for the Claude 4 models is 346 tokens (tool_choice auto/none) or 313 (any/tool).
TOOLS_PREAMBLE = 346
TOOLS_PREAMBLE_FORCED = 313
# An image costs about width*height/750 tokens; images with a long edge over 1568 px are scaled
# down first, so one image costs at most about 1,600. That maximum is used when the size can't
# be read cheaply (JPEG, WebP, URL and file sources); PNG and GIF sizes are read from the header.
IMAGE_TOKENS = 1600
_IMAGE_MAX_EDGE = 1568
_IMAGE_PIXELS_PER_TOKEN = 750
# A PDF page costs its text (typically 1,500-3,000 tokens) plus a page image (up to ~1,600).
PDF_PAGE_TOKENS = 3000
# When a PDF's page objects can't be seen (compressed object streams): one page per 100 KB.
_PDF_BYTES_PER_PAGE_GUESS = 100_000
# Encrypted thinking: about one token per four characters of its opaque `data`.
_CHARS_PER_TOKEN = 4

# Texts at least this long have their counts memoised: clients resend the same system prompt,
# tool definitions and history on every turn, so only the new content gets encoded.
_MEMO_MIN_CHARS = 64
_MEMO_MAX_CHARS = 16_000_000

_O200K_PAT_STR = "|".join(
    [
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
        r"""\p{N}{1,3}""",
        r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
        r"""\s*[\r\n]+""",
        r"""\s+(?!\S)""",
        r"""\s+""",
    ]
)
_CL100K_PAT_STR = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+"""
    r"""|\s++$|\s*[\r\n]|\s+(?!\S)|\s"""
)


@dataclass(frozen=True, slots=True)
class _Spec:
    sha256: str
    pat_str: str
    special_tokens: tuple[tuple[str, int], ...]


_SPECS: dict[str, _Spec] = {
    "o200k_base": _Spec(
        sha256="446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d",
        pat_str=_O200K_PAT_STR,
        special_tokens=(("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)),
    ),
    "cl100k_base": _Spec(
        sha256="223921b76ee99bde995b7ff738513eef100fb51d18c93597a113bcffe865b2a7",
        pat_str=_CL100K_PAT_STR,
        special_tokens=(
            ("<|endoftext|>", 100257),
            ("<|fim_prefix|>", 100258),
            ("<|fim_middle|>", 100259),
            ("<|fim_suffix|>", 100260),
            ("<|endofprompt|>", 100276),
        ),
    ),
}
_SUBSTITUTE = {"o200k_base": "cl100k_base", "cl100k_base": "o200k_base"}

_ENCODINGS_DIR = Path(__file__).with_name("encodings")


def _read_ranks(path: Path, sha256: str) -> dict[bytes, int] | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    ranks: dict[bytes, int] = {}
    for line in data.splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    return ranks


@cache
def _load(name: str) -> tiktoken.Encoding | None:
    encoding = _build(name)
    if encoding is not None:
        _release_freed_memory()
    return encoding


def _build(name: str) -> tiktoken.Encoding | None:
    spec = _SPECS[name]
    ranks = _read_ranks(_ENCODINGS_DIR / f"{name}.tiktoken", spec.sha256)
    if ranks is None:
        return None
    encoding = tiktoken.Encoding(
        name, pat_str=spec.pat_str, mergeable_ranks=ranks, special_tokens=dict(spec.special_tokens)
    )
    # The Rust core holds its own copy; tiktoken keeps the Python one only for pickling, and it
    # costs ~27 MB per vocabulary. Counting never pickles an Encoding.
    encoding._mergeable_ranks = {}
    return encoding


def _release_freed_memory() -> None:
    """Hand the pages loading freed back to the OS (measured: 4-8 MB per vocabulary, <1 ms).

    Loading frees tens of MB of temporaries (the file, the ranks dict, the tables the Rust core
    outgrew); glibc keeps part of them for a reuse this process never makes. Only glibc trims.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return  # musl and other libcs
    malloc_trim(0)


@cache
def _resolve(name: str) -> tiktoken.Encoding | None:
    if name not in _SPECS:
        raise ValueError(f"unsupported encoding {name!r}; expected one of {sorted(_SPECS)}")
    encoding = _load(name)
    return encoding if encoding is not None else _load(_SUBSTITUTE[name])


def active_encoding(encoding: str = "o200k_base") -> str | None:
    """The encoding that counts for `encoding` really use, or None for the bytes/4 fallback."""
    resolved = _resolve(encoding)
    return None if resolved is None else str(resolved.name)


class _Memo:
    """LRU of text -> token count, bounded by the total length of the texts it keeps."""

    def __init__(self, max_chars: int) -> None:
        self._max_chars = max_chars
        self._chars = 0
        self._counts: OrderedDict[tuple[str, str], int] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str]) -> int | None:
        with self._lock:
            count = self._counts.get(key)
            if count is not None:
                self._counts.move_to_end(key)
            return count

    def put(self, key: tuple[str, str], count: int) -> None:
        size = len(key[1])
        if size > self._max_chars // 4:
            return
        with self._lock:
            if key in self._counts:
                return
            self._counts[key] = count
            self._chars += size
            while self._chars > self._max_chars:
                (_, old_text), _ = self._counts.popitem(last=False)
                self._chars -= len(old_text)


_memo = _Memo(_MEMO_MAX_CHARS)
_SHORT_MAX_ENTRIES = 100_000
_short_counts: dict[tuple[str, str], int] = {}


# Counting runs on the event loop every stream shares, and BPE's cost grows faster than the text
# (31 MiB took 27 s; a long run of spaces overflows tiktoken's stack): a long text is counted
# from evenly spread slices, and a request's exact counting stops at an allowance, after which
# texts are estimated from their length.
_SLICE_CHARS = 8192
_SAMPLED_SLICES = 8
_REQUEST_EXACT_CHARS = 1024 * 1024


class _Allowance:
    """Characters one `count_request` may still count exactly; unlimited outside one."""

    __slots__ = ("left",)

    def __init__(self) -> None:
        self.left: int | None = None

    def grant(self, chars: int) -> bool:
        if self.left is None:
            return True
        self.left -= chars
        return self.left >= 0


_allowance = _Allowance()


def _sampled(text: str, resolved: tiktoken.Encoding) -> int:
    """Tokens of a long text, counted slice by slice: all slices, or `_SAMPLED_SLICES` spread
    over it, scaled to its length."""
    slices = math.ceil(len(text) / _SLICE_CHARS)
    step = max(1, slices // _SAMPLED_SLICES)
    starts = range(0, slices * _SLICE_CHARS, step * _SLICE_CHARS)[:_SAMPLED_SLICES]
    parts = [text[start : start + _SLICE_CHARS] for start in starts]
    tokens = sum(len(resolved.encode_ordinary(part)) for part in parts)
    return math.ceil(tokens * len(text) / sum(map(len, parts)))


def count_text(text: str, encoding: str = "o200k_base") -> int:
    """Number of tokens in `text`; special-token strings count as plain text."""
    if not text:
        return 0
    resolved = _resolve(encoding)
    if resolved is None:
        return _estimate(text)
    key = (encoding, text)
    if len(text) < _MEMO_MIN_CHARS:
        # Names, short turns: a plain dict, cheaper than the LRU and far cheaper than encoding.
        short = _short_counts.get(key)
        if short is None:
            if not _allowance.grant(len(text)):
                return _estimate(text)
            if len(_short_counts) >= _SHORT_MAX_ENTRIES:
                _short_counts.clear()
            short = _short_counts[key] = len(resolved.encode_ordinary(text))
        return short
    count = _memo.get(key)
    if count is None:
        if not _allowance.grant(min(len(text), _SLICE_CHARS * _SAMPLED_SLICES)):
            return _estimate(text)
        if len(text) > 2 * _SLICE_CHARS:
            count = _sampled(text, resolved)
        else:
            count = len(resolved.encode_ordinary(text))
        _memo.put(key, count)
    return count


def _estimate(text: str) -> int:
    return math.ceil(len(text.encode("utf-8", "surrogatepass")) / _CHARS_PER_TOKEN)


def _json(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str).decode()
    except (TypeError, orjson.JSONEncodeError):
        return str(value)


def _image_size(data: str) -> tuple[int, int] | None:
    """(width, height) from the header of a base64 PNG or GIF, without decoding the rest."""
    try:
        head = base64.b64decode(data[:32])
    except (binascii.Error, ValueError):
        return None
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR" and len(head) >= 24:
        return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    if head[:6] in (b"GIF87a", b"GIF89a") and len(head) >= 10:
        return int.from_bytes(head[6:8], "little"), int.from_bytes(head[8:10], "little")
    return None


def _image_tokens(block: dict[str, Any]) -> int:
    source = block.get("source")
    if not isinstance(source, dict) or source.get("type") != "base64":
        return IMAGE_TOKENS
    data = source.get("data")
    size = _image_size(data) if isinstance(data, str) else None
    if size is None:
        return IMAGE_TOKENS
    width, height = size
    longest = max(width, height)
    if longest > _IMAGE_MAX_EDGE:
        width = width * _IMAGE_MAX_EDGE // longest
        height = height * _IMAGE_MAX_EDGE // longest
    return max(1, min(IMAGE_TOKENS, math.ceil(width * height / _IMAGE_PIXELS_PER_TOKEN)))


_PDF_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")


def _pdf_tokens(data: str) -> int:
    try:
        pdf = base64.b64decode(data)
    except (binascii.Error, ValueError):
        return PDF_PAGE_TOKENS
    pages = len(_PDF_PAGE.findall(pdf)) or math.ceil(len(pdf) / _PDF_BYTES_PER_PAGE_GUESS)
    return max(1, pages) * PDF_PAGE_TOKENS


def _document_tokens(block: dict[str, Any], encoding: str) -> int:
    total = 0
    for field in ("title", "context"):
        value = block.get(field)
        if isinstance(value, str):
            total += count_text(value, encoding)
    source = block.get("source")
    if not isinstance(source, dict):
        return total + PDF_PAGE_TOKENS
    kind = source.get("type")
    data = source.get("data")
    if kind == "text" and isinstance(data, str):
        return total + count_text(data, encoding)
    if kind == "content":
        return total + _content_tokens(source.get("content"), encoding)
    if kind == "base64" and isinstance(data, str):
        return total + _pdf_tokens(data)
    # url / file sources: the content is not in the request.
    return total + PDF_PAGE_TOKENS


def _block_tokens(block: Any, encoding: str) -> int:
    if not isinstance(block, dict):
        return count_text(block if isinstance(block, str) else _json(block), encoding)
    kind = block.get("type")
    if kind == "text":
        text = block.get("text")
        return count_text(text if isinstance(text, str) else _json(text), encoding)
    if kind == "image":
        return _image_tokens(block)
    if kind == "document":
        return _document_tokens(block, encoding)
    if kind == "tool_use":
        name = block.get("name")
        return (
            TOOL_BLOCK_OVERHEAD
            + count_text(name if isinstance(name, str) else "", encoding)
            + count_text(_json(block.get("input", {})), encoding)
        )
    if kind == "tool_result":
        return TOOL_BLOCK_OVERHEAD + _content_tokens(block.get("content"), encoding)
    if kind == "thinking":
        thinking = block.get("thinking")
        return count_text(thinking if isinstance(thinking, str) else "", encoding)
    if kind == "redacted_thinking":
        data = block.get("data")
        return math.ceil(len(data) / _CHARS_PER_TOKEN) if isinstance(data, str) else 0
    return count_text(_json(block), encoding)


def _content_tokens(content: Any, encoding: str) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return count_text(content, encoding)
    if isinstance(content, list):
        return sum(_block_tokens(block, encoding) for block in content)
    return _block_tokens(content, encoding)


def _tool_tokens(tool: Any, encoding: str) -> int:
    if not isinstance(tool, dict) or "input_schema" not in tool:
        # Server tools (web_search, bash, ...) and anything unexpected: their JSON.
        return TOOL_DEFINITION_OVERHEAD + count_text(_json(tool), encoding)
    total = TOOL_DEFINITION_OVERHEAD + count_text(_json(tool["input_schema"]), encoding)
    for field in ("name", "description"):
        value = tool.get(field)
        if isinstance(value, str):
            total += count_text(value, encoding)
    return total


class InputCount:
    """One request's locally counted input tokens: each encoding is counted once, when first
    asked for (routing's `max_context`, a scenario, an OpenAI stream's `message_start`)."""

    __slots__ = ("_counts", "body")

    def __init__(self, body: Mapping[str, Any], known: Mapping[str, int] | None = None) -> None:
        self.body = body
        self._counts: dict[str, int] = dict(known or {})

    def __call__(self, encoding: str = "o200k_base") -> int:
        count = self._counts.get(encoding)
        if count is None:
            count = self._counts[encoding] = count_request(self.body, encoding)
        return count

    def cached(self, encoding: str = "o200k_base") -> int:
        """The part of the count a warm prompt cache serves (`cached_prefix_tokens`)."""
        return min(cached_prefix_tokens(self.body, encoding), self(encoding))


def count_request(body: Mapping[str, Any], encoding: str = "o200k_base") -> int:
    """Estimated input tokens of a Messages API request body (as parsed from JSON).

    Counts `system`, every message's content, and `tools` (plus the hidden tool-use system
    prompt), with the overheads documented at the top of this module.
    """
    _allowance.left = _REQUEST_EXACT_CHARS
    try:
        return _count_request(body, encoding)
    finally:
        _allowance.left = None


def cached_prefix_tokens(body: Mapping[str, Any], encoding: str = "o200k_base") -> int:
    """Estimated input tokens up to the request's last `cache_control` breakpoint, in the cache's
    order (tools, system, messages): what a warm cache bills at its read price; 0 without one."""
    _allowance.left = _REQUEST_EXACT_CHARS
    try:
        return _cached_prefix(body, encoding)
    finally:
        _allowance.left = None


def _cached_prefix(body: Mapping[str, Any], encoding: str) -> int:
    total = cached = 0
    for tool in _listed(body.get("tools")):
        total += _tool_tokens(tool, encoding)
        cached = total if _breakpoint(tool) else cached
    system = body.get("system")
    for block in _listed(system) if isinstance(system, list) else ():
        total += _block_tokens(block, encoding)
        cached = total if _breakpoint(block) else cached
    if isinstance(system, str):
        total += count_text(system, encoding)
    for message in _listed(body.get("messages")):
        content = message.get("content") if isinstance(message, dict) else None
        total += MESSAGE_OVERHEAD
        if not isinstance(content, list):
            total += _content_tokens(content, encoding)
            continue
        for block in content:
            total += _block_tokens(block, encoding)
            cached = total if _breakpoint(block) else cached
    return cached


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _breakpoint(part: Any) -> bool:
    return isinstance(part, dict) and part.get("cache_control") is not None


def _count_request(body: Mapping[str, Any], encoding: str) -> int:
    total = REQUEST_OVERHEAD + _content_tokens(body.get("system"), encoding)
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            total += MESSAGE_OVERHEAD
            if isinstance(message, dict):
                total += _content_tokens(message.get("content"), encoding)
            else:
                total += _block_tokens(message, encoding)
    tools = body.get("tools")
    if isinstance(tools, list) and tools:
        tool_choice = body.get("tool_choice")
        forced = isinstance(tool_choice, dict) and tool_choice.get("type") in ("any", "tool")
        total += TOOLS_PREAMBLE_FORCED if forced else TOOLS_PREAMBLE
        total += sum(_tool_tokens(tool, encoding) for tool in tools)
    return total
