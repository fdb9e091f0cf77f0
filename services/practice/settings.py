"""Practice service settings (env names = field names upper-cased, or the alias)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from common.settings import ServiceSettings
from services.practice.intents import DEFAULT_MODEL_PATH
from services.practice.personas import DEFAULT_PERSONAS_DIR


class PracticeSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="PRACTICE_HOST")
    port: int = Field(default=8006, validation_alias="PRACTICE_PORT")
    # The token callers (ai_service) must present; required outside dev.
    service_token: str = Field(default="", validation_alias="PRACTICE_API_TOKEN")
    # The way back to ai_service for LLM completions.
    ai_service_url: str = Field(default="http://127.0.0.1:8001", validation_alias="AI_SERVICE_URL")
    ai_service_internal_token: str = Field(default="", validation_alias="AI_SERVICE_INTERNAL_TOKEN")

    personas_dir: Path = Field(default=DEFAULT_PERSONAS_DIR, validation_alias="PRACTICE_PERSONAS_DIR")
    intent_model_path: Path = Field(default=DEFAULT_MODEL_PATH, validation_alias="PRACTICE_INTENT_MODEL")
    # Reply engine: rules | llm | ab (ab = a sticky split by hash of user_id, PRACTICE_AB_LLM_SHARE to llm).
    engine: Literal["rules", "llm", "ab"] = Field(default="ab", validation_alias="PRACTICE_ENGINE")
    ab_llm_share: float = Field(default=0.5, ge=0.0, le=1.0, validation_alias="PRACTICE_AB_LLM_SHARE")
    ab_salt: str = Field(default="practice-ab-1", validation_alias="PRACTICE_AB_SALT")
    # Runtime kill switch: this Redis key, when set to "rules" (or "llm"), decides the engine for
    # everyone, read on every request (no restart): `python -m services.practice engine rules`.
    engine_override_key: str = Field(default="practice:engine_override", validation_alias="PRACTICE_ENGINE_OVERRIDE_KEY")
    # The llm engine: adapter family (used when a version is loaded; "" = always the base model),
    # a time budget for the whole reply (attempts included), tokens per reply, attempts.
    llm_adapter_family: str = Field(default="peer", validation_alias="PRACTICE_LLM_ADAPTER")
    llm_budget_sec: float = Field(default=15.0, gt=0, validation_alias="PRACTICE_LLM_BUDGET_SEC")
    llm_max_tokens: int = Field(default=60, ge=8, le=512, validation_alias="PRACTICE_LLM_MAX_TOKENS")
    llm_attempts: int = Field(default=2, ge=1, le=4, validation_alias="PRACTICE_LLM_ATTEMPTS")
    llm_temperature: float = Field(default=0.7, ge=0, le=2, validation_alias="PRACTICE_LLM_TEMPERATURE")
    # Limits: messages per request (413 above), characters per message (413), utterances per /v1/intents.
    max_turns: int = Field(default=40, ge=2, validation_alias="PRACTICE_MAX_TURNS")
    max_message_chars: int = Field(default=2000, ge=10, validation_alias="PRACTICE_MAX_MESSAGE_CHARS")
    max_batch: int = Field(default=256, ge=1, validation_alias="PRACTICE_MAX_BATCH")
    # Sessions kept per trainee (newest first) and for how long.
    sessions_per_user: int = Field(default=200, ge=1, validation_alias="PRACTICE_SESSIONS_PER_USER")
    session_ttl_days: int = Field(default=180, ge=1, validation_alias="PRACTICE_SESSION_TTL_DAYS")
    # One intra-op thread: a single utterance gains nothing from two, and on a host shared with vLLM two
    # threads contend for the cores (measured: bench/results/practice.md).
    torch_threads: int = Field(default=1, ge=1, validation_alias="PRACTICE_TORCH_THREADS")

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "PracticeSettings":
        self.require_outside_dev("PRACTICE_API_TOKEN", self.service_token)
        self.require_outside_dev("AI_SERVICE_INTERNAL_TOKEN", self.ai_service_internal_token)
        return self
