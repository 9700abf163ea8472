"""Server-Sent Events, written one way for every streaming route.

A helper of the route modules, not one of them: it has no blueprint and imports none.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

# JSON without spaces after "," and ":", as OpenAI's Responses stream is written.
COMPACT = (",", ":")


def sse_event(name: str | None, data: Any, *, separators: tuple[str, str] | None = None) -> str:
    """One event as text: an `event: <name>` line when it is named, then `data: <data>` (a
    str as it is, anything else as JSON with `separators`, json.dumps's by default, and
    non-ASCII kept as it is), then the blank line that ends the event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=separators)
    return (f"event: {name}\n" if name else "") + f"data: {text}\n\n"


def typed_event(event: Mapping[str, Any]) -> str:
    """One event of a stream whose events carry their own name in "type" (the Responses
    API's), as OpenAI sends it: `event: <type>`, then the event as compact JSON."""
    return sse_event(event["type"], event, separators=COMPACT)
