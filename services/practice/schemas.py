"""Request and response models of the practice service (what its OpenAPI schema documents)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from services.practice.personas import PersonaSummary


class PersonaList(BaseModel):
    object: Literal["list"] = "list"
    data: list[PersonaSummary]


class RoleplayMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["user", "assistant"] = Field(description="`user` = the trainee, `assistant` = the persona.")
    content: str


class RoleplayRequest(BaseModel):
    persona: str = Field(description="A persona id from GET /v1/personas.")
    messages: list[RoleplayMessage] = Field(default_factory=list,
                                            description="The conversation so far; the last one is the trainee's.")
    user_id: str | None = Field(default=None, description="The trainee; defaults to the API key's user.")
    session_id: str | None = Field(default=None, description="Continue this session; omitted = a new session.")
    engine: Literal["rules", "llm"] | None = Field(default=None, description="Per-request engine override.")
    stream: bool = False


class TurnFeedback(BaseModel):
    index: int = Field(description="Which trainee turn (0-based).")
    label: str = Field(description="The intent of the turn (see POST /v1/intents).")
    main: str = Field(description="question | reflection | input | other")
    confidence: float
    tip: str
    needs_work: bool


class Figure(BaseModel):
    value: float | None = Field(description="null when its denominator is zero.")
    level: Literal["good", "basic", "below_basic", "not_computable"]
    basic: float = Field(description="MITI threshold for basic proficiency.")
    good: float = Field(description="MITI threshold for good proficiency (competency).")


class TurnNeedingWork(BaseModel):
    index: int
    text: str
    label: str
    tip: str
    suggested_reply: str


class SessionScores(BaseModel):
    turns: int
    counts: dict[str, int]
    questions: int
    reflections: int
    figures: dict[str, Figure] = Field(description="reflection_to_question_ratio, percent_open_questions, "
                                                   "percent_complex_reflections")
    turn_needing_work: TurnNeedingWork | None


class Feedback(BaseModel):
    turn: TurnFeedback
    session: SessionScores


class Reply(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class RoleplayResponse(BaseModel):
    id: str
    object: Literal["roleplay.reply"] = "roleplay.reply"
    session_id: str
    user_id: str
    persona: str
    reply: Reply
    engine: Literal["rules", "llm"] = Field(description="The engine that produced the reply.")
    engine_assignment: Literal["runtime_override", "request", "ab", "config"] = Field(
        description="Why that engine was chosen (before any fallback).")
    engine_chosen: Literal["rules", "llm"] = Field(description="The engine chosen before any fallback.")
    fallback_reason: str | None = Field(default=None, description="Set when llm was chosen but rules answered.")
    model: str | None = None
    latency_ms: float
    classifier: str = Field(description="The intent model's version.")
    feedback: Feedback


class SessionTurn(BaseModel):
    index: int
    text: str
    label: str
    main: str
    confidence: float


class SessionRecord(BaseModel):
    session_id: str
    user_id: str
    persona: str
    created_at: float
    updated_at: float
    engines: dict[str, int] = Field(description="Replies per engine that served them.")
    fallbacks: int
    turns: list[SessionTurn]
    scores: SessionScores


class SessionList(BaseModel):
    object: Literal["list"] = "list"
    user_id: str
    data: list[SessionRecord]


class IntentItem(BaseModel):
    text: str
    previous: str | None = Field(default=None, description="The other speaker's turn just before (optional).")


class IntentRequest(BaseModel):
    utterances: list[str | IntentItem] = Field(default_factory=list)


class IntentResult(BaseModel):
    text: str
    label: str
    main: str
    confidence: float
    probabilities: dict[str, float] = Field(description="Calibrated probability per label (sums to 1).")
    main_probabilities: dict[str, float] = Field(description="Per main behaviour: the sums of its labels.")


class IntentResponse(BaseModel):
    object: Literal["list"] = "list"
    model: str
    labels: list[str]
    data: list[IntentResult]
