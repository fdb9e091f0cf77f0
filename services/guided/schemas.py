"""Request and response models of the guided service (its OpenAPI documents every field)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from common.ids import ID_PATTERN


class GuidedMessage(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str = Field(max_length=8000)


class GuidedChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    topic: str = Field(min_length=1, max_length=2000, description="what the session is about (a task, a problem)")
    messages: list[GuidedMessage] = Field(min_length=1, max_length=60,
                                          description="the conversation so far, the student's latest turn last")
    user_id: str = Field(pattern=ID_PATTERN, description="the learner")
    course_id: str = Field(pattern=ID_PATTERN)
    stream: bool = False
    problem: str | None = Field(default=None, max_length=4000, description="the problem text, when not the topic")
    answer: str | None = Field(default=None, max_length=1000,
                               description="the known final answer (a number, or a target sentence); never revealed "
                                           "before the student produces it")
    solution: str | None = Field(default=None, max_length=8000,
                                 description="a worked solution, never shown whole: hints are drawn from its steps")
    skill: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:\-]{1,80}$",
                              description="the skill practised (default: from the topic)")
    session_id: str | None = Field(default=None, pattern=ID_PATTERN,
                                   description="default: derived from user, course, topic and the first user turn")
    language: Literal["en", "zh"] | None = Field(default=None, description="default: the student's, detected")
    model: str | None = Field(default=None, description="ignored: the guided tutor picks its model")
    metadata: dict[str, Any] | None = None


class LeakGuard(BaseModel):
    checked: bool = Field(description="a known answer was there to protect (and the student has not produced it)")
    regenerated: bool = Field(description="the model's first text leaked and was regenerated with a stricter prompt")
    replaced: bool = Field(description="the model's text was replaced by the template")


class Guidance(BaseModel):
    move: Literal["diagnose", "ask", "hint", "worked_example", "check_understanding", "summarise"]
    hint_level: int = Field(description="1-3 for a hint, else 0")
    skill: str
    mastery_before: float
    mastery_after: float
    evaluation: str = Field(description="the student's turn: correct, wrong, demand, stuck, understood, question, "
                                        "attempt")
    reason: str = Field(description="why the policy chose this move")
    session_id: str
    turn: int = Field(description="student turns handled in this session, this one included")
    language: Literal["en", "zh"]
    phrased_by: Literal["llm", "template"]
    leak_guard: LeakGuard
    answer_known: bool
    focus: dict[str, Any] | None = Field(default=None, description="the weak point this session works on, if any")
    notes: list[str] = Field(default_factory=list)


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class GuidedChatResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    guidance: Guidance


class SkillState(BaseModel):
    model_config = ConfigDict(extra="allow")

    mastery: float
    attempts: int = 0
    correct: int = 0
    updated_at: str | None = None
    source: str = Field(default="prior", description="prior | bkt | teacher")
    history: list[dict[str, Any]] = Field(default_factory=list)


class LearnerProfile(BaseModel):
    model_config = ConfigDict(extra="allow")

    user_id: str
    course_id: str
    exists: bool = True
    created_at: str | None = None
    updated_at: str | None = None
    skills: dict[str, SkillState] = Field(default_factory=dict)
    weak_points: list[dict[str, Any]] = Field(default_factory=list)
    recent_topics: list[dict[str, Any]] = Field(default_factory=list)
    writing_weak_points: list[dict[str, Any]] = Field(default_factory=list,
                                                      description="read from the writing analysis' record")


class LearnerProfileList(BaseModel):
    object: Literal["list"] = "list"
    user_id: str
    data: list[LearnerProfile]


class SkillCorrection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mastery: float = Field(ge=0, le=1)
    note: str | None = Field(default=None, max_length=500)


class LearnerPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    course_id: str = Field(pattern=ID_PATTERN)
    skills: dict[str, SkillCorrection] = Field(default_factory=dict, max_length=50)
    resolve_weak_points: list[str] = Field(default_factory=list, max_length=50,
                                           description="skills whose open weak points the teacher marks resolved")


class CourseTeachers(BaseModel):
    model_config = ConfigDict(extra="forbid")

    teachers: list[str] = Field(max_length=200)
