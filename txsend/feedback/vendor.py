"""What the provider event readers share: safe access into decoded JSON, and their one error.

A provider's event is JSON someone else shaped; every access here tolerates a missing key
or a value of the wrong type, and a reader that cannot make sense of an event raises
`NotUnderstood`, which `read_events` turns into an `Unparsed` naming the event's line.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

MAX_RECIPIENTS = 1000  # recipients read from one event


class NotUnderstood(Exception):
    """This event is not one the reader knows, or says nothing about delivery."""


def dig(value: Any, *keys: str) -> Any:
    """value[k1][k2]..., or None where a key is missing or a value is not an object."""
    for key in keys:
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    return value


def objects(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON array (the rest left out), at most MAX_RECIPIENTS."""
    if not isinstance(value, list):
        return []
    return [item for item in value if isinstance(item, dict)][:MAX_RECIPIENTS]


def leaves(value: Any, *, limit: int = 200) -> Iterator[str]:
    """The strings inside a JSON value (custom variables, tags), at most `limit` of them."""
    stack = [value]
    while stack and limit > 0:
        item = stack.pop()
        if isinstance(item, str):
            limit -= 1
            yield item
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
