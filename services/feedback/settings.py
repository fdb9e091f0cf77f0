"""Feedback service settings (env names = field names upper-cased, or the alias)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, model_validator

from common.ab import AB_KEY_PREFIX
from common.settings import ServiceSettings


def _default_db() -> Path:
    home = Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))
    return home / "feedback" / "feedback.db"


class FeedbackSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="FEEDBACK_HOST")
    port: int = Field(default=8007, validation_alias="FEEDBACK_PORT")
    service_token: str = Field(default="", validation_alias="FEEDBACK_API_TOKEN")
    # The durable vote store: one SQLite file (WAL, synchronous=FULL). See docs/feedback.md.
    db_path: Path = Field(default_factory=_default_db, validation_alias="FEEDBACK_DB_PATH")
    # The way back to ai_service for the arena's two answers.
    ai_service_url: str = Field(default="http://127.0.0.1:8001", validation_alias="AI_SERVICE_URL")
    ai_service_internal_token: str = Field(default="", validation_alias="AI_SERVICE_INTERNAL_TOKEN")
    # llm_server's control API (adapter list/load/unload) and its adapters dir (rollback retires there).
    llm_server_url: str = Field(default="http://127.0.0.1:8010", validation_alias="LLM_SERVER_URL")
    llm_server_token: str = Field(default="", validation_alias="LLM_SERVER_API_TOKEN")
    adapters_dir: Path | None = Field(default=None, validation_alias="LLM_ADAPTERS_DIR")
    arena_max_tokens: int = Field(default=64, ge=8, le=1024, validation_alias="FEEDBACK_ARENA_MAX_TOKENS")
    arena_timeout_sec: float = Field(default=120.0, gt=0, validation_alias="FEEDBACK_ARENA_TIMEOUT_SEC")
    ab_key_prefix: str = Field(default=AB_KEY_PREFIX, validation_alias="FEEDBACK_AB_KEY_PREFIX")

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "FeedbackSettings":
        self.require_outside_dev("FEEDBACK_API_TOKEN", self.service_token)
        return self

    @property
    def resolved_adapters_dir(self) -> Path:
        if self.adapters_dir:
            return Path(self.adapters_dir)
        home = Path(os.environ.get("TUTORSTACK_HOME", Path.home() / ".cache" / "tutorstack"))
        return home / "adapters"
