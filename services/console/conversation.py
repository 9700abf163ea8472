"""One conversation in the console: a page of its rows as a readable thread, grouped by
exchange (status, error, model and deployment, tokens, cost, timings, upstream attempts),
and its erasure.

Rows are read within the conversation's key (services/ownership.py) and paged by row id,
forwards (`after`) or backwards (`before`), never by OFFSET; a page ends at the edge of an
exchange where it can, so an exchange is read whole. Nothing here renders HTML: the
template escapes every string (the content is whatever clients wrote).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import Message, MessageStatus, UpstreamAttempt, as_utc, iso_utc
from services.console.conversations import format_usd
from services.conversations import conversation_usage, delete_conversation
from services.exchanges import ITEM_IDS
from services.ownership import owned_by
from services.pages import json_size

PAGE_ROWS = 100
# Past PAGE_ROWS a page takes this many more rows at most to end with a whole exchange.
EXCHANGE_SLACK = 50
# Fields of a stored message shown in a place of their own; the rest are listed as JSON.
SHOWN_FIELDS = frozenset({"tool_calls", "tool_call_id", "name", "refusal", "content", ITEM_IDS})
LINKED_SCHEMES = ("https://", "http://")


@dataclass(frozen=True)
class Thread:
    """A page of a conversation: its exchanges in order, and the cursors of the rows before
    and after it (None: there are none)."""

    exchanges: list[dict[str, Any]]
    earlier: int | None
    later: int | None


def conversation_header(session: Session, key_id: int | None, user_id: str) -> dict[str, Any] | None:
    """The conversation's totals (services/conversations.py's usage, the cost in dollars) and
    its first and last row ids; None when nothing of it is stored."""
    usage = conversation_usage(session, user_id, key_id)
    if usage is None:
        return None
    first_id, last_id = session.execute(
        select(func.min(Message.id), func.max(Message.id)).where(*_rows_of(key_id, user_id))
    ).one()
    exchanges = usage["exchanges"]
    named = sum(count for status, count in exchanges.items() if status != "total")
    # The usage API counts summary rows (services/summaries.py) among the exchanges.
    summaries = session.scalar(
        select(func.count()).where(*_rows_of(key_id, user_id), Message.status == MessageStatus.SUMMARY)
    )
    exchanges["summaries"] = summaries or 0
    exchanges["disconnected"] = exchanges["total"] - named - exchanges["summaries"]
    micros = round(usage["cost"]["amount"] * 1_000_000)
    return {**usage, "cost_usd": format_usd(micros), "first_id": first_id, "last_id": last_id}


def _rows_of(key_id: int | None, user_id: str) -> tuple:
    return owned_by(key_id), Message.user_id == user_id


def exchange_start(session: Session, key_id: int | None, user_id: str, exchange_id: str) -> int | None:
    """The cursor (`after`) of the page that begins with this exchange of the conversation."""
    of_exchange = Message.exchange_id == exchange_id
    first = session.scalar(select(func.min(Message.id)).where(*_rows_of(key_id, user_id), of_exchange))
    return None if first is None else first - 1


def _fetch(session: Session, key_id: int | None, user_id: str, after: int | None, before: int | None):
    """The rows a page may take, read a few at a time (a page full of bytes stops early)."""
    query = select(Message).where(*_rows_of(key_id, user_id))
    if before is not None:
        query = query.where(Message.id < before).order_by(Message.id.desc())
    else:
        query = query.where(Message.id > (after or 0)).order_by(Message.id)
    return session.scalars(query.limit(PAGE_ROWS + EXCHANGE_SLACK + 1).execution_options(yield_per=16))


def _take(rows: Iterable[Message], max_bytes: int) -> tuple[list[Message], bool]:
    """The rows of one page, in the order read: PAGE_ROWS and `max_bytes` at most (the
    first row whatever its size), then on to the end of the exchange under way; and
    whether rows were left."""
    page: list[Message] = []
    size = 0
    for row in rows:
        cost = json_size(row.content) + json_size(row.message_fields)
        full = len(page) >= PAGE_ROWS or (page and size + cost > max_bytes)
        if full and (row.exchange_id != page[-1].exchange_id or len(page) >= PAGE_ROWS + EXCHANGE_SLACK):
            return page, True
        page.append(row)
        size += cost
    return page, False


def thread_page(
    session: Session,
    key_id: int | None,
    user_id: str,
    after: int | None = None,
    before: int | None = None,
    max_bytes: int = 4 * 1024 * 1024,
) -> Thread:
    """The page of the conversation's rows after row `after` (from its start when neither
    is given) or, with `before`, the page that ends just before that row."""
    fetched = _fetch(session, key_id, user_id, after, before)
    try:
        rows, more = _take(fetched, max_bytes)
    finally:
        fetched.close()
    if before is not None:
        rows.reverse()
    if not rows:
        return Thread([], None, None)
    if before is None:
        has_earlier, has_later = after is not None and _exists(session, key_id, user_id, "<", rows[0].id), more
    else:
        has_earlier, has_later = more, _exists(session, key_id, user_id, ">", rows[-1].id)
    exchanges = _exchanges(rows, _attempts(session, {row.exchange_id for row in rows}))
    return Thread(exchanges, rows[0].id if has_earlier else None, rows[-1].id if has_later else None)


def _exists(session: Session, key_id: int | None, user_id: str, side: str, row_id: int) -> bool:
    beyond = Message.id < row_id if side == "<" else Message.id > row_id
    return session.scalar(select(Message.id).where(*_rows_of(key_id, user_id), beyond).limit(1)) is not None


def _attempts(session: Session, exchange_ids: set[str]) -> dict[str, list[dict[str, Any]]]:
    """The upstream attempts of these exchanges, in the order the router made them."""
    found: dict[str, list[dict[str, Any]]] = {}
    query = select(UpstreamAttempt).where(UpstreamAttempt.exchange_id.in_(exchange_ids))
    for attempt in session.scalars(query.order_by(UpstreamAttempt.exchange_id, UpstreamAttempt.attempt)):
        found.setdefault(attempt.exchange_id, []).append(attempt.to_dict())
    return found


def _exchanges(rows: list[Message], attempts: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Consecutive rows of one exchange as one entry: its turns and what it was."""
    groups: list[list[Message]] = []
    for row in rows:
        if groups and groups[-1][0].exchange_id == row.exchange_id:
            groups[-1].append(row)
        else:
            groups.append([row])
    return [_exchange(group, attempts.get(group[0].exchange_id, [])) for group in groups]


def is_reply(row: Message) -> bool:
    """The model's answer (the pipeline names its model), not an assistant turn a client sent."""
    return row.role == "assistant" and row.model is not None


def _exchange(rows: list[Message], attempts: list[dict[str, Any]]) -> dict[str, Any]:
    first = rows[0]
    reply = next((row for row in reversed(rows) if is_reply(row)), None)
    named = next((row.model for row in rows if row.model), None)
    started = as_utc(first.timestamp)
    finished = as_utc(reply.timestamp) if reply else None
    return {
        "id": first.exchange_id,
        "status": first.status,
        "error": next((row.error for row in rows if row.error), None),
        "model": reply.model if reply else named,
        "deployment": reply.deployment if reply else None,
        "tokens": _tokens(reply),
        "cost": format_usd(reply.cost_micros) if reply else None,
        "started_at": iso_utc(started),
        "finished_at": iso_utc(finished),
        "seconds": round((finished - started).total_seconds(), 3) if finished else None,
        "attempts": attempts,
        "turns": [turn(row) for row in rows],
    }


def _tokens(reply: Message | None) -> dict[str, int | None] | None:
    if reply is None or reply.total_tokens is None:
        return None
    return {"prompt": reply.prompt_tokens, "completion": reply.completion_tokens, "total": reply.total_tokens}


# A summary row's field naming the newest row it covers (services/summaries.py).
COVERS = "compacts_through"


def is_summary(row: Message) -> bool:
    """A compaction summary standing for older exchanges (services/summaries.py: a row of
    status "summary", whose fields say through which row it covers the conversation)."""
    return row.status == MessageStatus.SUMMARY


def turn(row: Message) -> dict[str, Any]:
    """One row as the template shows it: who, when, what was said, the tool calls made or
    answered, and any other field of the message as JSON text."""
    fields = row.message_fields or {}
    kind = "summary" if is_summary(row) else "reply" if is_reply(row) else "message"
    others = {name: value for name, value in fields.items() if name not in SHOWN_FIELDS and name != COVERS}
    return {
        "row_id": row.id,
        "role": row.role,
        "kind": kind,
        "at": iso_utc(row.timestamp),
        "parts": content_parts(row.content),
        "refusal": fields.get("refusal"),
        "name": fields.get("name"),
        "tool_call_id": fields.get("tool_call_id"),
        "tool_calls": [tool_call(call) for call in fields.get("tool_calls") or [] if isinstance(call, dict)],
        "covers": fields.get(COVERS) if kind == "summary" else None,
        "other_fields": _json_text(others) if others else None,
    }


def tool_call(call: dict[str, Any]) -> dict[str, Any]:
    """A tool call's id, name and arguments (JSON arguments indented for reading)."""
    body = call.get("function") or call.get("custom") or {}
    arguments = body.get("arguments", body.get("input", ""))
    if isinstance(arguments, str):
        with contextlib.suppress(ValueError):  # not JSON: shown as the model wrote it
            arguments = _json_text(json.loads(arguments))
    else:
        arguments = _json_text(arguments)
    return {"id": call.get("id"), "type": call.get("type"), "name": body.get("name"), "arguments": arguments}


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def content_parts(content: Any) -> list[dict[str, Any]]:
    """A message's content as parts to show: text; images as links (never loaded; data:
    URLs only described); files by name; anything else as its JSON."""
    if content is None or content == "":
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        return [{"type": "other", "text": _json_text(content)}]
    return [_part(part) for part in content]


def _part(part: Any) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("text", "input_text", "output_text"):
        return {"type": "text", "text": str(part.get("text", ""))}
    if kind == "refusal":
        return {"type": "text", "text": str(part.get("refusal", ""))}
    if kind in ("image_url", "input_image"):
        image = part.get("image_url")
        url = image.get("url") if isinstance(image, dict) else image
        return _image(url if isinstance(url, str) else "")
    if kind in ("file", "input_file"):
        file = part.get("file") if isinstance(part.get("file"), dict) else part
        return {"type": "file", "label": file.get("filename") or file.get("file_id") or "a file (no name)"}
    if kind == "input_audio":
        audio = part.get("input_audio") or {}
        return {"type": "file", "label": f"audio ({audio.get('format', 'unknown format')})"}
    return {"type": "other", "text": _json_text(part)}


def _image(url: str) -> dict[str, Any]:
    if url.lower().startswith(LINKED_SCHEMES):
        return {"type": "image", "href": url, "label": url}
    if url.lower().startswith("data:"):
        media = url[5:].split(";", 1)[0].split(",", 1)[0] or "unknown type"
        return {"type": "image", "href": None, "label": f"inline image ({media}, {len(url):,} characters)"}
    return {"type": "image", "href": None, "label": url or "an image (no URL)"}


def erase(session: Session, key_id: int | None, user_id: str) -> int:
    """Erase the conversation as the API's DELETE does (services/conversations.py: its rows,
    the responses made in it, its Conversations-API record); the rows erased."""
    return delete_conversation(session, user_id, key_id)
