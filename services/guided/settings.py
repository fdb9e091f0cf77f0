"""guided settings (env names: the field names upper-cased, or the alias)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator, model_validator

from common.settings import ServiceSettings


class GuidedSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="GUIDED_HOST")
    port: int = Field(default=8003, validation_alias="GUIDED_PORT")
    # The token callers (ai_service) present; required outside dev.
    service_token: str = Field(default="", validation_alias="GUIDED_API_TOKEN")
    # The way to the LLM: ai_service's /v1/chat/completions with the internal token, always private.
    ai_service_url: str = "http://localhost:8001"
    ai_service_internal_token: str = ""
    guided_llm_enabled: bool = True  # false: every reply is the template (no LLM call)
    guided_llm_model: str = ""  # "" = the base model; an adapter family name also works
    guided_llm_timeout_sec: float = 30.0
    guided_max_tokens: int = Field(default=120, ge=16, le=1024)
    guided_session_ttl_sec: int = 7 * 24 * 3600
    # Course -> teachers, loaded into Redis at start-up: {"course-001": {"teachers": ["teacher-001"]}}.
    guided_courses_file: Path | None = None
    # Where the writing analysis keeps a learner's weak points (docs/learner-profile.md).
    writing_profile_key: str = "learner:{course_id}:{user_id}"

    @field_validator("guided_courses_file", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return value or None

    @model_validator(mode="after")
    def _tokens_outside_dev(self) -> "GuidedSettings":
        self.require_outside_dev("GUIDED_API_TOKEN", self.service_token)
        self.require_outside_dev("AI_SERVICE_INTERNAL_TOKEN", self.ai_service_internal_token)
        return self
