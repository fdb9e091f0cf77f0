"""Writing service settings (env names = field names upper-cased, or the alias)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator

from common.settings import ServiceSettings
from services.writing.scorer import DEFAULT_MODEL_PATH

# Chosen by `python -m services.writing.train_scorer --anchors` (leave-one-prompt-out over the seven training prompts;
# bench/results/writing_anchors.md).
K0_DEFAULT = 8.0


class WritingSettings(ServiceSettings):
    host: str = Field(default="127.0.0.1", validation_alias="WRITING_HOST")
    port: int = Field(default=8004, validation_alias="WRITING_PORT")
    service_token: str = Field(default="", validation_alias="WRITING_API_TOKEN")
    ai_service_url: str = Field(default="http://127.0.0.1:8001", validation_alias="AI_SERVICE_URL")
    ai_service_internal_token: str = Field(default="", validation_alias="AI_SERVICE_INTERNAL_TOKEN")
    scorer_path: Path = Field(default=DEFAULT_MODEL_PATH, validation_alias="WRITING_SCORER_MODEL")
    # Limits: content characters (413 above) and raw body bytes (413 above).
    max_content_chars: int = Field(default=40_000, ge=100, validation_alias="WRITING_MAX_CONTENT_CHARS")
    max_body_bytes: int = Field(default=400_000, ge=1024, validation_alias="WRITING_MAX_BODY_BYTES")
    # The LLM part: time budget for all attempts (the whole analysis targets < 5 s), tokens, attempts.
    llm_enabled: bool = Field(default=True, validation_alias="WRITING_LLM_ENABLED")
    llm_budget_sec: float = Field(default=3.5, gt=0, validation_alias="WRITING_LLM_BUDGET_SEC")
    llm_max_tokens: int = Field(default=64, ge=16, le=512, validation_alias="WRITING_LLM_MAX_TOKENS")
    llm_attempts: int = Field(default=2, ge=1, le=3, validation_alias="WRITING_LLM_ATTEMPTS")
    llm_model: str = Field(default="", validation_alias="WRITING_LLM_MODEL")
    # The learner profile key (docs/learner-profile.md); guided reads the same setting.
    profile_key: str = Field(default="learner:{course_id}:{user_id}", validation_alias="WRITING_PROFILE_KEY")
    # Per-assignment calibration of the scorer: running feature statistics per assignment (assignment_id, or the
    # prompt text's hash) in Redis; used once the scorer's min_essays essays of that assignment have been seen.
    assignment_calibration: bool = Field(default=True, validation_alias="WRITING_ASSIGNMENT_CALIBRATION")
    assignment_stats_ttl_days: int = Field(default=180, ge=1, validation_alias="WRITING_ASSIGNMENT_STATS_TTL_DAYS")
    # Teacher anchors (teacher_score on analyze): later essays of the assignment are shifted by
    # sum(residuals) / (m + k0); k0 chosen by leave-one-prompt-out on the training prompts (train_scorer --anchors).
    anchor_k0: float = Field(default=K0_DEFAULT, ge=0, validation_alias="WRITING_ANCHOR_K0")
    # A teacher anchors only assignments of the courses they teach; the guided service owns course membership.
    guided_service_url: str = Field(default="http://127.0.0.1:8003", validation_alias="GUIDED_SERVICE_URL")
    guided_api_token: str = Field(default="", validation_alias="GUIDED_API_TOKEN")

    @model_validator(mode="after")
    def _token_outside_dev(self) -> "WritingSettings":
        self.require_outside_dev("WRITING_API_TOKEN", self.service_token)
        self.require_outside_dev("AI_SERVICE_INTERNAL_TOKEN", self.ai_service_internal_token)
        if "{user_id}" not in self.profile_key:
            raise ValueError("WRITING_PROFILE_KEY must contain {user_id}")
        return self
