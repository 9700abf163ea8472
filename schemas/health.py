"""The health probes' answers (GET /healthz, GET /readyz)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class HealthResponse(BaseModel):
    status: str


class ReadinessResponse(BaseModel):
    status: str | None = None
    error: str | None = None
    database: Literal["ok", "unavailable", "unwritable"] = Field(
        description="unavailable: it does not answer; unwritable: it answers, but replies it could not store "
        "wait in the local journal, recorded as soon as it takes writes again"
    )
    ratelimit_storage: Literal["ok", "degraded"] = Field(
        description="degraded: the shared storage (Redis) is unreachable, so each process counts limits on its own"
    )
    upstreams: dict[str, Literal["closed", "open", "half_open"]] = Field(
        default_factory=dict,
        description="each deployment's circuit breaker: open, it is sent nothing while another can answer; "
        "half_open, one probe request tests it. Never a reason for 503",
    )
    breaker_storage: Literal["ok", "degraded"] = Field(
        "ok",
        description="degraded: the shared storage (Redis) is unreachable, so each process keeps its own breakers",
    )
