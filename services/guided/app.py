"""The guided-learning service (port 8003): POST /v1/chat/guided, GET|PATCH /v1/learners/{user_id},
GET|PUT /v1/courses/{course_id}/teachers. Thin routes; the logic is in tutor.py, policy.py, store.py."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, StreamingResponse
from redis.exceptions import RedisError

from common.app import create_service_app
from common.auth import Caller, require_service_token
from common.errors import OpenAIError, error_body_for_status
from common.ids import ID_PATTERN, ID_RE
from common.logging import get_logger
from services.guided.access import can_correct_profile, can_read_profile, can_run_session
from services.guided.llm import LLMClient
from services.guided.schemas import (AssistantMessage, Choice, CourseTeachers, Guidance,
                                     GuidedChatRequest, GuidedChatResponse, LeakGuard, LearnerPatch,
                                     LearnerProfile, LearnerProfileList)
from services.guided.settings import GuidedSettings
from services.guided.store import LearnerStore, empty_profile, now_iso, skill_entry
from services.guided.tutor import GuidedTutor, TurnInput, TurnResult
from services.guided.weak_points import writing_profile_courses, writing_weak_points

log = get_logger("guided.app")
router = APIRouter(prefix="/v1")
MODEL_NAME = "tutorstack-guided"


def store_of(request: Request) -> LearnerStore:
    return request.app.state.store


def _check_id(value: str, param: str) -> str:
    if not ID_RE.match(value):
        raise OpenAIError(400, f"{param} must match {ID_PATTERN}.", param=param, code="invalid_id")
    return value


def _forbidden(message: str) -> OpenAIError:
    return OpenAIError(403, message, code="forbidden")


def guidance_of(result: TurnResult) -> Guidance:
    phrased = result.phrased
    return Guidance(move=result.decision.move, hint_level=result.decision.hint_level, skill=result.skill,
                    mastery_before=result.mastery_before, mastery_after=result.mastery_after,
                    evaluation=result.evaluation.kind, reason=result.decision.reason, session_id=result.session_id,
                    turn=result.turn, language=result.language, phrased_by=phrased.phrased_by,
                    leak_guard=LeakGuard(checked=phrased.leak_checked, regenerated=phrased.regenerated,
                                         replaced=phrased.replaced),
                    answer_known=result.answer_known, focus=result.focus, notes=phrased.notes)


def _sse(data: dict | str) -> str:
    return f"data: {data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)}\n\n"


def stream_reply(completion_id: str, created: int, text: str, guidance: Guidance, chunk_chars: int = 24):
    """The checked text as OpenAI chat.completion.chunk events; the last chunk carries `guidance`."""
    base = {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": MODEL_NAME}

    async def events():
        yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""},
                                         "finish_reason": None}]})
        for start in range(0, len(text), chunk_chars):
            yield _sse({**base, "choices": [{"index": 0, "delta": {"content": text[start:start + chunk_chars]},
                                             "finish_reason": None}]})
        yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                    "guidance": guidance.model_dump()})
        yield _sse("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream", headers={"cache-control": "no-cache"})


@router.post("/chat/guided", response_model=GuidedChatResponse)
async def chat_guided(body: GuidedChatRequest, request: Request, caller: Caller = Depends(require_service_token)):
    store = store_of(request)
    if not can_run_session(caller, body.user_id, await store.teachers(body.course_id)):
        raise _forbidden("This key may not run a guided session for that learner.")
    if not any(m.role == "user" and m.content.strip() for m in body.messages):
        raise OpenAIError(400, "messages must contain a user turn.", param="messages", code="no_user_turn")
    inp = TurnInput(topic=body.topic, messages=[m.model_dump() for m in body.messages if m.role != "system"],
                    user_id=body.user_id, course_id=body.course_id, problem=body.problem or "", answer=body.answer,
                    solution=body.solution or "", skill=body.skill, session_id=body.session_id,
                    language=body.language)
    result = await request.app.state.tutor.turn(inp, caller)
    guidance = guidance_of(result)
    request.app.state.moves.labels(result.decision.label, result.phrased.phrased_by).inc()
    completion_id, created = f"chatcmpl-guided-{uuid.uuid4().hex[:20]}", int(time.time())
    headers = {"x-tutorstack-guided-move": result.decision.label, "x-tutorstack-data-classification": "private"}
    if body.stream:
        response = stream_reply(completion_id, created, result.reply, guidance)
        response.headers.update(headers)
        return response
    payload = GuidedChatResponse(id=completion_id, created=created, model=MODEL_NAME,
                                 choices=[Choice(message=AssistantMessage(content=result.reply))], guidance=guidance)
    return JSONResponse(payload.model_dump(), headers=headers)


async def _profile(store: LearnerStore, settings: GuidedSettings, user_id: str, course_id: str) -> LearnerProfile:
    profile = await store.get_profile(user_id, course_id)
    exists = profile is not None
    profile = profile or empty_profile(user_id, course_id)
    writing = await writing_weak_points(store, settings.writing_profile_key, user_id, course_id)
    return LearnerProfile(**{**profile, "exists": exists, "writing_weak_points": writing})


@router.get("/learners/{user_id}", response_model=LearnerProfile | LearnerProfileList)
async def get_learner(user_id: str, request: Request, course_id: str | None = Query(default=None),
                      caller: Caller = Depends(require_service_token)):
    """One course's profile (?course_id=), or every course's the caller may read."""
    _check_id(user_id, "user_id")
    store, settings = store_of(request), request.app.state.settings
    if course_id is not None:
        _check_id(course_id, "course_id")
        if not can_read_profile(caller, user_id, await store.teachers(course_id)):
            raise _forbidden("This key may not read that learner's profile.")
        return await _profile(store, settings, user_id, course_id)
    # a course with a guided profile, or with writing weak points only (analysed, never practised yet)
    courses = sorted(set(await store.courses_of(user_id))
                     | set(await writing_profile_courses(store, settings.writing_profile_key, user_id)))
    readable = [c for c in courses if can_read_profile(caller, user_id, await store.teachers(c))]
    if not readable and not can_read_profile(caller, user_id, set()):
        raise _forbidden("This key may not read that learner's profiles.")
    return LearnerProfileList(user_id=user_id, data=[await _profile(store, settings, user_id, c) for c in readable])


@router.patch("/learners/{user_id}", response_model=LearnerProfile)
async def patch_learner(user_id: str, body: LearnerPatch, request: Request,
                        caller: Caller = Depends(require_service_token)):
    """A teacher of the course (or an admin) corrects skill mastery or resolves weak points."""
    _check_id(user_id, "user_id")
    store = store_of(request)
    if not can_correct_profile(caller, await store.teachers(body.course_id)):
        raise _forbidden("Only a teacher of this course (or an admin) may correct a learner's profile.")

    def change(profile: dict) -> None:
        for skill, correction in body.skills.items():
            entry = skill_entry(profile, skill)
            entry["history"] = (entry["history"] + [{"at": now_iso(), "before": entry["mastery"],
                                                     "after": correction.mastery, "by": caller.user_id or caller.key_id,
                                                     "teacher_correction": True, "note": correction.note}])[-20:]
            entry.update(mastery=correction.mastery, source="teacher", updated_at=now_iso())
            profile["skills"][skill] = entry
        for point in profile["weak_points"]:
            if point["skill"] in body.resolve_weak_points and not point.get("resolved"):
                point.update(resolved=True, resolved_at=now_iso(), resolved_by=caller.user_id or caller.key_id)

    await store.update_profile(user_id, body.course_id, change)
    return await _profile(store, request.app.state.settings, user_id, body.course_id)


@router.get("/courses/{course_id}/teachers", response_model=CourseTeachers)
async def get_teachers(course_id: str, request: Request, caller: Caller = Depends(require_service_token)):
    _check_id(course_id, "course_id")
    teachers = await store_of(request).teachers(course_id)
    if caller.role != "admin" and not (caller.role == "teacher" and caller.user_id in teachers):
        raise _forbidden("Only an admin or a teacher of this course may list its teachers.")
    return CourseTeachers(teachers=sorted(teachers))


@router.put("/courses/{course_id}/teachers", response_model=CourseTeachers)
async def put_teachers(course_id: str, body: CourseTeachers, request: Request,
                       caller: Caller = Depends(require_service_token)):
    _check_id(course_id, "course_id")
    if caller.role != "admin":
        raise _forbidden("Only an admin may set a course's teachers.")
    for teacher in body.teachers:
        _check_id(teacher, "teachers")
    return CourseTeachers(teachers=sorted(await store_of(request).set_teachers(course_id, body.teachers)))


async def load_courses_file(store: LearnerStore, settings: GuidedSettings) -> None:
    """GUIDED_COURSES_FILE: {"course-001": {"teachers": ["teacher-001"]}}, added to what Redis holds."""
    if not settings.guided_courses_file:
        return
    courses = json.loads(settings.guided_courses_file.read_text())
    for course_id, spec in courses.items():
        teachers = [_check_id(t, "teachers") for t in (spec or {}).get("teachers", [])]
        await store.set_teachers(_check_id(course_id, "course_id"), teachers, replace=False)


def create_app(settings: GuidedSettings | None = None):
    settings = settings or GuidedSettings()
    store = LearnerStore(settings.redis_url, settings.guided_session_ttl_sec)
    llm = LLMClient(settings.ai_service_url, settings.ai_service_internal_token, settings.guided_llm_model,
                    settings.guided_llm_timeout_sec) if settings.guided_llm_enabled else None

    @contextlib.asynccontextmanager
    async def lifespan(app):
        with contextlib.suppress(Exception):
            await load_courses_file(store, settings)
        yield
        await store.aclose()
        if llm is not None:
            await llm.aclose()

    async def redis_ready() -> None:
        await store.ping()

    async def llm_reachable() -> None:
        if llm is None:
            return
        response = await llm.client.get("/healthz", timeout=2)
        response.raise_for_status()

    app = create_service_app("guided", settings, readiness={"redis": redis_ready},
                             optional_readiness={"ai_service": llm_reachable}, lifespan=lifespan)
    app.state.store = store
    app.state.tutor = GuidedTutor(store, llm, settings)
    app.state.moves = app.state.metrics.counter("guided_moves_total", "Guided turns by move and phrasing",
                                                ["move", "phrased_by"])
    app.include_router(router, dependencies=[Depends(require_service_token)])

    @app.exception_handler(RedisError)
    async def redis_unavailable(_: Request, exc: RedisError) -> JSONResponse:
        log.warning("learner store unavailable", extra={"error": f"{type(exc).__name__}: {exc}"[:300]})
        return JSONResponse(error_body_for_status(503, "The learner store (Redis) is unavailable.",
                                                  code="learner_store_unavailable"), status_code=503)

    return app
