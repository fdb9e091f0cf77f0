"""Routes that belong to other internal services; ai_service passes them on (delegate.py).

Each service documents its own request and response models in its own OpenAPI schema.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ai_service.auth import gateway_caller
from ai_service.delegate import delegate
from common.auth import Caller

router = APIRouter(prefix="/v1")


# --- writing analysis (services/writing, :8004) ---------------------------------------------
@router.post("/writing/analyze", include_in_schema=False)
async def writing_analyze(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "writing")


# --- guided learning and learner profiles (services/guided, :8003) ----------------------------
@router.post("/chat/guided", include_in_schema=False)
async def chat_guided(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "guided")


@router.api_route("/learners/{user_id}", methods=["GET", "PATCH"], include_in_schema=False)
async def learners(user_id: str, request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "guided")


@router.api_route("/courses/{course_id}/teachers", methods=["GET", "PUT"], include_in_schema=False)
async def course_teachers(course_id: str, request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "guided")


# --- peer-helper practice (services/practice, :8006) -------------------------------------------
@router.get("/personas", include_in_schema=False)
async def personas(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "practice")


@router.post("/roleplay", include_in_schema=False)
async def roleplay(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "practice")


@router.get("/roleplay/sessions", include_in_schema=False)
async def roleplay_sessions(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "practice")


@router.post("/intents", include_in_schema=False)
async def intents(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "practice")


# --- platform health (services/health, :8005) -------------------------------------------------
@router.get("/health", include_in_schema=False)
async def health(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "health")


@router.get("/health/status", include_in_schema=False)  # the operators' HTML status page
async def health_status_page(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "health")


# --- feedback loop: arena, votes, leaderboard, A/B, adapter ops (services/feedback, :8007) -------
@router.post("/arena", include_in_schema=False)
async def arena(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.api_route("/feedback", methods=["GET", "POST"], include_in_schema=False)
async def feedback(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.get("/me", include_in_schema=False)  # the caller's key id, role and user id (the console's login)
async def me(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.get("/leaderboard", include_in_schema=False)
async def leaderboard(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.api_route("/ab/{mode}", methods=["GET", "PUT", "DELETE"], include_in_schema=False)
async def ab_split(mode: str, request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.post("/ab/{mode}/{action}", include_in_schema=False)  # promote | rollback
async def ab_action(mode: str, action: str, request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.get("/adapters", include_in_schema=False)
async def adapters(request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")


@router.post("/adapters/{action}", include_in_schema=False)  # load | unload (admin only, checked there)
async def adapter_action(action: str, request: Request, caller: Caller = Depends(gateway_caller)):
    return await delegate(request, caller, "feedback")
