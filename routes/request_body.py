"""Reading a JSON request body into a pydantic model, with the envelope's errors."""

from __future__ import annotations

from typing import Any

from flask import request

from errors import ApiError


def json_body() -> Any:
    """The parsed JSON body; 415 when it is not declared JSON, 400 when it does not parse."""
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json")
    data = request.get_json(silent=True)
    if data is None:
        raise ApiError(400, "Request body is not valid JSON")
    return data
