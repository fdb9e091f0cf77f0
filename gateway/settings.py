"""gateway configuration: one pydantic-settings class."""

from __future__ import annotations

from pydantic import Field, model_validator

from common.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8080, alias="GATEWAY_PORT")
    ai_service_url: str = Field("http://localhost:8001", alias="AI_SERVICE_URL")
    ai_gateway_shared_token: str = ""
    max_body_bytes: int = Field(1_048_576, alias="GATEWAY_MAX_BODY_BYTES", ge=1024)
    default_rpm: int = Field(60, alias="GATEWAY_DEFAULT_RPM", ge=1)
    # Long enough for the slowest tier (cloud timeout) plus ai_service's own work.
    upstream_timeout_sec: float = Field(300.0, alias="GATEWAY_UPSTREAM_TIMEOUT_SEC", gt=0)

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "GatewaySettings":
        if self.app_env != "dev" and not self.ai_gateway_shared_token:
            raise ValueError(f"AI_GATEWAY_SHARED_TOKEN is required when APP_ENV={self.app_env}")
        return self
