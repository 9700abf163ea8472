"""A request model's ValidationError as the client reads it: each bad field as a path in the
client's JSON ("messages.0.content") with its message, and the 400's sentence, which each
model chooses (`Validated`). flask-openapi3 validates every view's parameters with these
models and hands a failure to errors.reject_invalid, which asks `rejection_of`."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar, get_args

from pydantic import BaseModel, ValidationError

# The names an error location may keep, one set per API, as the client spells them (aliases
# included): each Validated model adds its own fields' and its nested models' as it is made.
# Anything else pydantic puts there (union tags and the like) is dropped so that a path reads
# like the JSON. One set per API, not one in all, because the sets are seen from outside: the
# /conversations queries forbid unknown parameters, and name one in their 400 only when it is
# in CHAT_FIELDS (any other is answered "Request body must be a JSON object", as always).
CHAT_FIELDS: set[str] = set()
RESPONSES_FIELDS: set[str] = set()

# Request models by name: a ValidationError's `title` names the model that raised it. Every
# Validated model adds itself as it is made.
REQUEST_MODELS: dict[str, type[Validated]] = {}

_DEFAULT_SCHEMAS: dict[type, dict[str, Any]] = {}


def field_names_in(annotation: Any, seen: set[type] | None = None) -> Iterator[str]:
    """The field names (aliases where set) of every model in `annotation`, nested ones too."""
    seen = set() if seen is None else seen
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if annotation in seen:
            return
        seen.add(annotation)
        for name, info in annotation.model_fields.items():
            yield info.alias or name
            yield from field_names_in(info.annotation, seen)
    for argument in get_args(annotation):
        yield from field_names_in(argument, seen)


def _model_of(exc: ValidationError) -> type[Validated]:
    return REQUEST_MODELS.get(exc.title, Validated)


def error_details(exc: ValidationError) -> list[dict[str, str]]:
    """One {"field", "message"} per bad field, in the client's terms, for a 400 answer: the
    path keeps the names of fields (of the API of the model that raised `exc`), list indexes,
    and the keys of a `metadata` object (the client's own names, so "metadata.team" says which)."""
    names = _model_of(exc).field_names
    details: dict[str, list[str]] = {}
    for error in exc.errors(include_url=False, include_context=False, include_input=False):
        loc = error["loc"]
        path = [
            str(part)
            for index, part in enumerate(loc)
            if isinstance(part, int) or part in names or (index and loc[index - 1] == "metadata")
        ]
        field = ".".join(path) or "body"
        message = error["msg"].removeprefix("Value error, ")
        if message not in details.setdefault(field, []):
            details[field].append(message)
    return [{"field": field, "message": "; ".join(messages)} for field, messages in details.items()]


def rejection_of(exc: ValidationError) -> tuple[str, list[dict[str, str]] | None]:
    """The 400's sentence and details for a request model's ValidationError."""
    return _model_of(exc).rejection(error_details(exc))


class Validated:
    """A request model that says how its own validation errors are answered (400).

    flask-openapi3 validates each view's parameters with these models and hands a
    failure to errors.reject_invalid, which asks the model for the answer.
    """

    invalid_message: ClassVar[str] = "Invalid request"
    # Also name the bad fields in the sentence, for clients (OpenAI's SDKs) that show only it.
    name_fields: ClassVar[bool] = False
    # The names its error paths keep: its API's set, which its own field names join unless
    # names_in_errors is False.
    field_names: ClassVar[set[str]] = CHAT_FIELDS
    names_in_errors: ClassVar[bool] = True

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)  # type: ignore[misc]
        REQUEST_MODELS[cls.__name__] = cls
        if cls.names_in_errors:
            cls.field_names.update(field_names_in(cls))

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        """pydantic's JSON schema of the model; with no arguments, made once per model.

        flask-openapi3 asks a header or query model for its whole JSON schema on every
        request it validates (to see which fields may be null), and pydantic builds it
        anew each time: a tenth of a `/v1/chat/completions` request's CPU, for its
        X-Conversation-Id header (bench/cpu.py --profile). A model's schema cannot change
        once its class exists. The answer is shared: read it, never change it. Calls with
        arguments (the OpenAPI document's) go to pydantic as they are.
        """
        if args or kwargs:
            return super().model_json_schema(*args, **kwargs)  # type: ignore[misc]
        schema = _DEFAULT_SCHEMAS.get(cls)
        if schema is None:
            schema = _DEFAULT_SCHEMAS[cls] = super().model_json_schema()  # type: ignore[misc]
        return schema

    @classmethod
    def rejection(cls, details: list[dict[str, str]]) -> tuple[str, list[dict[str, str]] | None]:
        """The error sentence and the details of a 400 for these bad fields."""
        if any(d["field"] == "body" for d in details):  # not an object at all
            return "Request body must be a JSON object", None
        message = cls.invalid_message
        if cls.name_fields:
            message += ": " + "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return message, details


class ResponsesValidated(Validated):
    """A request model of the Responses and Conversations APIs: OpenAI's 400, whose sentence
    names the bad fields, with paths in those APIs' own field names."""

    name_fields: ClassVar[bool] = True
    field_names: ClassVar[set[str]] = RESPONSES_FIELDS
