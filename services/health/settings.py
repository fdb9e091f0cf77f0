"""Health service settings (env names = field names upper-cased, or the alias)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from common.settings import ServiceSettings

# The standard ports (.env.example); a later service that is not running shows as down, not as an error.
DEFAULT_TARGETS = (
    "gateway=http://localhost:8080/readyz,"
    "ai_service=http://localhost:8001/readyz,"
    "llm_server=http://localhost:8010/readyz,"
    "vllm=http://localhost:8000/health,"
    "graphrag=http://localhost:8002/readyz,"
    "guided=http://localhost:8003/readyz,"
    "writing=http://localhost:8004/readyz,"
    "practice=http://localhost:8006/readyz"
)


class HealthSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="HEALTH_HOST")
    port: int = Field(default=8005, validation_alias="HEALTH_PORT")
    # The token callers (ai_service, operators) must present; required outside dev.
    service_token: str = Field(default="", validation_alias="HEALTH_API_TOKEN")
    # name=url pairs, comma-separated: the URL answers 200 when the service is ready.
    targets: str = Field(default=DEFAULT_TARGETS, validation_alias="HEALTH_TARGETS")
    # Services whose being down makes the platform "degraded" rather than "down" (later, optional ones).
    optional_targets: str = Field(default="guided,writing,practice", validation_alias="HEALTH_OPTIONAL_TARGETS")
    interval_sec: float = Field(default=10.0, gt=0, validation_alias="HEALTH_INTERVAL_SEC")
    timeout_sec: float = Field(default=3.0, gt=0, validation_alias="HEALTH_CHECK_TIMEOUT_SEC")
    # Checks kept per service in Redis (a capped list), newest first.
    history_size: int = Field(default=100, ge=1, le=10000, validation_alias="HEALTH_HISTORY_SIZE")
    redis_prefix: str = Field(default="health:", validation_alias="HEALTH_REDIS_PREFIX")

    @field_validator("targets")
    @classmethod
    def _targets_parse(cls, value: str) -> str:
        from services.health.targets import parse_targets

        if not value.strip():  # HEALTH_TARGETS= (empty) means the standard ports
            return DEFAULT_TARGETS
        parse_targets(value)  # raises ValueError on a malformed entry
        return value

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "HealthSettings":
        self.require_outside_dev("HEALTH_API_TOKEN", self.service_token)
        return self

    def target_list(self):
        from services.health.targets import parse_targets

        optional = {n.strip() for n in self.optional_targets.split(",") if n.strip()}
        return parse_targets(self.targets, optional=optional)
