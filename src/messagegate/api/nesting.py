"""The one nesting limit of request JSON, checked where a body is first decoded.

Every later encoder must take what the door let in: orjson stops at 254 levels, and translating
a request to an OpenAI-compatible one nests its tool schemas a level deeper. 128 leaves room for
both, and is deeper than any tool schema seen in use.
"""

from __future__ import annotations

from typing import Any

from messagegate.errors import InvalidRequest

MAX_JSON_DEPTH = 128


def check_nesting(value: Any) -> None:
    """Raise InvalidRequest when `value` (decoded JSON) nests deeper than MAX_JSON_DEPTH."""
    # Level by level over containers only: strings, the bulk of a body, are never visited.
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
        inner: list[Any] = []
        keep = inner.append
        for container in level:
            for item in container.values() if type(container) is dict else container:
                if type(item) is dict or type(item) is list:
                    keep(item)
        level = inner
