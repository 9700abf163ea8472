"""The Open Responses specification's schemas, applied to what the service answers.

The schemas are the pydantic models of the PyPI package `openresponses-types` (pinned in
requirements-dev.txt), generated from the specification's `public/openapi/openapi.json`,
version SPEC_VERSION. They ignore fields they do not declare and coerce types in their
default (lax) mode, so a check here is stricter than `Model.model_validate`:

- types are JSON-strict: a "1" where a number belongs, 1.0 where an integer does, or null
  where the field is not nullable fails, and so does a required field that is missing;
- every key we send must be declared, by the specification's model at that place or, for
  the few fields OpenAI's own objects carry beyond the specification, by the openai SDK's
  type for that object (OPENAI_ONLY_FIELDS, each checked against the SDK's declaration when
  this module loads): a field we invent fails.

Objects the specification does not cover (list envelopes, deletions, conversations) are held
to the openai SDK's types the same way, their items to the specification's item schemas.
"""

from __future__ import annotations

import copy
import enum
import json
from typing import Annotated, Any, Literal, get_args, get_origin

import openresponses_types as spec
import pytest
from openai.types.responses import Response as OpenAIResponse
from openai.types.responses.response_usage import InputTokensDetails as OpenAIInputTokensDetails
from pydantic import BaseModel, Field, RootModel, TypeAdapter, ValidationError

SPEC_VERSION = "2026-04-24"

# What the specification's `/responses` operation may stream (its text/event-stream oneOf):
# every event schema it lists, by the `type` each one fixes.
STREAMED_EVENT_TYPES = frozenset(
    {
        "response.created",
        "response.queued",
        "response.in_progress",
        "response.completed",
        "response.failed",
        "response.incomplete",
        "response.output_item.added",
        "response.output_item.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_part.done",
        "response.content_part.added",
        "response.content_part.done",
        "response.output_text.delta",
        "response.output_text.done",
        "response.refusal.delta",
        "response.refusal.done",
        "response.reasoning.delta",
        "response.reasoning.done",
        "response.reasoning_summary_text.delta",
        "response.reasoning_summary_text.done",
        "response.output_text.annotation.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "error",
    }
)

# Fields OpenAI's own objects carry that the specification's models do not declare, by the
# specification's model: (the openai SDK type that declares them, the fields).
OPENAI_ONLY_FIELDS: dict[type[BaseModel], tuple[type[BaseModel], frozenset[str]]] = {
    # Both are in the specification's source schema too (schema/components/schemas/
    # ResponseResource.json) and were left out of the published document.
    spec.ResponseResource: (OpenAIResponse, frozenset({"user", "conversation"})),
    spec.InputTokensDetails: (OpenAIInputTokensDetails, frozenset({"cache_write_tokens"})),
}

# An output item, as ResponseResource.output lists them (the specification's ItemField).
ItemField = Annotated[
    spec.Message | spec.FunctionCall | spec.FunctionCallOutput | spec.ReasoningBody | spec.CompactionBody, Field()
]
ITEM = TypeAdapter(ItemField)


def _fixed_type(model: type[BaseModel]) -> str:
    """The one value a model's `type` field may take (an enum of one member, or a Literal)."""
    annotation = model.model_fields["type"].annotation
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        values = [member.value for member in annotation]
    else:
        assert get_origin(annotation) is Literal, f"{model.__name__}.type is {annotation}"
        values = list(get_args(annotation))
    (value,) = values
    return value


def _event_models() -> dict[str, type[BaseModel]]:
    """The specification's streaming event schemas by the type each fixes."""
    models = {}
    for name, model in vars(spec).items():
        if name.endswith("StreamingEvent") and isinstance(model, type) and issubclass(model, BaseModel):
            models[_fixed_type(model)] = model
    return models


EVENT_MODELS = _event_models()


def _check_the_schemas() -> None:
    """Refuse to check anything against schemas other than the ones this module describes."""
    if spec.__spec_version__ != SPEC_VERSION:
        raise RuntimeError(f"openresponses-types is of spec version {spec.__spec_version__}, not {SPEC_VERSION}")
    if set(EVENT_MODELS) != STREAMED_EVENT_TYPES:
        raise RuntimeError(
            f"the event schemas found are not the spec's: {sorted(set(EVENT_MODELS) ^ STREAMED_EVENT_TYPES)}"
        )
    for spec_model, (openai_model, fields) in OPENAI_ONLY_FIELDS.items():
        if not fields <= set(openai_model.model_fields) or fields & set(spec_model.model_fields):
            raise RuntimeError(
                f"{sorted(fields)} are not OpenAI's ({openai_model.__name__}) beyond {spec_model.__name__}"
            )


_check_the_schemas()


def _mend_published_defects(value: Any) -> Any:
    """A copy of `value` with the published document's one known defect set aside.

    JsonSchemaResponseFormat.schema is `{"type": "null"}` in public/openapi/openapi.json, so
    no echoed JSON schema could pass; the specification's source
    (schema/components/schemas/JsonSchemaResponseFormat.json) and OpenAI both make it an
    object. The object is checked to be one, then nulled for the generated model.
    """
    if isinstance(value, list):
        return [_mend_published_defects(item) for item in value]
    if not isinstance(value, dict):
        return value
    mended = {key: _mend_published_defects(item) for key, item in value.items()}
    text_format = (mended.get("text") or {}).get("format") if isinstance(mended.get("text"), dict) else None
    if isinstance(text_format, dict) and text_format.get("type") == "json_schema":
        assert isinstance(text_format.get("schema"), dict), f"text.format.schema is not an object: {text_format}"
        mended["text"] = {**mended["text"], "format": {**text_format, "schema": None}}
    return mended


def undeclared_fields(instance: Any, raw: Any, path: str = "") -> list[str]:
    """The paths of the keys in `raw` that no model declares where `instance` (what a model
    made of `raw`) has them; OPENAI_ONLY_FIELDS pass, and so do extras a model allows."""
    if isinstance(instance, RootModel):
        return undeclared_fields(instance.root, raw, path)
    if isinstance(instance, list) and isinstance(raw, list):
        return [
            miss
            for i, (m, r) in enumerate(zip(instance, raw, strict=True))
            for miss in undeclared_fields(m, r, f"{path}[{i}]")
        ]
    if isinstance(instance, dict) and isinstance(raw, dict):
        return [miss for key, m in instance.items() for miss in undeclared_fields(m, raw.get(key), f"{path}.{key}")]
    if not (isinstance(instance, BaseModel) and isinstance(raw, dict)):
        return []
    model = type(instance)
    declared = {(field.alias or name): name for name, field in model.model_fields.items()}
    beyond = next((fields for cls, (_, fields) in OPENAI_ONLY_FIELDS.items() if issubclass(model, cls)), frozenset())
    # The specification's Error object (WebSocket errors) allows more fields; OpenAI's SDK
    # models allow any, which is exactly what this check must not.
    extras_allowed = model is spec.Error
    missing = []
    for key, value in raw.items():
        if key in declared:
            missing += undeclared_fields(getattr(instance, declared[key]), value, f"{path}.{key}")
        elif key not in beyond and not extras_allowed:
            missing.append(f"{path}.{key}".lstrip("."))
    return missing


def conforms(schema: Any, data: Any, what: str = "") -> Any:
    """`data` (parsed JSON) validated against `schema` (a model or TypeAdapter): strictly,
    with every key declared (see the module's docstring); fails the test otherwise."""
    adapter = schema if isinstance(schema, TypeAdapter) else TypeAdapter(schema)
    mended = _mend_published_defects(copy.deepcopy(data))
    name = what or getattr(schema, "__name__", str(schema))
    try:
        instance = adapter.validate_json(json.dumps(mended), strict=True)
    except ValidationError as exc:
        pytest.fail(f"{name} does not conform to the Open Responses schema:\n{exc}\n{json.dumps(data)[:2000]}")
    unknown = undeclared_fields(instance, mended)
    if unknown:
        pytest.fail(f"{name} has fields the specification (and OpenAI) do not declare: {unknown}")
    return instance


def conforming_event(event: dict[str, Any]) -> BaseModel:
    """A streamed event, validated against the schema the specification gives its type."""
    kind = event.get("type")
    if kind not in EVENT_MODELS:
        pytest.fail(f"event type {kind!r} is not one the specification streams")
    return conforms(EVENT_MODELS[kind], event, f"event {kind}")
