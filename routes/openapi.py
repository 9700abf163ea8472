"""What the OpenAPI document says of each route: the security scheme and each operation's
documented answers. A helper of the route modules, not one of them (no blueprint).

The pydantic models a view names in its signature (schemas/) are both what flask-openapi3
documents and what it validates the request with; their failures are answered by
errors.reject_invalid, in the words each model chooses.
"""

from __future__ import annotations

from typing import Any

from schemas import ErrorResponse, OpenAIErrorResponse

# How clients authenticate (REQUIRE_API_KEY): a key from `flask keys create` as a bearer token.
SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "description": "A client key from `flask keys create`. Required when REQUIRE_API_KEY is on "
        "(the default with APP_ENV=production); ignored otherwise.",
    }
}
KEY_REQUIRED = [{"bearerAuth": []}]

# Statuses any route may answer besides its success: bad input, no or bad key, too large,
# not JSON, rate limited, our own failure, and the database or upstream failing.
_CLIENT_ERRORS = (400, 401, 413, 415, 429)
_SERVER_ERRORS = (500, 502, 503, 504)


def responses(success: dict[int, Any], *, openai: bool = False, read_only: bool = False) -> dict[int, Any]:
    """The responses of one operation: its successes and the error envelope for the rest."""
    error = OpenAIErrorResponse if openai else ErrorResponse
    codes = (400, 401, 404, 429, 500, 503) if read_only else (*_CLIENT_ERRORS, 404, *_SERVER_ERRORS)
    return {**{code: error for code in codes}, **success}


# The document's answer for OpenAI's objects, as the SDK's types define them.
_OBJECT = {"application/json": {"schema": {"type": "object"}}}
_STREAM = {"text/event-stream": {"schema": {}}}  # each event's data: one of OpenAI's stream events


def openai_object(read_only: bool = False, streams: bool = False) -> dict:
    """The documented answers of a route that answers one of OpenAI's objects (or its events)."""
    content = {**_OBJECT, **_STREAM} if streams else _OBJECT
    return responses({200: {"description": "OpenAI's object", "content": content}}, openai=True, read_only=read_only)
