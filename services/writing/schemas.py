"""Request and response models of POST /v1/writing/analyze and the anchor routes (published in the OpenAPI spec;
docs/writing.md).

Spans are [start, end) in Unicode code points of the submitted `content` (Python str indices), so
`content[start:end] == quote` always. `span_utf16` gives the same range in UTF-16 code units (JavaScript string
indices); they differ only when the text has characters outside the Basic Multilingual Plane (e.g. emoji).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

WRITING_TYPES = ("essay", "argumentative", "narrative", "literature_review", "summary", "research_proposal",
                 "expository", "descriptive", "reflection", "letter")


class StudentProfile(BaseModel):
    level: str = Field("", description="e.g. middle_school, high_school, undergraduate, graduate, esl_b1")
    lang: str = Field("", description="the student's language for rationales and feedback: en or zh "
                                      "(default: the language of the content)")


class RubricScale(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min: float
    max: float
    step: float | None = Field(1.0, description="score granularity; null = continuous (one decimal)")


class RubricCriterion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    name: str = Field("", max_length=200)
    description: str = Field("", max_length=2000)
    scale: RubricScale | None = Field(None, description="overrides the rubric's scale for this criterion")
    weight: float = Field(1.0, gt=0)
    maps_to: list[str] | None = Field(None, description="optional explicit mapping onto the scorer's traits "
                                                        "(ideas, organization, evidence, style, language, conventions)")


class Rubric(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = ""
    scale: RubricScale = Field(default_factory=lambda: RubricScale(min=1, max=6))
    criteria: list[RubricCriterion] = Field(..., min_length=1, max_length=20)


class AnalyzeRequest(BaseModel):
    writing_type: str = Field(..., description="one of: " + ", ".join(WRITING_TYPES))
    content: str = Field(..., description="the student's text (UTF-8), at most WRITING_MAX_CONTENT_CHARS characters")
    student_profile: StudentProfile = Field(default_factory=StudentProfile)
    user_id: str | None = Field(None, description="when given, the weakest criteria are written to the learner "
                                                  "profile (docs/learner-profile.md)")
    course_id: str | None = Field(None, description="the course of the learner profile (default: `default`)")
    prompt: str | None = Field(None, description="the assignment text")
    assignment_id: str | None = Field(None, description="identifies the assignment (within the course) for the "
                                                        "scorer's per-assignment calibration; without it the "
                                                        "prompt text's hash is used, and without either none")
    rubric: Rubric | None = Field(None, description="a custom rubric that replaces the built-in one")
    teacher_score: float | None = Field(
        None, strict=True, description="teacher or admin keys only (403 otherwise): the teacher's overall score for this essay, on "
                          "the request's overall scale (the built-in 1-6 or the custom rubric's scale; 422 outside "
                          "it). Needs `assignment_id` or `prompt` (422). The essay is scored as usual; the score "
                          "then anchors the assignment's level for later essays (docs/writing.md, Teacher anchors)")


class Scale(BaseModel):
    min: float
    max: float


class Evidence(BaseModel):
    span: list[int] = Field(..., min_length=2, max_length=2, description="[start, end) code-point offsets")
    span_utf16: list[int] = Field(..., min_length=2, max_length=2, description="[start, end) UTF-16 offsets")
    quote: str = Field(..., description="exactly content[start:end]")


class CriterionScore(BaseModel):
    criterion: str
    name: str
    score: float
    scale: Scale
    normalized: float = Field(..., ge=0, le=1, description="(score - min) / (max - min)")
    rationale: str = Field(..., description="one paragraph, in the student's language")
    evidence: list[Evidence]
    anchored_on: list[str] = Field(..., description="the scorer traits this score comes from")


class OverallScore(BaseModel):
    score: float
    scale: Scale
    normalized: float = Field(..., ge=0, le=1)
    rationale: str


class Issue(BaseModel):
    type: Literal["spelling", "grammar", "punctuation", "repetition", "long_sentence", "style", "content",
                  "organization", "evidence"]
    severity: Literal["low", "medium", "high"]
    span: list[int] = Field(..., min_length=2, max_length=2, description="[start, end) code-point offsets")
    span_utf16: list[int] = Field(..., min_length=2, max_length=2)
    quote: str = Field(..., description="exactly content[start:end]")
    message: str
    suggestion: str
    source: Literal["rules", "pyspellchecker", "llm"]


class SentenceLength(BaseModel):
    mean: float
    stdev: float
    max: int
    unit: Literal["words", "characters"]
    mean_words: float | None = None


class LexicalDiversity(BaseModel):
    mtld: float
    ttr: float
    unique_words: int


class Repetition(BaseModel):
    repeated_words: list[dict]
    repetition_rate: float
    adjacent_repeats: int


class Transitions(BaseModel):
    count: int
    distinct: int
    used: list[dict]


class Citations(BaseModel):
    count: int
    spans: list[list[int]]


class Checker(BaseModel):
    checker: str | None
    errors: int
    rate: float
    note: str | None = None


class Metrics(BaseModel):
    language: Literal["en", "zh"]
    unit: Literal["words", "characters"] = Field(..., description="the length unit: English words, Chinese characters")
    characters: int = Field(..., description="en: all characters; zh: CJK characters")
    words: int = Field(..., description="en: words; zh: jieba words")
    sentences: int
    paragraphs: int
    sentence_length: SentenceLength
    word_length_mean: float
    readability: dict[str, float]
    lexical_diversity: LexicalDiversity
    repetition: Repetition
    transitions: Transitions
    citations: Citations
    spelling: Checker
    grammar: Checker


class Priority(BaseModel):
    criterion: str
    advice: str


class Feedback(BaseModel):
    language: str
    summary: str
    priorities: list[Priority] = Field(..., min_length=1, max_length=3)


class ModelInfo(BaseModel):
    scorer: str
    scorer_cross_prompt_qwk: float | None = None
    calibration: Literal["absolute", "assignment"] = Field(
        "absolute", description="`assignment`: the overall score is calibrated against the running statistics of "
                                "earlier essays of the same assignment; `absolute`: the prompt-free cold-start model")
    assignment_essays: int = Field(0, description="earlier essays of this assignment the calibration used")
    anchors: int = Field(0, description="teacher-scored essays (teacher_score) of this assignment whose offset "
                                        "this score includes (recorded before this request)")
    anchor_offset: float = Field(0.0, description="the shift of the normalised overall score from those anchors: "
                                                  "sum of residuals / (anchors + k0); 0 without anchors")
    anchor_recorded: bool = Field(False, description="true when this request's teacher_score was recorded as an "
                                                     "anchor (false: none given, or Redis unavailable)")
    anchor_replaced: bool = Field(False, description="true when this text had anchored the assignment before: the new "
                                                     "teacher_score replaced the earlier one (a corrected score)")
    anchor_id: str | None = Field(None, description="the recorded anchor's id (the hash of the whitespace-normalised "
                                                   "text) when anchor_recorded; DELETE /v1/writing/anchors/{anchor_id} "
                                                   "removes it; null otherwise")
    llm: str | None = Field(None, description="the LLM that wrote the llm-sourced issues; null when none did")


class AnalyzeResponse(BaseModel):
    id: str
    object: Literal["writing.analysis"] = "writing.analysis"
    writing_type: str
    language: Literal["en", "zh"]
    feedback_language: str
    scores: list[CriterionScore]
    overall: OverallScore
    issues: list[Issue]
    metrics: Metrics
    feedback: Feedback
    model: ModelInfo
    degraded: bool = Field(..., description="true when the LLM part failed or timed out; the rest is complete")
    degraded_reason: str | None = None
    user_id: str | None = None
    profile_updated: bool
    latency_ms: float


class Anchor(BaseModel):
    id: str = Field(..., description="the anchor's id: the hash of the essay's whitespace-normalised text (the "
                                     "analyze response's model.anchor_id); only hashes are stored, never the text")
    object: Literal["writing.anchor"] = "writing.anchor"
    residual: float = Field(..., description="teacher's normalised score - the model's normalised prediction before "
                                             "this anchor (its contribution to the offset: residual / (m + k0))")
    teacher_score: float | None = Field(None, description="the teacher_score given, on the scale of that request; "
                                                          "null for anchors recorded before it was kept")
    recorded_at: str | None = Field(None, description="when it was recorded (or last replaced), ISO 8601 UTC; null "
                                                      "for anchors recorded before times were kept")


class AnchorList(BaseModel):
    object: Literal["list"] = "list"
    course_id: str
    assignment_id: str | None = Field(None, description="as asked; null when the assignment was named by `prompt`")
    assignment: str = Field(..., description="the resolved assignment, `{course_id}:{assignment_id}` or "
                                             "`{course_id}:p-{hash of the prompt}` (as analyze resolves it)")
    m: int = Field(..., description="anchors the next essay's score includes")
    anchor_sum: float = Field(..., description="sum of the anchors' residuals")
    k0: float = Field(..., description="the shrinkage (WRITING_ANCHOR_K0): offset = anchor_sum / (m + k0)")
    anchor_offset: float = Field(..., description="the shift of the next essay's normalised overall score; 0 "
                                                  "without anchors")
    data: list[Anchor] = Field(..., description="the anchors, newest first (those without a time last); empty for "
                                                "an unknown assignment")


class AnchorDeleted(BaseModel):
    object: Literal["writing.anchors.deleted"] = "writing.anchors.deleted"
    deleted: int = Field(..., description="anchors removed (1 for one id; all of them when clearing)")
    ids: list[str] = Field(..., description="the ids removed (for one id: that id)")
    assignment: str
    m: int = Field(..., description="anchors left")
    anchor_offset: float = Field(..., description="the offset the next essay gets with the anchors left")
