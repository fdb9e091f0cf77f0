"""Routes that belong to other internal services; ai_service passes them on (delegate.py).

One table says which path goes to which service. Each service documents its own request and
response models in its own OpenAPI schema; path parameters are passed on as part of the path.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from ai_service.auth import gateway_caller
from ai_service.delegate import delegate
from common.auth import Caller

# (path under /v1, methods, service)
DELEGATED_ROUTES: list[tuple[str, list[str], str]] = [
    # writing analysis (services/writing, :8004)
    ("/writing/analyze", ["POST"], "writing"),
    ("/writing/anchors", ["GET", "DELETE"], "writing"),
    ("/writing/anchors/{anchor_id}", ["DELETE"], "writing"),
    # guided learning and learner profiles (services/guided, :8003)
    ("/chat/guided", ["POST"], "guided"),
    ("/learners/{user_id}", ["GET", "PATCH"], "guided"),
    ("/courses/{course_id}/teachers", ["GET", "PUT"], "guided"),
    # peer-helper practice (services/practice, :8006)
    ("/personas", ["GET"], "practice"),
    ("/roleplay", ["POST"], "practice"),
    ("/roleplay/sessions", ["GET"], "practice"),
    ("/intents", ["POST"], "practice"),
    # platform health (services/health, :8005); /health/status is the operators' HTML page
    ("/health", ["GET"], "health"),
    ("/health/status", ["GET"], "health"),
    # feedback loop (services/feedback, :8007): /me is the caller's key id, role and user id (the
    # console's login); /ab/{mode}/{action} is promote | rollback; /adapters/{action} is load | unload
    ("/arena", ["POST"], "feedback"),
    ("/feedback", ["GET", "POST"], "feedback"),
    ("/me", ["GET"], "feedback"),
    ("/leaderboard", ["GET"], "feedback"),
    ("/ab/{mode}", ["GET", "PUT", "DELETE"], "feedback"),
    ("/ab/{mode}/{action}", ["POST"], "feedback"),
    ("/adapters", ["GET"], "feedback"),
    ("/adapters/{action}", ["POST"], "feedback"),
]

router = APIRouter(prefix="/v1")


def _delegate_to(service: str):
    async def handler(request: Request, caller: Caller = Depends(gateway_caller)):
        return await delegate(request, caller, service)

    handler.__name__ = f"delegate_to_{service}"
    return handler


for _path, _methods, _service in DELEGATED_ROUTES:
    router.add_api_route(_path, _delegate_to(_service), methods=_methods, include_in_schema=False)
