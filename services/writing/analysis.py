"""Request validation and the deterministic analysis (no FastAPI here): metrics, rule issues, calibrated scores,
evidence, templated rationales and feedback. The LLM part is merged in by the app."""

from __future__ import annotations

import hashlib
import json
import math
import unicodedata
from dataclasses import dataclass, field

from pydantic import ValidationError

from common.errors import OpenAIError
from common.ids import ID_RE
from services.writing import rubric as R
from services.writing.metrics import Analysis, Issue, analyse, detect_language
from services.writing.schemas import WRITING_TYPES, AnalyzeRequest, Rubric
from services.writing.scorer import AssignmentStats, Prediction, Scorer, to_scale


def utf16_offset(text: str, index: int) -> int:
    return index + sum(1 for ch in text[:index] if ord(ch) > 0xFFFF)


def span_fields(text: str, start: int, end: int) -> dict:
    return {"span": [start, end], "span_utf16": [utf16_offset(text, start), utf16_offset(text, end)],
            "quote": text[start:end]}


def _binary(text: str) -> bool:
    if "\x00" in text or "\ufffd" in text:
        return True
    controls = sum(1 for ch in text if unicodedata.category(ch) == "Cc" and ch not in "\n\r\t")
    return controls > 0


def parse_request(body: bytes, *, max_body_bytes: int, max_chars: int) -> AnalyzeRequest:
    """Bytes -> a validated request, or the documented error (400/413/422)."""
    if len(body) > max_body_bytes:
        raise OpenAIError(413, f"Request body is larger than {max_body_bytes} bytes.", code="request_too_large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise OpenAIError(400, f"The request body is not valid UTF-8 (byte {exc.start}).", code="invalid_encoding") from exc
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise OpenAIError(400, f"The request body is not valid JSON: {exc}.", code="invalid_json") from exc
    if not isinstance(data, dict):
        raise OpenAIError(400, "The request body must be a JSON object.", code="invalid_request")
    content = data.get("content")
    if not isinstance(content, str):
        raise OpenAIError(400, "`content` is required and must be a string (UTF-8 text).", code="invalid_content",
                          param="content")
    if not content.strip():
        raise OpenAIError(400, "`content` is empty or only whitespace.", code="empty_content", param="content")
    if len(content) > max_chars:
        raise OpenAIError(413, f"`content` has {len(content)} characters; the limit is {max_chars}.",
                          code="content_too_large", param="content")
    if _binary(content):
        raise OpenAIError(400, "`content` looks like binary or undecodable data (NUL, control or replacement "
                               "characters); send the text as UTF-8.", code="binary_content", param="content")
    writing_type = data.get("writing_type")
    if writing_type not in WRITING_TYPES:
        raise OpenAIError(400, f"Unknown writing_type {writing_type!r}; valid types: {', '.join(WRITING_TYPES)}.",
                          code="invalid_writing_type", param="writing_type")
    rubric = data.get("rubric")
    if rubric is not None:
        try:
            parsed = Rubric.model_validate(rubric)
        except ValidationError as exc:
            problems = "; ".join(f"rubric.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
            raise OpenAIError(422, f"Malformed rubric: {problems}.", code="invalid_rubric", param="rubric") from exc
        _check_rubric(parsed)
    try:
        request = AnalyzeRequest.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()[:5])
        raise OpenAIError(400, f"Invalid request: {problems}.", code="invalid_request") from exc
    check_ids(user_id=request.user_id, course_id=request.course_id, assignment_id=request.assignment_id)
    return request


def check_ids(**values: str | None) -> None:
    """400 for an id (user_id, course_id, assignment_id) outside ID_RE; None passes."""
    for name, value in values.items():
        if value is not None and not ID_RE.match(value):
            raise OpenAIError(400, f"`{name}` may only use letters, digits and _ . @ - (at most 128).",
                              code=f"invalid_{name}", param=name)


def _check_rubric(rubric: Rubric) -> None:
    ids = [c.id for c in rubric.criteria]
    if len(set(ids)) != len(ids):
        raise OpenAIError(422, "Malformed rubric: criterion ids must be unique.", code="invalid_rubric",
                          param="rubric.criteria")
    for where, scale in [("rubric.scale", rubric.scale)] + [(f"rubric.criteria.{i}.scale", c.scale)
                                                            for i, c in enumerate(rubric.criteria) if c.scale]:
        if not scale.max > scale.min:
            raise OpenAIError(422, f"Malformed rubric: {where}.max must be greater than min.", code="invalid_rubric",
                              param=where)
        if scale.step is not None and (scale.step <= 0 or scale.step > scale.max - scale.min):
            raise OpenAIError(422, f"Malformed rubric: {where}.step must be > 0 and at most max - min.",
                              code="invalid_rubric", param=where)
    for i, c in enumerate(rubric.criteria):
        bad = [m for m in c.maps_to or [] if m not in R.VALID_TARGETS]
        if bad:
            raise OpenAIError(422, f"Malformed rubric: rubric.criteria.{i}.maps_to has unknown targets {bad}; valid: "
                                   f"{', '.join(R.VALID_TARGETS)}.", code="invalid_rubric", param=f"rubric.criteria.{i}")


@dataclass
class Deterministic:
    language: str
    feedback_language: str
    analysis: Analysis
    scores: list[dict]
    overall: dict
    issues: list[Issue]
    feedback: dict
    weakest: list[dict]
    features: object = None  # the scorer's feature vector (added to the assignment's running statistics)
    prediction: Prediction | None = field(default=None)


def assignment_key(request: AnalyzeRequest) -> str | None:
    """The assignment an essay belongs to, for the scorer's per-assignment calibration (resolve_assignment)."""
    return resolve_assignment(request.course_id, request.assignment_id, request.prompt)


def resolve_assignment(course_id: str | None, assignment_id: str | None, prompt: str | None) -> str | None:
    """The one rule (analyze and the anchor routes): the course (default `default`) plus `assignment_id`, else a
    hash of the whitespace-normalised, lower-cased prompt text, else None (no assignment)."""
    course = course_id or "default"
    if assignment_id:
        return f"{course}:{assignment_id}"
    if prompt and prompt.strip():
        digest = hashlib.sha256(" ".join(prompt.split()).lower().encode("utf-8")).hexdigest()[:20]
        return f"{course}:p-{digest}"
    return None


def overall_scale(request: AnalyzeRequest) -> tuple[float, float, float | None]:
    """The request's overall scale (min, max, step): the custom rubric's, else the built-in one."""
    if request.rubric:
        scale = request.rubric.scale
        return float(scale.min), float(scale.max), scale.step
    return float(R.BUILTIN_SCALE[0]), float(R.BUILTIN_SCALE[1]), 1.0


def teacher_normalised(request: AnalyzeRequest) -> float | None:
    """The request's teacher_score normalised to [0, 1] over its overall scale; None when not given; 422 when it
    has no assignment (assignment_id or prompt) or lies outside the scale. Call after the caller's role check."""
    score = request.teacher_score
    if score is None:
        return None
    if assignment_key(request) is None:
        raise OpenAIError(422, "`teacher_score` needs the essay's assignment: give `assignment_id` (or `prompt`).",
                          code="assignment_required", param="assignment_id")
    lo, hi, _step = overall_scale(request)
    if not math.isfinite(score) or not lo <= score <= hi:
        raise OpenAIError(422, f"`teacher_score` must be a number on the overall scale [{lo:g}, {hi:g}].",
                          code="teacher_score_out_of_scale", param="teacher_score")
    return (score - lo) / (hi - lo)


def content_hash(content: str) -> str:
    return hashlib.sha256(" ".join(content.split()).encode("utf-8")).hexdigest()[:24]


def scale_points(lo: float, hi: float, step: float | None) -> float:
    return (hi - lo) / step if step else (hi - lo) * 10


def feedback_language(request: AnalyzeRequest, content_language: str) -> str:
    lang = (request.student_profile.lang or "").lower()
    if lang.startswith("zh") or lang in ("cn", "chinese"):
        return "zh"
    if lang.startswith("en"):
        return "en"
    return content_language


def analyse_request(request: AnalyzeRequest, scorer: Scorer, stats: AssignmentStats | None = None,
                    anchor_offset: float = 0.0) -> Deterministic:
    """`stats`: running feature statistics of earlier essays of the same assignment (None: unknown assignment);
    `anchor_offset`: the assignment's teacher-anchor shift of the normalised score (scorer.anchor_offset)."""
    content = request.content
    language = detect_language(content)
    lang = feedback_language(request, language)
    a = analyse(content, language)
    lo_default, hi_default, step = overall_scale(request)
    x = scorer.features(content, a)
    prediction = scorer.predict_vector(x, stats, scale_points(lo_default, hi_default, step), anchor_offset)
    issue_spans: dict[str, list[tuple[int, int]]] = {}
    for issue in a.issues:
        issue_spans.setdefault(issue.type, []).append((issue.start, issue.end))
    if request.rubric:
        criteria = [(c.id, c.name or c.id, R.map_criterion(c.id, c.name, c.description, c.maps_to),
                     c.scale or request.rubric.scale, True) for c in request.rubric.criteria]
    else:
        from services.writing.schemas import RubricScale

        scale = RubricScale(min=lo_default, max=hi_default, step=1)
        criteria = [(c["id"], c["name"][lang], (c["id"],), scale, False) for c in R.BUILTIN]
    scores = []
    for cid, name, targets, scale, custom in criteria:
        value, anchors = R.criterion_value(targets, prediction.traits, prediction.holistic)
        score = to_scale(value, scale.min, scale.max, scale.step)
        normalized = (score - scale.min) / (scale.max - scale.min)
        base = targets[0]
        evidence = [span_fields(content, s, e) for s, e in R.evidence_for(base, a, content, issue_spans)]
        scores.append({"criterion": cid, "name": name, "score": score, "scale": {"min": scale.min, "max": scale.max},
                       "normalized": round(min(1.0, max(0.0, normalized)), 4),
                       "rationale": R.rationale(base, name, value, a, lang, custom), "evidence": evidence,
                       "anchored_on": anchors, "_target": base, "_value": value})
    ranked = sorted(scores, key=lambda s: (s["_value"], s["criterion"]))
    weakest = [s for i, s in enumerate(ranked) if i < 2 or s["_value"] < 0.5][:3]
    overall_score = to_scale(prediction.holistic, lo_default, hi_default, step)
    overall = {"score": overall_score, "scale": {"min": lo_default, "max": hi_default},
               "normalized": round((overall_score - lo_default) / (hi_default - lo_default), 4),
               "rationale": R.overall_rationale(prediction.holistic, [s["name"] for s in weakest], lang)}
    priorities = [{"criterion": s["criterion"], "advice": R.advice(s["_target"], lang)} for s in weakest]
    fb_summary = _summary(overall, weakest, a, lang)
    return Deterministic(language=language, feedback_language=lang, analysis=a, scores=scores, overall=overall,
                         issues=list(a.issues), feedback={"language": lang, "summary": fb_summary,
                                                          "priorities": priorities}, weakest=weakest,
                         features=x, prediction=prediction)


def _summary(overall: dict, weakest: list[dict], a: Analysis, lang: str) -> str:
    m = a.metrics
    n_issues = len(a.issues)
    names = [s["name"] for s in weakest]
    if lang == "zh":
        length = f"{m['characters']} 字" if m["unit"] == "characters" else f"{m['words']} 词"
        return (f"总分 {overall['score']:g}/{overall['scale']['max']:g}（{length}，{m['sentences']} 句）。"
                f"优先改进：{'、'.join(names)}。共标出 {n_issues} 处具体问题，见 issues。")
    length = f"{m['words']} words" if m["unit"] == "words" else f"{m['characters']} characters"
    return (f"Overall {overall['score']:g}/{overall['scale']['max']:g} ({length}, {m['sentences']} sentences). "
            f"Work on these first: {', '.join(names)}. {n_issues} specific issue(s) are marked in the text.")


def issue_dict(content: str, issue: Issue) -> dict:
    d = issue.as_dict(content)
    d.update(span_fields(content, issue.start, issue.end))
    return d


def public_scores(scores: list[dict]) -> list[dict]:
    return [{k: v for k, v in s.items() if not k.startswith("_")} for s in scores]
