"""Reading a JSON request body into a pydantic model, with the envelope's errors."""

from __future__ import annotations

from typing import Any, TypeVar

from flask import current_app, request
from pydantic import BaseModel, ValidationError

from errors import ApiError
from schemas import error_details

ModelT = TypeVar("ModelT", bound=BaseModel)


def nesting_deeper_than(raw: bytes, limit: int) -> bool:
    """True when the JSON text `raw` nests arrays/objects more than `limit` levels deep."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return False  # cannot be deeper than the number of brackets it has
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return False


def json_body() -> Any:
    """The parsed JSON body; 415 when it is not declared JSON, 400 when it does not parse
    or nests deeper than MAX_JSON_DEPTH (the parser would recurse out of stack first)."""
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json")
    limit = current_app.config["MAX_JSON_DEPTH"]
    if nesting_deeper_than(request.get_data(cache=True), limit):
        raise ApiError(400, f"Request body nests deeper than {limit} levels")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "Request body is not valid JSON")
    return data


def check_model_allowed(model: str | None) -> None:
    """400 when `model` is named but not in ALLOWED_MODELS (when that list is set)."""
    allowed = current_app.config.get("ALLOWED_MODELS") or []
    if model is not None and allowed and model not in allowed:
        raise ApiError(
            400,
            f"Model {model!r} is not allowed here; allowed: {', '.join(allowed)}",
            details=[{"field": "model", "message": "not an allowed model"}],
            code="model_not_allowed",
        )


def validated_body(model: type[ModelT], error: str, *, name_fields: bool = False) -> tuple[ModelT, dict[str, Any]]:
    """The JSON object body validated as `model` (and the raw dict), or a 400 saying `error`.

    The 400 lists each bad field in `details`; `name_fields` also names them in the
    sentence itself, for clients (OpenAI's SDKs) that show only the message.
    """
    data = json_body()
    if not isinstance(data, dict):
        raise ApiError(400, "Request body must be a JSON object")
    try:
        return model.model_validate(data), data
    except ValidationError as exc:
        details = error_details(exc)
        if name_fields:
            error = f"{error}: " + "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ApiError(400, error, details=details) from None
