"""Response models of GET /v1/health (documented in the service's OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

Status = Literal["up", "degraded", "down", "unknown"]


class CheckRecord(BaseModel):
    status: Status
    at: datetime = Field(description="When the check ran (UTC)")
    latency_ms: float | None = Field(None, description="Time to the readiness answer, or to the failure")
    http_status: int | None = None
    error: str | None = Field(None, description="Why the check failed: timeout, connection refused, HTTP 503 ...")
    failing: list[str] = Field(default_factory=list, description="The service's own readiness checks that failed")


class ServiceHealth(BaseModel):
    name: str
    status: Status = Field(description="up | degraded (ready, an optional dependency failing) | down | unknown "
                                       "(not checked yet)")
    optional: bool = Field(description="A later/optional service: when down the platform is degraded, not down")
    latency_ms: float | None = Field(None, description="Latency of the last check")
    last_change: datetime | None = Field(None, description="When the status last changed (UTC)")
    last_checked: datetime | None = None
    http_status: int | None = None
    error: str | None = None
    failing: list[str] = Field(default_factory=list)
    history: list[CheckRecord] = Field(default_factory=list, description="The last checks, newest first (?history=N)")


class HealthReport(BaseModel):
    object: Literal["platform.health"] = "platform.health"
    status: Literal["ok", "degraded", "down"] = Field(description="ok: all up; degraded: an optional service down "
                                                                  "or one degraded; down: a core service down")
    checked_at: datetime | None = Field(None, description="When the last polling round finished")
    interval_sec: float
    services: list[ServiceHealth]
