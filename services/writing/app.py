"""The writing analysis service (port 8004).

Route (needs WRITING_API_TOKEN; ai_service forwards it from the gateway):
  POST /v1/writing/analyze   rubric scores (calibrated scorer), metrics, issues with exact spans, feedback;
                             a teacher/admin key may add `teacher_score` to anchor the assignment's level
  GET    /v1/writing/anchors               an assignment's teacher anchors, m and the offset (teacher of the course
  DELETE /v1/writing/anchors/{anchor_id}   or admin): list, remove one, remove all (the essays' statistics stay)
  DELETE /v1/writing/anchors
"""

from __future__ import annotations

import time
import uuid
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from common.app import create_service_app
from common.auth import Caller, require_service_token, service_headers
from common.courses import require_course_teacher
from common.errors import OpenAIError
from common.http import make_client
from common.logging import get_logger
from services.writing.analysis import (analyse_request, assignment_key, check_ids, content_hash, issue_dict,
                                       parse_request, public_scores, resolve_assignment, teacher_normalised)
from services.writing.llm import LlmFailed, LlmReviewer
from services.writing.rubric import SKILLS
from services.writing.schemas import Anchor, AnchorDeleted, AnchorList, AnalyzeRequest, AnalyzeResponse
from services.writing.scorer import FEATURES, Scorer, anchor_offset
from services.writing.settings import WritingSettings
from services.writing.store import AssignmentStatsStore, ProfileStore, now_iso

log = get_logger("writing")
router = APIRouter(prefix="/v1", dependencies=[Depends(require_service_token)])
ERROR_RESPONSES = {code: {"description": text} for code, text in {
    400: "empty, whitespace-only, binary or undecodable content; unknown writing_type (lists the valid ones)",
    413: "content over WRITING_MAX_CONTENT_CHARS characters or body over WRITING_MAX_BODY_BYTES",
    422: "malformed rubric (says what is wrong); teacher_score without assignment_id/prompt or outside the scale",
    403: "a student key acting for another user_id; teacher_score from a key that is not an admin or a teacher of "
         "the course", 503: "teacher_score given and the guided service (course membership) unreachable"}.items()}


class Writing:
    def __init__(self, settings: WritingSettings, metrics):
        self.settings = settings
        self.scorer = Scorer(settings.scorer_path)
        self.store = ProfileStore.from_url(settings.redis_url, settings.profile_key)
        self.assignments = AssignmentStatsStore(self.store.redis, ttl_sec=settings.assignment_stats_ttl_days * 86400)
        self.ai_client = make_client(settings.ai_service_url, settings.llm_budget_sec + 2)
        self.llm = LlmReviewer(self.ai_client, budget_sec=settings.llm_budget_sec, max_tokens=settings.llm_max_tokens,
                               attempts=settings.llm_attempts, model=settings.llm_model)
        self.analyses = metrics.counter("writing_analyses_total", "Analyses by outcome", ["service", "outcome"])
        self.seconds = metrics.histogram("writing_analysis_seconds", "Analysis latency", ["service", "part"])
        self.llm_dropped = metrics.counter("writing_llm_items_dropped_total", "LLM items dropped (quote not in text)",
                                           ["service"])

    async def aclose(self) -> None:
        await self.ai_client.aclose()
        await self.store.aclose()


def writing(request: Request) -> Writing:
    return request.app.state.writing


def _learner(caller: Caller, user_id: str | None) -> str | None:
    """A student key may only write its own profile; staff and service keys may name any learner."""
    if user_id and caller.user_id and not caller.is_staff and user_id != caller.user_id:
        raise OpenAIError(403, "A student key can only analyse for its own user_id.", code="user_mismatch",
                          param="user_id")
    return user_id


@router.post("/writing/analyze", response_model=AnalyzeResponse, responses=ERROR_RESPONSES,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {
                 "schema": {"$ref": "#/components/schemas/AnalyzeRequest"}}}}})
async def analyze(request: Request, caller: Caller = Depends(require_service_token),
                  w: Writing = Depends(writing)) -> AnalyzeResponse:
    started = time.perf_counter()
    body = parse_request(await request.body(), max_body_bytes=w.settings.max_body_bytes,
                         max_chars=w.settings.max_content_chars)
    user_id = _learner(caller, body.user_id)
    if body.teacher_score is not None and not caller.is_staff:
        raise OpenAIError(403, "Only a teacher or admin key may give `teacher_score`.", code="teacher_role_required",
                          param="teacher_score")
    teacher = teacher_normalised(body)  # 422 without an assignment or outside the scale
    if teacher is not None:
        await require_course_teacher(w.settings.guided_service_url, w.settings.guided_api_token, caller,
                                     body.course_id or "default", "anchor its assignments with teacher_score")
    assignment = assignment_key(body) if w.settings.assignment_calibration else None
    stats, anchors_m, anchors_sum = None, 0, 0.0
    if assignment:
        try:
            stats, anchors_m, anchors_sum = await w.assignments.get_all(assignment, len(FEATURES))
        except Exception as exc:  # calibration is an improvement, never a reason to fail the analysis
            log.warning("assignment stats unavailable", extra={"error": repr(exc)})
            assignment, anchors_m, anchors_sum = None, 0, 0.0
    offset = anchor_offset(anchors_m, anchors_sum, w.settings.anchor_k0)
    det = await run_in_threadpool(analyse_request, body, w.scorer, stats, offset)
    anchor_recorded = anchor_replaced = False
    text_hash = content_hash(body.content)
    if assignment and teacher is not None:
        # The residual is taken from the prediction made before this anchor, without the earlier anchors' offset:
        # the offset estimates the mean of teacher - model over the assignment's anchors.
        try:
            outcome = await w.assignments.add_anchor(assignment, text_hash, teacher - det.prediction.unanchored,
                                                     teacher_score=body.teacher_score)
            anchor_recorded, anchor_replaced = True, outcome == "replaced"
        except Exception as exc:
            log.warning("teacher anchor not recorded", extra={"error": repr(exc)})
    if assignment:
        try:
            await w.assignments.add(assignment, text_hash, det.features)
        except Exception as exc:
            log.warning("assignment stats not updated", extra={"error": repr(exc)})
    w.seconds.labels("writing", "deterministic").observe(time.perf_counter() - started)
    content = body.content
    issues = list(det.issues)
    degraded, reason, llm_model, llm_added, llm_dropped = False, None, None, 0, 0
    if w.settings.llm_enabled:
        llm_started = time.perf_counter()
        try:
            result = await w.llm.review(content, writing_type=body.writing_type, lang=det.feedback_language,
                                        weakest=[s["name"] for s in det.weakest], assignment=body.prompt,
                                        headers=service_headers(w.settings.ai_service_internal_token, caller))
            taken = {(i.start, i.end) for i in issues}
            added = [i for i in result.issues if (i.start, i.end) not in taken]
            issues += added
            llm_added, llm_dropped = len(added), result.dropped
            llm_model = result.model
            if result.dropped:
                w.llm_dropped.labels("writing").inc(result.dropped)
        except LlmFailed as exc:
            degraded, reason = True, exc.reason
        w.seconds.labels("writing", "llm").observe(time.perf_counter() - llm_started)
    else:
        degraded, reason = True, "LLM disabled (WRITING_LLM_ENABLED=false)"
    issues.sort(key=lambda i: (i.start, i.end))
    analysis_id = f"wa-{uuid.uuid4().hex[:20]}"
    profile_updated = False
    if user_id:
        at = now_iso()
        weak = [{"skill": SKILLS.get(s["_target"], "thesis"), "criterion": s["criterion"],
                 "description": f"{s['name']}: {s['score']:g}/{s['scale']['max']:g}"[:200], "score": s["score"],
                 "scale": s["scale"], "normalized": s["normalized"],
                 "evidence": [{"span": e["span"], "quote": e["quote"]} for e in s["evidence"]],
                 "writing_type": body.writing_type, "analysis_id": analysis_id, "source": "writing", "at": at}
                for s in det.weakest]
        summary = {"analysis_id": analysis_id, "at": at, "writing_type": body.writing_type,
                   "overall": det.overall["normalized"], "weakest": [s["criterion"] for s in det.weakest]}
        await w.store.record(user_id, body.course_id or "default", weak,
                             {s["criterion"]: s["normalized"] for s in det.scores}, summary)
        profile_updated = True
    info = w.scorer.info
    response = AnalyzeResponse(
        id=analysis_id, writing_type=body.writing_type, language=det.language, feedback_language=det.feedback_language,
        scores=public_scores(det.scores), overall=det.overall, issues=[issue_dict(content, i) for i in issues],
        metrics=det.analysis.metrics, feedback=det.feedback,
        model={"scorer": w.scorer.version, "scorer_cross_prompt_qwk": info.get("cross_prompt_qwk_mean"),
               "llm": llm_model, "calibration": det.prediction.calibration,
               "assignment_essays": det.prediction.essays_seen, "anchors": anchors_m,
               "anchor_offset": round(offset, 4), "anchor_recorded": anchor_recorded,
               "anchor_replaced": anchor_replaced, "anchor_id": text_hash if anchor_recorded else None},
        degraded=degraded, degraded_reason=reason, user_id=user_id, profile_updated=profile_updated,
        latency_ms=round((time.perf_counter() - started) * 1000, 1))
    w.analyses.labels("writing", "degraded" if degraded else "ok").inc()
    log.info("writing analysis", extra={"writing_type": body.writing_type, "language": det.language,
                                        "degraded": degraded, "reason": reason, "issues": len(issues),
                                        "llm_issues": llm_added, "llm_dropped": llm_dropped,
                                        "profile_updated": profile_updated, "calibration": det.prediction.calibration,
                                        "assignment_essays": det.prediction.essays_seen,
                                        "anchors": anchors_m, "anchor_recorded": anchor_recorded,
                                        "anchor_replaced": anchor_replaced,
                                        "latency_ms": response.latency_ms})
    return response


ANCHOR_ERRORS = {code: {"description": text} for code, text in {
    400: "course_id or assignment_id outside letters, digits and _ . @ - (at most 128)",
    403: "a student key (teacher_role_required) or a teacher of another course (forbidden)",
    404: "DELETE of an id that is not an anchor of the assignment (anchor_not_found); nothing changed",
    422: "neither assignment_id nor prompt (assignment_required)",
    503: "Redis (anchors_unavailable) or the guided service, which owns course membership (courses_unavailable), "
         "unreachable"}.items()}
COURSE_QUERY = Query(None, description="the course (default `default`)")
ASSIGNMENT_QUERY = Query(None, description="the assignment, as given to analyze")
PROMPT_QUERY = Query(None, description="instead of assignment_id: the assignment text, resolved as analyze does")


@dataclass(frozen=True)
class AnchoredAssignment:
    """An assignment whose anchors the caller may see and change, and the store that holds them."""
    course_id: str
    assignment_id: str | None
    assignment: str
    store: AssignmentStatsStore
    k0: float
    caller: Caller


def anchored_assignment(action: str):
    """A dependency with the same rules as recording an anchor: a teacher of the course or an admin, the assignment
    resolved as analyze resolves it (resolve_assignment)."""
    async def dependency(course_id: str | None = COURSE_QUERY, assignment_id: str | None = ASSIGNMENT_QUERY,
                         prompt: str | None = PROMPT_QUERY, caller: Caller = Depends(require_service_token),
                         w: Writing = Depends(writing)) -> AnchoredAssignment:
        if not caller.is_staff:
            raise OpenAIError(403, f"Only a teacher or admin key may {action}.", code="teacher_role_required")
        check_ids(course_id=course_id, assignment_id=assignment_id)
        assignment = resolve_assignment(course_id, assignment_id, prompt)
        if assignment is None:
            raise OpenAIError(422, "Name the assignment: give `assignment_id` (or `prompt`).",
                              code="assignment_required", param="assignment_id")
        await require_course_teacher(w.settings.guided_service_url, w.settings.guided_api_token, caller,
                                     course_id or "default", action)
        return AnchoredAssignment(course_id or "default", assignment_id, assignment, w.assignments,
                                  w.settings.anchor_k0, caller)
    return dependency


@contextmanager
def anchors_redis():
    """A Redis failure while reading or changing anchors is a 503, not a 500."""
    try:
        yield
    except RedisError as exc:
        log.warning("teacher anchors unavailable", extra={"error": repr(exc)})
        raise OpenAIError(503, "Teacher anchors cannot be read or changed: Redis is unavailable.",
                          code="anchors_unavailable") from exc


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@router.get("/writing/anchors", response_model=AnchorList, responses=ANCHOR_ERRORS)
async def list_anchors(a: AnchoredAssignment = Depends(anchored_assignment("see its teacher anchors"))) -> AnchorList:
    """The assignment's teacher anchors, m and the offset the next essay gets (an unknown assignment: none)."""
    with anchors_redis():
        m, total, anchors = await a.store.list_anchors(a.assignment)
    return AnchorList(course_id=a.course_id, assignment_id=a.assignment_id, assignment=a.assignment, m=m,
                      anchor_sum=total, k0=a.k0, anchor_offset=round(anchor_offset(m, total, a.k0), 4),
                      data=[Anchor(id=x["id"], residual=x["residual"], teacher_score=x["teacher_score"],
                                   recorded_at=_iso(x["recorded_at"])) for x in anchors])


@router.delete("/writing/anchors/{anchor_id}", response_model=AnchorDeleted, responses=ANCHOR_ERRORS)
async def delete_anchor(anchor_id: str,
                        a: AnchoredAssignment = Depends(anchored_assignment("remove its teacher anchors"))
                        ) -> AnchorDeleted:
    """Removes one anchor (m and the residuals' sum adjusted atomically); 404 when it is not one of the assignment's."""
    with anchors_redis():
        found, m, total = await a.store.delete_anchor(a.assignment, anchor_id)
    if not found:
        raise OpenAIError(404, f"No teacher anchor {anchor_id!r} in assignment {a.assignment!r}.",
                          code="anchor_not_found", param="anchor_id")
    log.info("teacher anchor deleted", extra={"assignment": a.assignment, "anchor_id": anchor_id, "anchors": m,
                                              "by_user": a.caller.user_id, "by_key": a.caller.key_id})
    return AnchorDeleted(deleted=1, ids=[anchor_id], assignment=a.assignment, m=m,
                         anchor_offset=round(anchor_offset(m, total, a.k0), 4))


@router.delete("/writing/anchors", response_model=AnchorDeleted, responses=ANCHOR_ERRORS)
async def clear_anchors(a: AnchoredAssignment = Depends(anchored_assignment("remove its teacher anchors"))
                        ) -> AnchorDeleted:
    """Removes all of the assignment's anchors; the running statistics of its essays stay."""
    with anchors_redis():
        ids = await a.store.clear_anchors(a.assignment)
    log.info("teacher anchors cleared", extra={"assignment": a.assignment, "deleted": len(ids),
                                               "by_user": a.caller.user_id, "by_key": a.caller.key_id})
    return AnchorDeleted(deleted=len(ids), ids=ids, assignment=a.assignment, m=0, anchor_offset=0.0)


def create_app(settings: WritingSettings | None = None) -> FastAPI:
    settings = settings or WritingSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Warm up jieba, the spell checker and the trees so the first request is not slow.
        await run_in_threadpool(analyse_request, AnalyzeRequest(writing_type="essay", content="Warm up text. 热身。"),
                                app.state.writing.scorer)
        await run_in_threadpool(analyse_request, AnalyzeRequest(writing_type="essay", content="预热中文文本。"),
                                app.state.writing.scorer)
        yield
        await app.state.writing.aclose()

    async def redis_ready():
        await app.state.writing.store.ping()

    async def scorer_ready():
        app.state.writing.scorer.version  # loaded at construction

    async def ai_service_ready():
        response = await app.state.writing.ai_client.get("/healthz", timeout=2.0)
        response.raise_for_status()

    app = create_service_app("writing", settings, lifespan=lifespan,
                             readiness={"redis": redis_ready, "scorer": scorer_ready},
                             optional_readiness={"ai_service": ai_service_ready})
    app.state.writing = Writing(settings, app.state.metrics)
    app.include_router(router)

    original_openapi = app.openapi

    def openapi():
        if app.openapi_schema:
            return app.openapi_schema
        schema = original_openapi()
        schema.setdefault("components", {}).setdefault("schemas", {}).update(
            {k: v for k, v in AnalyzeRequest.model_json_schema(ref_template="#/components/schemas/{model}")
             .get("$defs", {}).items()})
        schema["components"]["schemas"]["AnalyzeRequest"] = {
            k: v for k, v in AnalyzeRequest.model_json_schema(ref_template="#/components/schemas/{model}").items()
            if k != "$defs"}
        return schema

    app.openapi = openapi
    return app
