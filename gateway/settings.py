"""gateway configuration: one pydantic-settings class."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from common.settings import ServiceSettings

# Where `make run` keeps the local development secrets (common.secrets.ensure_dev_secrets).
DEV_SECRETS_FILE = Path(".tutorstack/secrets.env")
# The committed public OpenAPI document, found from this package, not from the working directory.
DEFAULT_OPENAPI_PATH = Path(__file__).resolve().parent.parent / "docs" / "openapi.json"


class GatewaySettings(ServiceSettings):
    host: str = Field("127.0.0.1", alias="GATEWAY_HOST")
    port: int = Field(8080, alias="GATEWAY_PORT")
    ai_service_url: str = Field("http://localhost:8001", alias="AI_SERVICE_URL")
    ai_gateway_shared_token: str = ""
    # HMAC secret that signs API-key records in Redis; required outside dev. In dev, when unset, the
    # one `make run` generated in .tutorstack/secrets.env is used (and generated there if missing).
    key_signing_secret: str = Field("", alias="GATEWAY_KEY_SIGNING_SECRET")
    max_body_bytes: int = Field(1_048_576, alias="GATEWAY_MAX_BODY_BYTES", ge=1024)
    default_rpm: int = Field(60, alias="GATEWAY_DEFAULT_RPM", ge=1)
    # Long enough for the slowest tier (cloud timeout) plus ai_service's own work.
    upstream_timeout_sec: float = Field(300.0, alias="GATEWAY_UPSTREAM_TIMEOUT_SEC", gt=0)
    # uvicorn worker processes; 0 = automatic: 1 in dev and test, one per CPU core in prod.
    workers: int = Field(0, alias="GATEWAY_WORKERS", ge=0)
    # Serve /docs and /openapi.json (the public routes) on the gateway; off by default.
    expose_docs: bool = Field(False, alias="GATEWAY_EXPOSE_DOCS")
    # The public OpenAPI document served then (scripts/build_public_openapi.py writes it); default: this
    # checkout's docs/openapi.json. Absent (a slim image): a skeleton of the public routes is served instead.
    openapi_path: Path = Field(DEFAULT_OPENAPI_PATH, alias="GATEWAY_OPENAPI_PATH")
    # Pooled keep-alive connections to ai_service, per worker.
    upstream_max_connections: int = Field(256, alias="GATEWAY_UPSTREAM_MAX_CONNECTIONS", ge=1)

    @field_validator("openapi_path", mode="before")
    @classmethod
    def _default_openapi_path(cls, value):
        return DEFAULT_OPENAPI_PATH if value in (None, "") else value

    @model_validator(mode="after")
    def _secrets_outside_dev(self) -> "GatewaySettings":
        if self.app_env != "dev" and not self.ai_gateway_shared_token:
            raise ValueError(f"AI_GATEWAY_SHARED_TOKEN is required when APP_ENV={self.app_env}")
        self.require_outside_dev("GATEWAY_KEY_SIGNING_SECRET", self.key_signing_secret)
        if not self.key_signing_secret:
            from common.secrets import ensure_dev_secrets

            self.key_signing_secret = ensure_dev_secrets(DEV_SECRETS_FILE, dict(os.environ))[
                "GATEWAY_KEY_SIGNING_SECRET"]
        return self

    @property
    def worker_count(self) -> int:
        if self.workers:
            return self.workers
        return (os.cpu_count() or 1) if self.is_prod else 1
