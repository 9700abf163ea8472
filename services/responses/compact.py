"""POST /v1/responses/compact (OpenAI's `responses.compact`): the input and the state a request
names, compacted by the model into OpenAI's `response.compaction` object (see
services/responses/compaction.py for what a compaction holds and how it is sealed)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from errors import ApiError
from schemas import CompactRequest
from services.chat import ChatPipeline
from services.client_keys import ClientKey
from services.responses import compaction
from services.responses.items import item_content, message_item, new_id
from services.responses.objects import usage_object
from services.responses.service import chat_turn, prepared
from services.tokens import estimate_prompt_tokens, estimate_text_tokens

if TYPE_CHECKING:
    from telemetry import ExchangeReport


def compact_response(
    pipeline: ChatPipeline,
    sealer: compaction.Sealer,
    request: CompactRequest,
    client_key: ClientKey | None,
    report: ExchangeReport,
) -> dict[str, Any]:
    """POST /v1/responses/compact: the input and state `request` names, compacted (see
    services/responses/compaction.py), as OpenAI's `response.compaction` object: every user
    message, then the compaction item; usage the summarising call's. Only that call's
    exchange is recorded."""
    sealer.require()
    key_id = client_key.id if client_key else None
    state, items = prepared(request, key_id, new_id("resp"), sealer)
    turn = chat_turn(request, state, items, client_key)
    messages = pipeline.context(turn)[0][len(turn.leading or ()) :]
    if not messages:
        raise ApiError(400, "Nothing to compact: send input, or a previous_response_id", code="empty_input")
    made = compaction.compact(
        pipeline,
        sealer,
        messages,
        instructions=request.instructions,
        model=request.model,
        client_key=client_key,
        report=report,
    )
    output = [message_item("user", item_content(message["content"])) for message in made.compaction.kept]
    return {
        "id": new_id("resp"),
        "object": "response.compaction",
        "created_at": int(time.time()),
        "output": [*output, made.item],
        "usage": _usage(made, messages),
    }


def _usage(made: Any, messages: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The summarising call's usage, or its estimate when the upstream reported none."""
    reported = usage_object(made.completion.as_chat_completion().get("usage"))
    estimated = {
        "prompt_tokens": estimate_prompt_tokens(messages, {}),
        "completion_tokens": estimate_text_tokens(made.completion.text),
    }
    return reported or usage_object(estimated)
