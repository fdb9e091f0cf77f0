"""Request and response models of the feedback service (documented in its OpenAPI schema)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field


class ArenaRequest(BaseModel):
    mode: str = Field("peer", description="The chat mode; also the adapter family unless `family` is set")
    family: str | None = Field(None, description="Adapter family whose versions compete (default: the mode)")
    prompt: str | None = Field(None, description="The user's prompt (or give `messages`)")
    messages: list[dict] | None = Field(None, description="OpenAI chat messages; the last one is the user's")
    max_tokens: int | None = Field(None, ge=1, le=1024)
    models: list[str] | None = Field(None, description="Admins may pin the two served names (\"\" = base model)")


class ArenaAnswer(BaseModel):
    content: str


class ArenaResponse(BaseModel):
    id: str
    mode: str
    prompt: str
    a: ArenaAnswer
    b: ArenaAnswer


class FeedbackRequest(BaseModel):
    vote: Literal["a", "b", "tie", "both_bad", "up", "down"]
    arena_id: str | None = Field(None, description="For a, b, tie, both_bad: the arena round")
    response_id: str | None = Field(None, description="For up/down: the chat completion's id")
    comment: str | None = Field(None, max_length=4000)
    # Optional context for thumbs on an ordinary chat answer (the console sends them).
    mode: str | None = None
    model: str | None = None
    prompt: str | None = Field(None, max_length=20000)
    answer: str | None = Field(None, max_length=20000)


class VoteRecord(BaseModel):
    id: str
    kind: Literal["arena", "thumbs"]
    vote: str
    comment: str | None = None
    arena_id: str | None = None
    response_id: str | None = None
    mode: str | None = None
    family: str | None = None
    prompt: str | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    model_a: str | None = Field(None, description="Revealed once the vote is recorded")
    model_b: str | None = None
    key_id: str
    user_id: str | None = None
    created_at: float


class FeedbackResponse(BaseModel):
    vote: VoteRecord
    duplicate: bool = Field(description="True when this vote was already recorded (a retry): counted once")


class FeedbackList(BaseModel):
    object: Literal["list"] = "list"
    data: list[VoteRecord]


class RatingOut(BaseModel):
    model: str
    rating: float = Field(description="Elo scale: 1000 + 400/ln10 * Bradley-Terry strength")
    ci_low: float
    ci_high: float
    wins: float
    games: int


class ModeBoard(BaseModel):
    mode: str
    votes: int
    ratings: list[RatingOut]


class Leaderboard(BaseModel):
    modes: list[ModeBoard]


class ABSplitIn(BaseModel):
    candidate: str
    control: str | None = Field(None, description="Default: the family's latest loaded version other than the "
                                                  "candidate, or the base model (\"\")")
    percent: float = Field(10, ge=0, le=100)
    family: str | None = None


class ABSplit(BaseModel):
    mode: str
    active: bool
    family: str | None = None
    control: str | None = None
    candidate: str | None = None
    percent: float | None = None
    started_at: str | None = None
    updated_at: str | None = None
    redis_key: str


class AdapterAction(BaseModel):
    name: str
    path: str | None = None


class Me(BaseModel):
    """Who the gateway says the caller is: the API key's id, role, user id and default data classification."""

    model_config = ConfigDict(extra="forbid")  # a field the route adds but this model lacks fails, not vanishes

    key_id: str
    role: Literal["student", "teacher", "admin"]
    user_id: str | None = Field(description="The key's user id; null for a key created without one")
    key_classification: Literal["public", "private"] = Field(
        description="The key's default data classification (private unless the key was created public)")


class ABPromoted(BaseModel):
    """POST /v1/ab/{mode}/promote: the candidate wins, the split ends, the control is unloaded (kept on disk)."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    action: Literal["promote"]
    now_serving: str = Field(description="The adapter that now serves the mode (\"base\": the base model)")
    unloaded: str | None = Field(description="The control adapter unloaded; null when none was loaded")


class ABRolledBack(BaseModel):
    """POST /v1/ab/{mode}/rollback: the candidate (or, without a split, the newest version) is unloaded and
    moved out of the adapters directory."""

    model_config = ConfigDict(extra="forbid")

    mode: str
    action: Literal["rollback"]
    removed: str = Field(description="The adapter rolled back (\"base\": the base model)")
    unloaded: bool = Field(description="Whether it was loaded (and is now unloaded)")
    moved_to: str | None = Field(description="Where its directory was moved; null when it had none")
    now_serving: str = Field(description="The family's newest version still loaded, or \"base\"")


class AdapterRow(BaseModel):
    """One adapter llm_server knows: on disk under LLM_ADAPTERS_DIR and/or loaded in vLLM."""

    model_config = ConfigDict(extra="allow")

    name: str
    family: str
    version: int | None = Field(description="null for a loaded adapter whose name is not <family>-v<N>")
    path: str
    rank: int | None = Field(description="LoRA rank from adapter_config.json; null when only loaded")
    base_model: str | None
    loaded: bool


class AdapterList(BaseModel):
    """llm_server's adapter listing, passed on as it is."""

    model_config = ConfigDict(extra="allow")

    object: Literal["list"] = "list"
    base_model: str = Field(description="The base model's served name")
    adapters_dir: str
    data: list[AdapterRow]
    latest_loaded: dict[str, str] = Field(description="Family -> its newest loaded version")


class AdapterActionResult(BaseModel):
    """llm_server's answer to a load or unload, passed on as it is."""

    model_config = ConfigDict(extra="allow")

    name: str
    path: str | None = Field(None, description="load only: the adapter directory")
    loaded: bool
    changed: bool = Field(description="False when the adapter was already loaded")


ABActionResult = Annotated[ABPromoted | ABRolledBack, Field(discriminator="action")]
