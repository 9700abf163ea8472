"""Pages of a listing, bounded in bytes as well as in entries.

Every listing (a conversation's rows, a conversation's items, a stored response's input
items) fills its page through a PageFill: at most the `limit` its client asked for, and at
most PAGE_MAX_BYTES of JSON. A page that is full ends early and says that more follow,
so the client asks for the next one from its last entry, as it would anyway. A page
always takes its first entry, whatever its size: a listing never stalls on one big entry.
"""

from __future__ import annotations

import json
from typing import Any


def json_size(entry: Any) -> int:
    """The bytes `entry` takes as compact JSON (non-ASCII escaped, as the answer writes it)."""
    return len(json.dumps(entry, separators=(",", ":"), default=str))


class PageFill:
    """A page being filled, entry by entry, up to `limit` entries and `max_bytes` of JSON."""

    def __init__(self, limit: int, max_bytes: int) -> None:
        self.limit = limit
        self.max_bytes = max_bytes
        self.entries: list[Any] = []
        self.size = 0
        # True once an entry was offered that the page had no room for: more follow.
        self.more = False

    def add(self, entry: Any) -> bool:
        """Take `entry` if the page has room for it; False (and `more` set) when it is full."""
        if len(self.entries) >= self.limit:
            self.more = True
            return False
        cost = json_size(entry)
        if self.entries and self.size + cost > self.max_bytes:
            self.more = True
            return False
        self.entries.append(entry)
        self.size += cost
        return True

    def add_all(self, entries: Any) -> bool:
        """Take `entries` in order until the page is full; False once it is."""
        return all(self.add(entry) for entry in entries)
