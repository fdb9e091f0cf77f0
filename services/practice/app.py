"""The practice service (port 8006): personas, role-play with two reply engines, intents, coaching.

Routes (all need PRACTICE_API_TOKEN; ai_service forwards them from the gateway):
  GET  /v1/personas                  the personas (PRACTICE_PERSONAS_DIR)
  POST /v1/roleplay                  the persona's next line + coaching feedback (JSON or SSE)
  GET  /v1/roleplay/sessions         a trainee's sessions and scores (?user_id=)
  POST /v1/intents                   batch intent classification with calibrated probabilities
"""

from __future__ import annotations

import json
import time
import uuid
from contextlib import asynccontextmanager

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.responses import StreamingResponse

from common.app import create_service_app
from common.auth import Caller, require_service_token, service_headers
from common.errors import OpenAIError
from common.http import make_client
from common.logging import get_logger
from services.practice.coaching import TurnIntent, session_feedback, turn_feedback
from services.practice.engines import EngineReply, LlmEngine, LlmUnavailable, RulesEngine
from services.practice.intents import LABELS, Embedder, IntentClassifier
from services.practice.personas import Persona, load_personas, summary
from services.practice.policy import choose_engine
from services.practice.schemas import (
    IntentItem,
    IntentRequest,
    IntentResponse,
    IntentResult,
    PersonaList,
    RoleplayRequest,
    RoleplayResponse,
    SessionList,
)
from services.practice.settings import PracticeSettings
from services.practice.store import PracticeStore

log = get_logger("practice")
router = APIRouter(prefix="/v1", dependencies=[Depends(require_service_token)])


class Practice:
    """Everything a request needs, built once per app."""

    def __init__(self, settings: PracticeSettings, metrics):
        self.settings = settings
        self.personas: dict[str, Persona] = load_personas(settings.personas_dir)
        self.classifier = IntentClassifier(settings.intent_model_path, Embedder(threads=settings.torch_threads))
        self.store = PracticeStore.from_url(settings.redis_url, override_key=settings.engine_override_key,
                                            per_user=settings.sessions_per_user, ttl_days=settings.session_ttl_days)
        self.ai_client = make_client(settings.ai_service_url, settings.llm_budget_sec + 5)
        self.rules = RulesEngine()
        self.llm = LlmEngine(self.ai_client, settings.ai_service_internal_token,
                             adapter_family=settings.llm_adapter_family, max_tokens=settings.llm_max_tokens,
                             budget_sec=settings.llm_budget_sec, temperature=settings.llm_temperature,
                             max_attempts=settings.llm_attempts)
        self.replies = metrics.counter("practice_replies_total", "Role-play replies by the engine that served them",
                                       ["service", "engine"])
        self.fallbacks = metrics.counter("practice_fallbacks_total", "llm chosen, rules answered, by reason",
                                         ["service", "reason"])
        self.reply_seconds = metrics.histogram("practice_reply_seconds", "Reply engine latency", ["service", "engine"])
        self.intents = metrics.counter("practice_intents_total", "Utterances classified", ["service"])

    async def classify(self, texts: list[str], contexts: list[str | None]):
        self.intents.labels("practice").inc(len(texts))
        return await run_in_threadpool(self.classifier.classify, texts, contexts)

    async def aclose(self) -> None:
        await self.ai_client.aclose()
        await self.store.aclose()


def practice(request: Request) -> Practice:
    return request.app.state.practice


# --- personas ----------------------------------------------------------------------------------
@router.get("/personas", response_model=PersonaList)
async def list_personas(p: Practice = Depends(practice)) -> PersonaList:
    return PersonaList(data=[summary(persona) for persona in p.personas.values()])


# --- role-play ---------------------------------------------------------------------------------
def _validate(body: RoleplayRequest, p: Practice) -> Persona:
    persona = p.personas.get(body.persona)
    if persona is None:
        valid = ", ".join(sorted(p.personas))
        raise OpenAIError(404, f"Unknown persona {body.persona!r}; valid personas: {valid}.", code="persona_not_found",
                          param="persona")
    if not body.messages:
        raise OpenAIError(400, "messages is empty: send at least the trainee's first turn.", code="empty_messages",
                          param="messages")
    if len(body.messages) > p.settings.max_turns:
        raise OpenAIError(413, f"Too many turns: {len(body.messages)} messages, at most {p.settings.max_turns} per "
                               "session. Start a new session.", code="too_many_turns", param="messages")
    for i, message in enumerate(body.messages):
        if len(message.content) > p.settings.max_message_chars:
            raise OpenAIError(413, f"messages[{i}] is longer than {p.settings.max_message_chars} characters.",
                              code="message_too_long", param=f"messages.{i}.content")
    if body.messages[-1].role != "user" or not body.messages[-1].content.strip():
        raise OpenAIError(400, "The last message must be the trainee's (role `user`) and not empty.",
                          code="last_message_not_user", param="messages")
    return persona


def _trainee(caller: Caller, user_id: str | None) -> str:
    """The trainee a request is about: the key's own user unless staff (or a key bound to no user)."""
    if caller.user_id and not caller.is_staff:
        if user_id and user_id != caller.user_id:
            raise OpenAIError(403, "A student key can only act for its own user_id.", code="user_mismatch",
                              param="user_id")
        return caller.user_id
    trainee = user_id or caller.user_id
    if not trainee:
        raise OpenAIError(400, "user_id is required (this API key carries none).", code="user_id_required",
                          param="user_id")
    return trainee


def _turns(persona: Persona, messages) -> tuple[list[str], list[str | None]]:
    texts, previous, last_persona_line = [], [], persona.opening
    for message in messages:
        if message.role == "assistant":
            last_persona_line = message.content
        else:
            texts.append(message.content)
            previous.append(last_persona_line)
    return texts, previous


async def _reply(p: Practice, persona: Persona, body: RoleplayRequest, engine: str, caller: Caller,
                 session_id: str) -> EngineReply:
    messages = [m.model_dump() for m in body.messages]
    if engine == "llm":
        headers = service_headers(p.settings.ai_service_internal_token, caller)
        try:
            return await p.llm.reply(persona, messages, caller_headers=headers, session_id=session_id)
        except LlmUnavailable as exc:
            p.fallbacks.labels("practice", exc.reason.split(" (")[0]).inc()
            log.warning("llm engine fell back to rules", extra={"reason": exc.reason, "persona": persona.id})
            reply = await p.rules.reply(persona, messages)
            reply.fallback_reason = exc.reason
            return reply
    return await p.rules.reply(persona, messages)


@router.post("/roleplay", response_model=RoleplayResponse)
async def roleplay(body: RoleplayRequest, caller: Caller = Depends(require_service_token),
                   p: Practice = Depends(practice)):
    started = time.perf_counter()
    persona = _validate(body, p)
    user_id = _trainee(caller, body.user_id)
    session = None
    if body.session_id:
        session = await p.store.get_session(body.session_id)
        if session and (session["user_id"] != user_id or session["persona"] != persona.id):
            raise OpenAIError(400, "session_id belongs to another trainee or persona.", code="session_mismatch",
                              param="session_id")
    session_id = body.session_id or uuid.uuid4().hex
    choice = choose_engine(runtime_override=await p.store.engine_override(), requested=body.engine,
                           configured=p.settings.engine, user_id=user_id, salt=p.settings.ab_salt,
                           llm_share=p.settings.ab_llm_share)
    texts, previous = _turns(persona, body.messages)
    predictions = await p.classify(texts, previous)
    turns = [TurnIntent(i, t, pr.label, pr.main, pr.confidence, prev)
             for i, (t, pr, prev) in enumerate(zip(texts, predictions, previous))]
    reply = await _reply(p, persona, body, choice.engine, caller, session_id)
    p.replies.labels("practice", reply.engine).inc()
    p.reply_seconds.labels("practice", reply.engine).observe(reply.latency_ms / 1000)
    scores = session_feedback(turns, persona.problem, persona.language)
    now = time.time()
    session = session or {"session_id": session_id, "user_id": user_id, "persona": persona.id, "created_at": now,
                          "engines": {}, "fallbacks": 0}
    session.update(updated_at=now, scores=scores,
                   turns=[{"index": t.index, "text": t.text, "label": t.label, "main": t.main,
                           "confidence": round(t.confidence, 4)} for t in turns])
    session["engines"][reply.engine] = session["engines"].get(reply.engine, 0) + 1
    session["fallbacks"] += 1 if reply.fallback_reason else 0
    await p.store.save_session(session)
    response = RoleplayResponse(
        id=f"rp-{uuid.uuid4().hex[:16]}", session_id=session_id, user_id=user_id, persona=persona.id,
        reply={"content": reply.text}, engine=reply.engine, engine_assignment=choice.assignment,
        engine_chosen=choice.engine, fallback_reason=reply.fallback_reason, model=reply.model,
        latency_ms=round((time.perf_counter() - started) * 1000, 1), classifier=p.classifier.version,
        feedback={"turn": turn_feedback(turns[-1], persona.language), "session": scores})
    log.info("roleplay reply", extra={"persona": persona.id, "engine": reply.engine, "assignment": choice.assignment,
                                      "fallback_reason": reply.fallback_reason, "session_id": session_id})
    headers = {"x-tutorstack-practice-engine": reply.engine}
    if not body.stream:
        from fastapi.responses import JSONResponse

        return JSONResponse(response.model_dump(mode="json"), headers=headers)
    return StreamingResponse(_sse(response), media_type="text/event-stream",
                             headers={**headers, "cache-control": "no-cache"})


async def _sse(response: RoleplayResponse):
    """The reply is checked in full before it is sent (an out-of-character reply must not leak), so the
    stream delivers the checked reply in word chunks, then the full result with feedback, then [DONE]."""
    words = response.reply.content.split(" ")
    for i, word in enumerate(words):
        delta = word if i == len(words) - 1 else word + " "
        yield f"data: {json.dumps({'object': 'roleplay.chunk', 'delta': delta}, ensure_ascii=False)}\n\n"
    yield f"data: {json.dumps(response.model_dump(mode='json'), ensure_ascii=False)}\n\n"
    yield "data: [DONE]\n\n"


@router.get("/roleplay/sessions", response_model=SessionList)
async def roleplay_sessions(user_id: str | None = Query(default=None), limit: int = Query(default=50, ge=1, le=200),
                            caller: Caller = Depends(require_service_token), p: Practice = Depends(practice)):
    trainee = _trainee(caller, user_id)
    return SessionList(user_id=trainee, data=await p.store.list_sessions(trainee, limit))


# --- intents -------------------------------------------------------------------------------------
@router.post("/intents", response_model=IntentResponse)
async def intents(body: IntentRequest, p: Practice = Depends(practice)) -> IntentResponse:
    if not body.utterances:
        raise OpenAIError(400, "utterances is empty.", code="empty_utterances", param="utterances")
    if len(body.utterances) > p.settings.max_batch:
        raise OpenAIError(413, f"At most {p.settings.max_batch} utterances per request.", code="batch_too_large",
                          param="utterances")
    items = [u if isinstance(u, IntentItem) else IntentItem(text=u) for u in body.utterances]
    for i, item in enumerate(items):
        if not item.text.strip():
            raise OpenAIError(400, f"utterances[{i}] is empty.", code="empty_utterance", param=f"utterances.{i}")
        if len(item.text) > p.settings.max_message_chars:
            raise OpenAIError(413, f"utterances[{i}] is longer than {p.settings.max_message_chars} characters.",
                              code="utterance_too_long", param=f"utterances.{i}")
    predictions = await p.classify([i.text for i in items], [i.previous for i in items])
    return IntentResponse(model=p.classifier.version, labels=list(LABELS), data=[
        IntentResult(text=item.text, label=pr.label, main=pr.main, confidence=round(pr.confidence, 4),
                     probabilities=pr.probabilities, main_probabilities=pr.main_probabilities)
        for item, pr in zip(items, predictions)])


def create_app(settings: PracticeSettings | None = None) -> FastAPI:
    settings = settings or PracticeSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await run_in_threadpool(app.state.practice.classifier.warm_up)
        yield
        await app.state.practice.aclose()

    async def redis_ready():
        await app.state.practice.store.ping()

    async def classifier_ready():
        app.state.practice.classifier.model  # loaded at construction

    async def ai_service_ready():
        response = await app.state.practice.ai_client.get("/healthz", timeout=2.0)
        response.raise_for_status()

    app = create_service_app("practice", settings, lifespan=lifespan,
                             readiness={"redis": redis_ready, "classifier": classifier_ready},
                             optional_readiness={"ai_service": ai_service_ready})
    app.state.practice = Practice(settings, app.state.metrics)
    app.include_router(router)
    return app
