"""The feedback service (port 8007): the loop from users' preferences back to training.

Routes (all need FEEDBACK_API_TOKEN; ai_service forwards them from the gateway):
  POST /v1/arena                one prompt, two hidden candidates (A/B order random)
  POST /v1/feedback             a vote (a, b, tie, both_bad) or thumbs (up, down); idempotent
  GET  /v1/feedback             recent votes (teachers, admins): comments, ?mode=&with_comment=
  GET  /v1/leaderboard          Bradley-Terry ratings with 95% intervals per mode (?mode=)
  GET|PUT|DELETE /v1/ab/{mode}  the online A/B split (PUT/DELETE admin)
  POST /v1/ab/{mode}/promote    candidate wins: split ends, control unloaded (admin)
  POST /v1/ab/{mode}/rollback   candidate loses (or, without a split, the newest version): unloaded, retired (admin)
  GET  /v1/adapters             llm_server's adapters (staff); POST /v1/adapters/load|unload (admin)
Metrics: tutorstack_feedback_votes_total{mode,kind,vote}, tutorstack_arena_rounds_total{mode},
tutorstack_ab_percent{mode,control,candidate}.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import shutil
import time
from contextlib import asynccontextmanager

import redis.asyncio as aioredis
from fastapi import APIRouter, Depends, FastAPI, Query, Request
from prometheus_client import Counter, Gauge
from starlette.concurrency import run_in_threadpool

from common.ab import ab_key
from common.adapters import versions_of
from common.app import create_service_app
from common.auth import SERVICE_TOKEN_HEADER, Caller, require_service_token, service_headers
from common.errors import OpenAIError
from common.http import make_client
from common.logging import get_logger
from services.feedback import ab
from services.feedback.bt import comparisons_from_votes, fit
from services.feedback.schemas import (ABActionResult, ABSplit, ABSplitIn, AdapterAction, AdapterActionResult,
                                       AdapterList, ArenaAnswer, ArenaRequest, ArenaResponse, FeedbackList,
                                       FeedbackRequest, FeedbackResponse, Leaderboard, Me, ModeBoard, RatingOut,
                                       VoteRecord)
from services.feedback.settings import FeedbackSettings
from services.feedback.store import FeedbackStore

log = get_logger("feedback")
router = APIRouter(prefix="/v1")
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
BASE = "base"



def display(model: str) -> str:
    return model or BASE


def loaded_versions(family: str, names) -> list[str]:
    """Loaded versions of a family, oldest first."""
    return [str(version) for version in versions_of(names, family)]


def require_admin(caller: Caller) -> None:
    if caller.role != "admin":
        raise OpenAIError(403, "This operation needs an admin key.", code="forbidden")


def require_staff(caller: Caller) -> None:
    if not caller.is_staff:
        raise OpenAIError(403, "This view needs a teacher or admin key.", code="forbidden")


def check_name(value: str, param: str) -> str:
    if value and not NAME.match(value):
        raise OpenAIError(400, f"invalid {param}: {value!r}", param=param, code="invalid_request")
    return value


class Feedback:
    def __init__(self, settings: FeedbackSettings, registry):
        self.settings = settings
        self.votes_total = Counter("tutorstack_feedback_votes_total", "Recorded votes", ["mode", "kind", "vote"],
                                   registry=registry)
        self.arena_total = Counter("tutorstack_arena_rounds_total", "Arena rounds served", ["mode"],
                                   registry=registry)
        self.ab_percent = Gauge("tutorstack_ab_percent", "Active A/B split: share of users on the candidate",
                                ["mode", "control", "candidate"], registry=registry)
        self.store = FeedbackStore(settings.db_path)
        self.redis = aioredis.from_url(settings.redis_url, decode_responses=True)
        self.ai = make_client(settings.ai_service_url, settings.arena_timeout_sec)
        self.llm = make_client(settings.llm_server_url, 300.0)

    async def aclose(self) -> None:
        await self.ai.aclose()
        await self.llm.aclose()
        await self.redis.aclose()
        self.store.close()

    # --- llm_server control API ---------------------------------------------------------------
    async def llm_call(self, method: str, path: str, payload: dict | None = None) -> dict:
        headers = {SERVICE_TOKEN_HEADER: self.settings.llm_server_token} \
            if self.settings.llm_server_token else {}
        try:
            response = await self.llm.request(method, path, json=payload, headers=headers)
        except Exception as exc:
            raise OpenAIError(503, f"llm_server control API unreachable: {type(exc).__name__}",
                              code="llm_server_unavailable") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                raise OpenAIError(response.status_code, error.get("message", "llm_server error"),
                                  code=error.get("code"), param=error.get("param"))
            except (ValueError, KeyError, TypeError):
                raise OpenAIError(502, f"llm_server {path}: {response.status_code}", code="llm_server_error")
        return response.json()

    async def loaded(self) -> set[str]:
        listing = await self.llm_call("GET", "/v1/adapters")
        return {row["name"] for row in listing.get("data", []) if row.get("loaded")}

    # --- A/B ----------------------------------------------------------------------------------
    async def split(self, mode: str) -> dict | None:
        raw = await self.redis.get(ab_key(mode, self.settings.ab_key_prefix))
        return json.loads(raw) if raw else None

    async def end_split(self, mode: str, split: dict | None) -> None:
        await self.redis.delete(ab_key(mode, self.settings.ab_key_prefix))
        if split:
            try:
                self.ab_percent.remove(mode, display(split["control"]), display(split["candidate"]))
            except KeyError:
                pass

    def retire(self, name: str) -> str | None:
        root = self.settings.resolved_adapters_dir
        if not name or not (root / name).is_dir():
            return None
        destination = root.parent / f"{root.name}-retired" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(root / name), str(destination))
        return str(destination)

    async def unload(self, name: str) -> bool:
        if not name:
            return False
        try:
            await self.llm_call("POST", "/v1/adapters/unload", {"name": name})
            return True
        except OpenAIError as exc:
            if exc.status == 404:
                return False
            raise

    # --- arena --------------------------------------------------------------------------------
    async def candidates(self, mode: str, family: str) -> tuple[str, str]:
        split = await self.split(mode)
        if split:
            return split["control"], split["candidate"]
        loaded = loaded_versions(family, await self.loaded())
        if not loaded:
            raise OpenAIError(409, f"no loaded version of adapter family {family!r} to compare "
                                   "(publish one: python -m training publish)", code="no_candidates")
        return (loaded[-2], loaded[-1]) if len(loaded) > 1 else ("", loaded[-1])

    async def answer(self, model: str, messages: list[dict], max_tokens: int, caller: Caller) -> str:
        headers = {**service_headers(self.settings.ai_service_internal_token, caller),
                   "x-data-classification": "private"}
        body = {"model": model, "messages": messages, "max_tokens": max_tokens, "temperature": 0.7}
        try:
            response = await self.ai.post("/v1/chat/completions", json=body, headers=headers)
        except Exception as exc:
            raise OpenAIError(503, f"ai_service unreachable: {type(exc).__name__}", code="ai_service_unavailable")
        if response.status_code >= 400:
            raise OpenAIError(502, f"candidate {display(model)} failed ({response.status_code}): "
                                   f"{response.text[:300]}", code="candidate_failed")
        return response.json()["choices"][0]["message"].get("content") or ""


def _feedback(request: Request) -> Feedback:
    return request.app.state.feedback


def _prompt_messages(body: ArenaRequest) -> tuple[str, list[dict]]:
    if body.messages:
        users = [m for m in body.messages if m.get("role") == "user"]
        if not users:
            raise OpenAIError(400, "messages need a user message", param="messages", code="invalid_request")
        content = users[-1].get("content")
        return (content if isinstance(content, str) else json.dumps(content)), body.messages
    if body.prompt and body.prompt.strip():
        return body.prompt, [{"role": "user", "content": body.prompt}]
    raise OpenAIError(400, "give a prompt or messages", param="prompt", code="invalid_request")


@router.post("/arena", response_model=ArenaResponse)
async def arena(body: ArenaRequest, request: Request, caller: Caller = Depends(require_service_token)):
    fb = _feedback(request)
    family = check_name(body.family or body.mode, "family")
    check_name(body.mode, "mode")
    prompt, messages = _prompt_messages(body)
    if body.models:
        require_admin(caller)
        if len(body.models) != 2 or body.models[0] == body.models[1]:
            raise OpenAIError(400, "models: two different served names", param="models", code="invalid_request")
        pair = tuple(check_name(m, "models") for m in body.models)
    else:
        pair = await fb.candidates(body.mode, family)
    model_a, model_b = random.sample(pair, 2)  # which is which: random and hidden
    max_tokens = body.max_tokens or fb.settings.arena_max_tokens
    answer_a, answer_b = await asyncio.gather(fb.answer(model_a, messages, max_tokens, caller),
                                              fb.answer(model_b, messages, max_tokens, caller))
    row = await run_in_threadpool(fb.store.add_arena, mode=body.mode, family=family, prompt=prompt,
                                  model_a=display(model_a), model_b=display(model_b), answer_a=answer_a,
                                  answer_b=answer_b, key_id=caller.key_id, user_id=caller.user_id)
    fb.arena_total.labels(body.mode).inc()
    log.info("arena round", extra={"arena_id": row["id"], "mode": body.mode})
    return ArenaResponse(id=row["id"], mode=body.mode, prompt=prompt, a=ArenaAnswer(content=answer_a),
                         b=ArenaAnswer(content=answer_b))


@router.post("/feedback", response_model=FeedbackResponse)
async def feedback(body: FeedbackRequest, request: Request, caller: Caller = Depends(require_service_token)):
    fb = _feedback(request)
    if body.vote in ("up", "down"):
        if not body.response_id:
            raise OpenAIError(400, "thumbs need the chat answer's response_id", param="response_id",
                              code="invalid_request")
        vote = {"kind": "thumbs", "vote": body.vote, "response_id": body.response_id, "mode": body.mode,
                "family": body.mode, "prompt": body.prompt, "answer_a": body.answer, "model_a": body.model,
                "idempotency_key": f"{caller.key_id}:thumbs:{body.response_id}"}
    else:
        if not body.arena_id:
            raise OpenAIError(400, "an arena vote needs arena_id", param="arena_id", code="invalid_request")
        round_ = await run_in_threadpool(fb.store.arena, body.arena_id)
        if round_ is None or round_["key_id"] != caller.key_id:
            raise OpenAIError(404, f"no arena round {body.arena_id!r} for this key", param="arena_id",
                              code="arena_not_found")
        vote = {"kind": "arena", "vote": body.vote, "arena_id": round_["id"],
                **{k: round_[k] for k in ("mode", "family", "prompt", "answer_a", "answer_b", "model_a", "model_b")},
                "idempotency_key": f"{caller.key_id}:arena:{round_['id']}"}
    vote.update(comment=body.comment, key_id=caller.key_id, user_id=caller.user_id)
    stored, created = await run_in_threadpool(fb.store.add_vote, vote)
    if created:
        fb.votes_total.labels(stored["mode"] or "", stored["kind"], stored["vote"]).inc()
    return FeedbackResponse(vote=VoteRecord(**stored), duplicate=not created)


@router.get("/feedback", response_model=FeedbackList)
async def list_feedback(request: Request, mode: str | None = None, with_comment: bool = False,
                        limit: int = Query(100, ge=1, le=1000), caller: Caller = Depends(require_service_token)):
    require_staff(caller)
    rows = await run_in_threadpool(_feedback(request).store.votes, mode=mode, with_comment=with_comment,
                                   limit=limit, newest_first=True)
    return FeedbackList(data=[VoteRecord(**r) for r in rows])


def build_leaderboard(votes: list[dict], mode: str | None = None) -> Leaderboard:
    by_mode: dict[str, list[dict]] = {}
    for vote in votes:
        if vote["kind"] == "arena" and (mode is None or vote["mode"] == mode):
            by_mode.setdefault(vote["mode"], []).append(vote)
    boards = []
    for name in sorted(by_mode):
        ratings = fit(comparisons_from_votes(by_mode[name]))
        boards.append(ModeBoard(mode=name, votes=len(by_mode[name]), ratings=[
            RatingOut(model=r.model, rating=r.rating, ci_low=r.ci_low, ci_high=r.ci_high, wins=r.wins,
                      games=r.games) for r in ratings]))
    return Leaderboard(modes=boards)


@router.get("/me", response_model=Me)
async def me(caller: Caller = Depends(require_service_token)) -> dict:
    """Who the gateway says the caller is (the console uses it to log in and pick what to show)."""
    return {"key_id": caller.key_id, "role": caller.role, "user_id": caller.user_id,
            "key_classification": caller.key_classification}


@router.get("/leaderboard", response_model=Leaderboard)
async def leaderboard(request: Request, mode: str | None = None, caller: Caller = Depends(require_service_token)):
    votes = await run_in_threadpool(_feedback(request).store.votes, kind="arena", mode=mode)
    return await run_in_threadpool(build_leaderboard, votes, mode)


def _split_out(mode: str, split: dict | None, settings: FeedbackSettings) -> ABSplit:
    key = ab_key(mode, settings.ab_key_prefix)
    if not split:
        return ABSplit(mode=mode, active=False, redis_key=key)
    return ABSplit(mode=mode, active=True, redis_key=key, **split)


@router.get("/ab/{mode}", response_model=ABSplit)
async def get_split(mode: str, request: Request, caller: Caller = Depends(require_service_token)):
    fb = _feedback(request)
    return _split_out(mode, await fb.split(check_name(mode, "mode")), fb.settings)


@router.put("/ab/{mode}", response_model=ABSplit)
async def put_split(mode: str, body: ABSplitIn, request: Request, caller: Caller = Depends(require_service_token)):
    require_admin(caller)
    fb = _feedback(request)
    check_name(mode, "mode")
    family = check_name(body.family or mode, "family")
    loaded = await fb.loaded()
    candidate = check_name(body.candidate, "candidate")
    if candidate and candidate not in loaded:
        raise OpenAIError(409, f"candidate {candidate!r} is not loaded", param="candidate", code="adapter_not_loaded")
    if body.control is None:
        others = [v for v in loaded_versions(family, loaded) if v != candidate]
        control = others[-1] if others else ""
    else:
        control = check_name(body.control, "control")
        if control and control not in loaded:
            raise OpenAIError(409, f"control {control!r} is not loaded", param="control", code="adapter_not_loaded")
    previous = await fb.split(mode)
    try:
        split = ab.make_split(family, control, candidate, body.percent,
                              started_at=previous["started_at"] if previous else None)
    except ValueError as exc:
        raise OpenAIError(400, str(exc), code="invalid_request")
    if previous:
        await fb.end_split(mode, previous)
    await fb.redis.set(ab_key(mode, fb.settings.ab_key_prefix), ab.dumps(split))
    fb.ab_percent.labels(mode, display(control), display(candidate)).set(body.percent)
    log.info("ab split set", extra={"mode": mode, **split})
    return _split_out(mode, split, fb.settings)


@router.delete("/ab/{mode}", response_model=ABSplit)
async def delete_split(mode: str, request: Request, caller: Caller = Depends(require_service_token)):
    require_admin(caller)
    fb = _feedback(request)
    await fb.end_split(mode, await fb.split(check_name(mode, "mode")))
    return _split_out(mode, None, fb.settings)


@router.post("/ab/{mode}/{action}", response_model=ABActionResult)
async def ab_action(mode: str, action: str, request: Request, caller: Caller = Depends(require_service_token)):
    require_admin(caller)
    fb = _feedback(request)
    check_name(mode, "mode")
    split = await fb.split(mode)
    if action == "promote":
        if not split:
            raise OpenAIError(409, f"mode {mode!r} has no A/B split to promote", code="no_split")
        await fb.end_split(mode, split)
        unloaded = await fb.unload(split["control"])  # kept on disk: a later rollback can load it again
        log.info("ab promoted", extra={"mode": mode, "winner": split["candidate"]})
        return {"mode": mode, "action": "promote", "now_serving": display(split["candidate"]),
                "unloaded": split["control"] if unloaded else None}
    if action == "rollback":
        if split:
            await fb.end_split(mode, split)
            loser = split["candidate"]
        else:
            family = mode
            loaded = loaded_versions(family, await fb.loaded())
            if not loaded:
                raise OpenAIError(409, f"no loaded version of {family!r} to roll back", code="nothing_to_roll_back")
            loser = loaded[-1]
        unloaded = await fb.unload(loser)
        moved = await run_in_threadpool(fb.retire, loser)
        remaining = loaded_versions(split["family"] if split else mode, await fb.loaded())
        log.info("rolled back", extra={"mode": mode, "loser": loser})
        return {"mode": mode, "action": "rollback", "removed": display(loser), "unloaded": unloaded,
                "moved_to": moved, "now_serving": remaining[-1] if remaining else BASE}
    raise OpenAIError(404, f"unknown action {action!r} (promote, rollback)", code="not_found")


@router.get("/adapters", response_model=None,  # llm_server's listing passed on as it is (documented, not filtered)
            responses={200: {"model": AdapterList, "description": "llm_server's adapters, on disk and loaded"}})
async def adapters(request: Request, caller: Caller = Depends(require_service_token)):
    require_staff(caller)
    return await _feedback(request).llm_call("GET", "/v1/adapters")


@router.post("/adapters/{action}", response_model=None,  # llm_server's answer passed on as it is
             responses={200: {"model": AdapterActionResult, "description": "llm_server's load or unload result"}})
async def adapter_action(action: str, body: AdapterAction, request: Request,
                         caller: Caller = Depends(require_service_token)):
    require_admin(caller)
    if action not in ("load", "unload"):
        raise OpenAIError(404, f"unknown action {action!r} (load, unload)", code="not_found")
    payload = {"name": check_name(body.name, "name")}
    if action == "load" and body.path:
        payload["path"] = body.path
    return await _feedback(request).llm_call("POST", f"/v1/adapters/{action}", payload)


def create_app(settings: FeedbackSettings | None = None) -> FastAPI:
    settings = settings or FeedbackSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        fb: Feedback = app.state.feedback
        try:  # the splits outlive a restart (Redis): show them in the metrics again
            async for key in fb.redis.scan_iter(match=f"{settings.ab_key_prefix}*"):
                split = json.loads(await fb.redis.get(key) or "null")
                if split:
                    fb.ab_percent.labels(key[len(settings.ab_key_prefix):], display(split["control"]),
                                         display(split["candidate"])).set(split["percent"])
        except Exception as exc:  # Redis down at start: the splits show again on their next change
            log.warning("could not read the A/B splits: %s", exc)
        yield
        await fb.aclose()

    async def store_ready():
        await run_in_threadpool(app.state.feedback.store.ping)

    async def redis_ready():
        await app.state.feedback.redis.ping()

    app = create_service_app("feedback", settings, lifespan=lifespan, readiness={"store": store_ready},
                             optional_readiness={"redis": redis_ready})
    app.state.feedback = Feedback(settings, app.state.metrics.registry)
    app.include_router(router)
    return app
